"""Build tiny Phi-family model folders: real config and tokenizer, random weights."""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .bpe import cl100k_tokenizer_files, o200k_tokenizer_json
from .safetensors_io import TORCH_DTYPE_TO_SAFETENSORS, write_safetensors
from .specs import DROP, TinyModelSpec, get_spec
from .weights import EXTREME_WEIGHT_INDEX, TensorSpec, random_tensor, tensor_layout

FILES_DIR = Path(__file__).resolve().parent / "files"
SAFETENSORS_INDEX = "model.safetensors.index.json"
# Microsoft's MIT licence text, shipped in every model folder as the real
# Phi repositories do.
LICENSE_FILE = "phi-2/LICENSE"
FLOAT16_MAX = 65504.0


def build_tiny_model(
    name: str,
    out_dir: Path,
    *,
    seed: int = 0,
    hidden_size: int | None = None,
    intermediate_size: int | None = None,
    num_layers: int = 2,
    dtype: str = "bfloat16",
    extreme_weight: float | None = None,
    config_overrides: dict | None = None,
) -> Path:
    """Write a complete tiny model folder for ``name`` at ``out_dir`` and return it.

    The folder contains the shrunk real config, the real (or rebuilt)
    tokenizer files, generation config, LICENSE, a README.md model card and
    random weights in ``dtype``. Output is byte-identical for the same
    arguments. Attention heads follow ``hidden_size // head_dim``.
    ``extreme_weight`` is planted at element [0, 0] of
    ``spec.extreme_weight_tensor``. ``config_overrides`` is merged into
    config.json last, and the weights follow the merged config.

    Raises FileExistsError when ``out_dir`` exists and is not empty, so a
    folder is never a mix of two builds, and ValueError on an inconsistent shape.
    """
    spec = get_spec(name)
    if dtype not in TORCH_DTYPE_TO_SAFETENSORS:
        raise ValueError(f"unsupported dtype {dtype!r}; use one of {sorted(TORCH_DTYPE_TO_SAFETENSORS)}")
    if dtype == "float16" and extreme_weight is not None and abs(extreme_weight) > FLOAT16_MAX:
        raise ValueError(f"extreme_weight {extreme_weight} is beyond the float16 range; use bfloat16 or float32")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty; remove it or choose another folder")

    config = shrink_config(
        spec,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_layers=num_layers,
        dtype=dtype,
        overrides=config_overrides,
    )
    layout = tensor_layout(spec.architecture, config)
    check_widths(config, layout)
    if extreme_weight is not None and spec.extreme_weight_tensor not in {tensor.name for tensor in layout}:
        raise ValueError(f"{name}: tensor {spec.extreme_weight_tensor} for extreme_weight is not in the model")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Build next to the target and rename at the end, so an interrupted build
    # leaves no half-written model folder behind.
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        staging.chmod(0o755)
        _write_json(staging / "config.json", config)
        _write_tokenizer_files(spec, staging)
        shutil.copyfile(FILES_DIR / LICENSE_FILE, staging / "LICENSE")
        parameters = _write_weights(spec, config, layout, staging, seed, dtype, extreme_weight)
        card = model_card(spec, config, seed=seed, dtype=dtype, parameters=parameters)
        (staging / "README.md").write_text(card, encoding="utf-8")
        if out_dir.exists():
            out_dir.rmdir()
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def read_source_json(relative_path: str) -> dict:
    """Load one of the packaged source JSON files."""
    return json.loads((FILES_DIR / relative_path).read_text(encoding="utf-8"))


def shrink_config(
    spec: TinyModelSpec,
    *,
    hidden_size: int | None,
    intermediate_size: int | None,
    num_layers: int,
    dtype: str,
    overrides: dict | None,
) -> dict:
    """Return the real config of ``spec`` shrunk to the tiny shape.

    Keeps every other real key (RoPE settings, token ids, sliding window,
    context lengths). LongRoPE/su factor lists are resampled to the shrunk
    rotary dimension / 2 (see ``resample_factors``).
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be at least 1, got {num_layers}")
    config = copy.deepcopy(read_source_json(spec.config_file))
    for key, value in spec.config_edits.items():
        if value is DROP:
            config.pop(key, None)
        else:
            config[key] = value

    hidden = spec.hidden_size if hidden_size is None else hidden_size
    if hidden <= 0 or hidden % spec.head_dim:
        raise ValueError(f"hidden_size {hidden} is not a positive multiple of head_dim {spec.head_dim} for {spec.name}")
    if intermediate_size is None:
        if spec.intermediate_per_hidden is not None:
            intermediate_size = spec.intermediate_per_hidden * hidden
        else:
            intermediate_size = spec.intermediate_size
    heads = hidden // spec.head_dim
    config["hidden_size"] = hidden
    config["intermediate_size"] = intermediate_size
    config["num_hidden_layers"] = num_layers
    config["num_attention_heads"] = heads
    config["num_key_value_heads"] = key_value_heads(heads, spec.heads_per_kv_head)
    if "head_dim" in config:
        config["head_dim"] = spec.head_dim
    if spec.num_local_experts is not None:
        config["num_local_experts"] = spec.num_local_experts
        config["num_experts_per_tok"] = min(config.get("num_experts_per_tok", 2), spec.num_local_experts)
    config["torch_dtype"] = dtype
    if "dtype" in config:
        config["dtype"] = dtype

    overrides = dict(overrides or {})
    config.update(overrides)
    if "rope_scaling" not in overrides:
        _resize_rope_factors(config)
    return config


def key_value_heads(heads: int, heads_per_kv_head: int) -> int:
    """Return the largest key/value head count, at most heads / ratio, that divides ``heads``."""
    count = max(1, heads // heads_per_kv_head)
    while heads % count:
        count -= 1
    return count


def resample_factors(values: list[float], count: int) -> list[float]:
    """Resample a per-frequency RoPE factor list to ``count`` entries.

    Linear interpolation over the frequency index: the first and last values
    stay the real ones, and the curve keeps its shape across the spectrum.
    A list that already has ``count`` entries is returned unchanged.
    """
    if len(values) == count:
        return list(values)
    positions = np.linspace(0.0, len(values) - 1, count)
    resampled = np.interp(positions, np.arange(len(values)), np.asarray(values, dtype=np.float64))
    return [float(value) for value in resampled]


def rotary_dims(config: dict) -> int:
    """Return the number of rotary dimensions per head, as transformers computes it."""
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    factor = config.get("partial_rotary_factor", 1.0)
    return int(head_dim * factor)


def _resize_rope_factors(config: dict) -> None:
    rope_scaling = config.get("rope_scaling")
    if not isinstance(rope_scaling, dict):
        return
    count = rotary_dims(config) // 2
    for key in ("long_factor", "short_factor"):
        if key in rope_scaling:
            rope_scaling[key] = resample_factors(rope_scaling[key], count)


def check_widths(config: dict, layout: list[TensorSpec]) -> None:
    """Reject a vocabulary size equal to a layer width.

    ONNX Runtime GenAI's builder (0.18.0) treats any linear layer whose output
    width equals vocab_size as the LM head, so such a model gets wrong logits.
    """
    vocab = config["vocab_size"]
    for tensor in layout:
        if tensor.name.startswith(("model.embed_tokens.", "lm_head.")):
            continue
        if vocab in tensor.shape:
            raise ValueError(f"vocab_size {vocab} equals a dimension of {tensor.name} {tensor.shape}; change the width")


def _write_json(path: Path, document: dict) -> None:
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_tokenizer_files(spec: TinyModelSpec, folder: Path) -> None:
    for target, source in spec.copied_files.items():
        shutil.copyfile(FILES_DIR / source, folder / target)

    if spec.tokenizer_config_file is not None:
        tokenizer_config = read_source_json(spec.tokenizer_config_file)
        for key in spec.tokenizer_config_drop:
            tokenizer_config.pop(key, None)
        _write_json(folder / "tokenizer_config.json", tokenizer_config)

    if spec.tokenizer_build == "o200k":
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        document = o200k_tokenizer_json(folder / "vocab.json", folder / "merges.txt", tokenizer_config)
        _write_json(folder / "tokenizer.json", document)
    elif spec.tokenizer_build == "cl100k":
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        document, vocab, merges = cl100k_tokenizer_files(FILES_DIR / "_bpe-bases/cl100k_base.tiktoken", tokenizer_config)
        _write_json(folder / "tokenizer.json", document)
        (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def _write_weights(
    spec: TinyModelSpec,
    config: dict,
    layout: list[TensorSpec],
    folder: Path,
    seed: int,
    dtype: str,
    extreme_weight: float | None,
) -> int:
    """Write the safetensors file(s) and return the parameter count."""
    safetensors_dtype = TORCH_DTYPE_TO_SAFETENSORS[dtype]
    bytes_per_value = np.dtype(np.float32).itemsize if dtype == "float32" else 2
    shards = split_into_shards(layout, spec.num_shards, bytes_per_value)

    weight_map: dict[str, str] = {}
    total_size = 0
    for index, shard in enumerate(shards, start=1):
        file_name = "model.safetensors" if len(shards) == 1 else f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        tensors = {}
        for tensor in shard:
            values = random_tensor(tensor, seed)
            if extreme_weight is not None and tensor.name == spec.extreme_weight_tensor:
                values[EXTREME_WEIGHT_INDEX] = np.float32(extreme_weight)
            tensors[tensor.name] = values
            weight_map[tensor.name] = file_name
        total_size += write_safetensors(folder / file_name, tensors, safetensors_dtype)
        del tensors

    if len(shards) > 1:
        index_document = {
            "metadata": {"total_size": total_size},
            "weight_map": dict(sorted(weight_map.items())),
        }
        _write_json(folder / SAFETENSORS_INDEX, index_document)
    return sum(tensor.numel for tensor in layout)


def split_into_shards(layout: list[TensorSpec], num_shards: int, bytes_per_value: int) -> list[list[TensorSpec]]:
    """Split tensors, in module order, into at most ``num_shards`` shards.

    Uses transformers' ``max_shard_size`` rule: a new shard starts when the
    next tensor would push the current one past the limit. The limit is the
    larger of total / num_shards and the largest tensor.
    """
    if num_shards <= 1:
        return [list(layout)]
    sizes = [tensor.numel * bytes_per_value for tensor in layout]
    limit = max(max(sizes), -(-sum(sizes) // num_shards))
    shards: list[list[TensorSpec]] = [[]]
    current = 0
    for tensor, size in zip(layout, sizes):
        if shards[-1] and current + size > limit:
            shards.append([])
            current = 0
        shards[-1].append(tensor)
        current += size
    return shards


def card_header(spec: TinyModelSpec) -> str:
    """Return the YAML header (with its ``---`` lines) of the model card."""
    if spec.card_file is None:
        return (
            "---\n"
            "license: mit\n"
            "pipeline_tag: text-generation\n"
            "library_name: transformers\n"
            "tags:\n"
            "- nlp\n"
            "- code\n"
            "---\n"
        )
    text = (FILES_DIR / spec.card_file).read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        raise ValueError(f"{spec.card_file} does not start with a YAML header")
    end = text.find("\n---", 4)
    if end < 0:
        raise ValueError(f"{spec.card_file}: YAML header has no closing '---' line")
    return text[: end + len("\n---")] + "\n"


def model_card(spec: TinyModelSpec, config: dict, *, seed: int, dtype: str, parameters: int) -> str:
    """Render README.md: the real YAML header, then a note on what this model is."""
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    lines = [
        f"# Tiny random {spec.hub_id}",
        "",
        f"A test model built by `hubquant.tinymodels` (`{spec.name}`). {spec.summary}",
        "",
        f"It has the real tokenizer, generation config and architecture settings of "
        f"[{spec.hub_id}](https://huggingface.co/{spec.hub_id}), shrunk to "
        f"{config['num_hidden_layers']} layers, hidden size {config['hidden_size']}, "
        f"intermediate size {config['intermediate_size']}, {heads} attention heads "
        f"({config.get('num_key_value_heads', heads)} key/value heads) of {head_dim}, "
        f"vocabulary {config['vocab_size']}: {parameters:,} parameters in total.",
        "",
        f"The weights are random ({dtype}, seed {seed}), so the model generates noise. "
        "Use it only to test conversion and serving tools.",
        "",
    ]
    return card_header(spec) + "\n" + "\n".join(lines)
