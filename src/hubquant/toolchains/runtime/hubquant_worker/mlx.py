"""mlx-lm steps: convert a transformers folder to MLX weights, and evaluate them.

Conversion uses mlx-lm's own loader, dtype cast and ``save``, so the folder is
what ``mlx_lm convert`` writes. Quantization calls ``mlx.nn.quantize`` with a
per-layer predicate instead of ``mlx_lm.utils.quantize_model``, because
mlx-lm 0.32.2 silently leaves every layer whose input width the group size
does not divide unquantized. The predicate gives such a layer the largest
smaller valid group size, and the result lists each layer left unquantized.
"""

from __future__ import annotations

import contextlib
import faulthandler
from pathlib import Path

import numpy as np

from hubquant_worker.protocol import StepError, info, progress, serve, warning

FLOAT16_MAX = 65504.0

# Group sizes mlx.core.quantize accepts for affine quantization (0.32.4). The
# floating-point modes each allow only their own group size.
AFFINE_GROUP_SIZES = (32, 64, 128)


# --- layers ----------------------------------------------------------------


def describe_layers(model) -> dict:
    """List the quantized layers with their settings and the quantizable ones left as is."""
    quantized = []
    unquantized = []
    for path, module in model.named_modules():
        if not path or "weight" not in module:
            continue
        if hasattr(module, "bits") and hasattr(module, "group_size"):
            quantized.append(
                {
                    "path": path,
                    "bits": int(module.bits),
                    "group_size": int(module.group_size),
                    "mode": str(getattr(module, "mode", "affine")),
                }
            )
        elif hasattr(module, "to_quantized"):
            unquantized.append(
                {
                    "path": path,
                    "width": int(module.weight.shape[-1]),
                    "dtype": _dtype_name(module.weight.dtype),
                }
            )
    quantized.sort(key=lambda layer: _layer_order(layer["path"]))
    unquantized.sort(key=lambda layer: _layer_order(layer["path"]))
    return {"quantized": quantized, "unquantized": unquantized}


def _layer_order(path: str) -> list[tuple[int, int | str]]:
    """Sort key that puts model.layers.2 before model.layers.10."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in path.split(".")]


def _dtype_name(dtype) -> str:
    return str(dtype).rsplit(".", 1)[-1]


def layer_predicate(model, settings: dict):
    """Return the ``class_predicate`` for ``mlx.nn.quantize`` and the config entries it fills.

    ``settings`` contains ``mode``, ``bits``, ``group_size`` and an optional
    mlx-lm mixed ``recipe``. A layer gets the recipe's (or the requested)
    settings when its input width is divisible by the group size, else the
    largest smaller affine group size that divides it, else it stays in its
    float dtype. The entries map each layer that differs from the top-level
    settings to its own settings, or to False when it stays unquantized, in the
    format mlx-lm's loader reads from config.json's ``quantization``.
    """
    from mlx_lm.convert import mixed_quant_predicate_builder

    mode = settings["mode"]
    base = {"group_size": settings["group_size"], "bits": settings["bits"], "mode": mode}
    recipe = None
    if settings.get("recipe"):
        try:
            recipe = mixed_quant_predicate_builder(settings["recipe"], model, settings["group_size"])
        except ValueError as error:
            raise StepError(f"mlx-lm cannot apply the mixed recipe {settings['recipe']}: {error}") from None
    model_predicate = getattr(model, "quant_predicate", None)
    entries: dict[str, object] = {}

    def predicate(path: str, module) -> bool | dict:
        if not hasattr(module, "to_quantized"):
            return False
        chosen = dict(base)
        if model_predicate is not None:
            decided = model_predicate(path, module)
            if decided is False:
                entries[path] = False
                return False
            if isinstance(decided, dict):
                chosen.update(decided)
        if recipe is not None:
            chosen.update(recipe(path, module))
        width = int(module.weight.shape[-1])
        group_size = _group_size_for(width, chosen["group_size"], chosen["mode"])
        if group_size is None:
            entries[path] = False
            return False
        chosen["group_size"] = group_size
        if chosen != base:
            entries[path] = chosen
        return dict(chosen)

    return predicate, entries


def _group_size_for(width: int, requested: int, mode: str) -> int | None:
    if width % requested == 0:
        return requested
    if mode != "affine":
        return None
    for size in sorted(AFFINE_GROUP_SIZES, reverse=True):
        if size < requested and width % size == 0:
            return size
    return None


# --- convert ---------------------------------------------------------------


def _floating_parameters(model):
    import mlx.core as mx
    from mlx.utils import tree_flatten

    return [
        (name, value)
        for name, value in tree_flatten(model.parameters())
        if mx.issubdtype(value.dtype, mx.floating)
    ]


def max_abs_weight(model) -> float:
    import mlx.core as mx

    peak = 0.0
    for _, value in _floating_parameters(model):
        peak = max(peak, float(mx.abs(value.astype(mx.float32)).max()))
    return peak


def cast_model(model, dtype_name: str) -> None:
    """Cast floating parameters as ``mlx_lm convert --dtype`` does."""
    import mlx.core as mx
    from mlx.utils import tree_map_with_path

    dtype = getattr(mx, dtype_name)
    cast_predicate = getattr(model, "cast_predicate", lambda _: True)

    def cast(name, value):
        if cast_predicate(name) and mx.issubdtype(value.dtype, mx.floating):
            return value.astype(dtype)
        return value

    model.update(tree_map_with_path(cast, model.parameters()))


@contextlib.contextmanager
def _shard_limit(max_bytes: int | None):
    """Make ``mlx_lm.utils.save`` write shards of at most ``max_bytes``.

    mlx-lm 0.32.2 always shards at 5 GiB (``make_shards``' default, in whole
    GiB). ``save_model`` looks ``make_shards`` up in its module on every call,
    so a byte limit is swapped in there for the duration of the save. A tensor
    larger than the limit still gets a shard of its own.
    """
    import mlx_lm.utils

    original = mlx_lm.utils.make_shards
    if not max_bytes or max_bytes >= 5 << 30:
        yield
        return

    def make_shards(weights: dict, max_file_size_gb: int = 5) -> list:
        shards: list[dict] = []
        size = 0
        for name, value in weights.items():
            if not shards or size + value.nbytes > max_bytes:
                shards.append({})
                size = 0
            shards[-1][name] = value
            size += value.nbytes
        return shards

    mlx_lm.utils.make_shards = make_shards
    try:
        yield
    finally:
        mlx_lm.utils.make_shards = original


def convert(request: dict) -> dict:
    """Convert ``source_dir`` into ``out_dir`` in ``dtype``, quantized when asked.

    Request: ``source_dir``, ``out_dir`` (must not exist), ``dtype``
    (``float16``, ``bfloat16`` or ``float32``), ``quantization``, either
    null or ``{"mode", "bits", "group_size", "recipe"}``, and an optional
    ``max_shard_bytes``.
    """
    import mlx.nn as nn
    from mlx_lm.utils import compute_bits_per_weight, load, save

    source = Path(request["source_dir"])
    out_dir = Path(request["out_dir"])
    if out_dir.exists():
        raise StepError(f"the output folder {out_dir} already exists")
    dtype = request["dtype"]
    settings = request.get("quantization")

    info(f"loading {source.name} with mlx-lm")
    try:
        model, tokenizer, config = load(str(source), return_config=True, lazy=True)
    except ValueError as error:
        raise StepError(f"mlx-lm failed to load the source: {error}") from None
    progress("convert", 1, 4)

    if dtype == "float16":
        peak = max_abs_weight(model)
        if peak > FLOAT16_MAX:
            raise StepError(
                f"the source has weights up to {peak:.6g}, beyond the float16 range "
                f"({FLOAT16_MAX:g}), which would become inf; choose mlx:bf16 instead of mlx:fp16"
            )
    cast_model(model, dtype)
    progress("convert", 2, 4)

    calibration = {}
    if settings and settings.get("method") == "gptq":
        calibration = _gptq(model, tokenizer, config, settings, request)
    elif settings:
        info(f"quantizing: {settings}")
        predicate, entries = layer_predicate(model, settings)
        nn.quantize(
            model,
            settings["group_size"],
            settings["bits"],
            mode=settings["mode"],
            class_predicate=predicate,
        )
        config["quantization"] = {
            "group_size": settings["group_size"],
            "bits": settings["bits"],
            "mode": settings["mode"],
            **entries,
        }
        config["quantization_config"] = config["quantization"]
    progress("convert", 3, 4)

    layers = describe_layers(model)
    for layer in layers["unquantized"] if settings else []:
        warning(f"{layer['path']}: width {layer['width']} stays {layer['dtype']}")
    bits_per_weight = float(compute_bits_per_weight(model))
    with _shard_limit(request.get("max_shard_bytes")):
        save(str(out_dir), str(source), model, tokenizer, config)
    progress("convert", 4, 4)
    return {"out_dir": str(out_dir), "layers": layers, "bits_per_weight": bits_per_weight, **calibration}


def _gptq(model, tokenizer, config: dict, settings: dict, request: dict) -> dict:
    """Quantize every linear layer with mlx-lm's GPTQ on the request's calibration text.

    mlx_lm.quant.gptq's own command downloads its calibration text; this feeds
    it the job's instead, cut into rows of ``calibration_sequence_length``
    tokens. Layers GPTQ does not handle (the token embedding) are quantized
    to the same bits and group size by round-to-nearest.
    """
    import mlx.core as mx
    from mlx_lm.quant.gptq import gptq_quantize

    length = int(request["calibration_sequence_length"])
    tokens = tokenizer.encode(request["calibration_text"])
    rows = len(tokens) // length
    if rows < 1:
        raise StepError(f"the calibration text has {len(tokens)} tokens, fewer than one row of {length}")
    data = mx.array(tokens[: rows * length]).reshape(rows, length)
    bits, group_size = settings["bits"], settings["group_size"]
    info(f"quantizing with GPTQ: {bits} bits, group size {group_size}, {rows} rows of {length} tokens")
    try:
        model, quantization = gptq_quantize(model, data, bits, group_size, bits, group_size)
    except ValueError as error:
        raise StepError(f"mlx-lm's GPTQ failed: {error}") from None
    config["quantization"] = {**quantization, "mode": "affine"}
    config["quantization_config"] = config["quantization"]
    return {"calibration_samples": rows, "calibration_sequence_length": length, "calibration_tokens": len(tokens)}


# --- evaluate --------------------------------------------------------------


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Compare two logit matrices (positions x vocab): max difference, KL, top-1."""
    if reference.shape != candidate.shape:
        raise StepError(f"logit shapes differ: {reference.shape} vs {candidate.shape}")
    if not np.isfinite(candidate).all():
        return {"finite": False, "max_abs_diff": float("inf"), "kl_mean": float("inf"),
                "kl_max": float("inf"), "top1_agreement": 0.0}  # fmt: skip
    log_p = _log_softmax(reference.astype(np.float64))
    log_q = _log_softmax(candidate.astype(np.float64))
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=-1)
    return {
        "finite": True,
        "max_abs_diff": float(np.abs(reference - candidate).max()),
        "kl_mean": float(kl.mean()),
        "kl_max": float(kl.max()),
        "top1_agreement": float((reference.argmax(-1) == candidate.argmax(-1)).mean()),
    }


def _greedy(model, tokenizer, ids: list[int], max_new_tokens: int) -> dict:
    """Generate greedily with mlx-lm's stream_generate, which stops at its EOS ids."""
    from mlx_lm.generate import stream_generate

    tokens: list[int] = []
    finish_reason = None
    for response in stream_generate(model, tokenizer, ids, max_tokens=max_new_tokens):
        tokens.append(int(response.token))
        finish_reason = response.finish_reason
    return {"tokens": tokens, "stopped_at_eog": finish_reason == "stop"}


def _forced_stops(model, tokenizer, ids: list[int], eos_ids: list[int]) -> list[dict]:
    """Force each EOS id with a logit bias; mlx-lm must end generation on it."""
    import mlx.core as mx
    from mlx_lm.generate import stream_generate

    outcomes = []
    for token in eos_ids:

        def force(_tokens, logits, token=token):
            bias = mx.zeros(logits.shape[-1], dtype=logits.dtype)
            bias[token] = 1e4
            return logits + bias

        last = None
        for last in stream_generate(model, tokenizer, ids, max_tokens=8, logits_processors=[force]):
            pass
        outcomes.append(
            {"id": token, "finish_reason": last.finish_reason, "generated_tokens": int(last.generation_tokens),
             "last_token": int(last.token)}  # fmt: skip
        )
    return outcomes


def _tokenize(tokenizer, prompt: dict) -> list[int] | None:
    """Tokenize a prompt the way the transformers reference worker does."""
    if prompt.get("messages") is not None:
        if not tokenizer.has_chat_template:
            return None
        return list(tokenizer.apply_chat_template(prompt["messages"], add_generation_prompt=True))
    return list(tokenizer.encode(prompt["text"]))


def evaluate(request: dict) -> dict:
    """Load an MLX (or transformers) folder with mlx-lm and run fixed prompts on it.

    Request: ``model_dir``, ``compute_dtype`` (``float32`` to cast unquantized
    weights before running, or null to run as stored), ``prompts`` (``id``,
    ``input_ids``, ``text`` or ``messages``, ``reference_logits`` path or null),
    ``eos_ids``, ``max_new_tokens``, ``stop_prompt`` and ``out_dir``.
    """
    import mlx.core as mx
    from mlx_lm.utils import compute_bits_per_weight, get_total_parameters, load

    out_dir = Path(request["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    model_dir = Path(request["model_dir"])
    try:
        model, tokenizer, config = load(str(model_dir), return_config=True)
    except (ValueError, FileNotFoundError) as error:
        raise StepError(f"mlx-lm failed to load {model_dir.name}: {error}") from None
    bits_per_weight = float(compute_bits_per_weight(model))
    parameters = int(get_total_parameters(model))
    layers = describe_layers(model)
    if request.get("compute_dtype"):
        cast_model(model, request["compute_dtype"])

    results = []
    for index, prompt in enumerate(request["prompts"]):
        progress("evaluate", index, len(request["prompts"]))
        ids = list(prompt["input_ids"])
        logits = np.array(model(mx.array([ids]))[0].astype(mx.float32))
        logits_path = out_dir / f"{prompt['id']}.logits.npy"
        np.save(logits_path, logits)
        entry = {
            "id": prompt["id"],
            "logits_path": str(logits_path),
            "continuation": _greedy(model, tokenizer, ids, request["max_new_tokens"]),
            "tokens_from_text": _tokenize(tokenizer, prompt),
        }
        if prompt.get("reference_logits"):
            entry["comparison"] = compare_logits(np.load(prompt["reference_logits"]), logits)
        results.append(entry)

    long_prompt = None
    if request.get("long_prompt"):
        # One forward pass past the source's original context. Only the last
        # positions are compared (and kept), as the reference kept them.
        prompt = request["long_prompt"]
        keep = int(prompt["keep_last"])
        info(f"running a {len(prompt['input_ids'])}-token prompt past the original context")
        logits = np.array(model(mx.array([prompt["input_ids"]]))[0, -keep:].astype(mx.float32))
        long_prompt = {"id": prompt["id"], "comparison": compare_logits(np.load(prompt["reference_logits"]), logits)}

    eos_ids = [int(token) for token in request.get("eos_ids", [])]
    stop_ids = list(tokenizer.encode(request.get("stop_prompt", "Hello")))
    return {
        "prompts": results,
        "long_prompt": long_prompt,
        "eos_token_ids": sorted(int(token) for token in tokenizer.eos_token_ids),
        "forced_stops": _forced_stops(model, tokenizer, stop_ids, eos_ids),
        "chat_template": tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None,
        "bits_per_weight": bits_per_weight,
        "parameters": parameters,
        "layers": layers,
        "model_type": config.get("model_type"),
    }


OPERATIONS = {"convert": convert, "evaluate": evaluate}


def handle(request: dict) -> dict:
    operation = request.get("op")
    if operation not in OPERATIONS:
        raise StepError(f"unknown mlx operation {operation!r}; known: {sorted(OPERATIONS)}")
    return OPERATIONS[operation](request)


if __name__ == "__main__":
    # A crash inside MLX then leaves a Python traceback in stderr, whose tail
    # the orchestrator puts into its error.
    faulthandler.enable()
    serve(handle)
