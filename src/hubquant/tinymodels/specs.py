"""The catalogue of tiny Phi-family test models.

Each spec names the real files (under ``files/``, see ``files/PROVENANCE.md``)
that a tiny model is built from, and how its architecture is shrunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Mapping

Architecture = Literal["Phi3ForCausalLM", "PhiMoEForCausalLM", "PhiForCausalLM"]
TokenizerBuild = Literal["o200k", "cl100k"]

# Sentinel for ``TinyModelSpec.config_edits``: remove the key from the real config.
DROP = object()


@dataclass(frozen=True)
class TinyModelSpec:
    """A tiny model: its real source files and its shrunk shape.

    Paths are relative to the ``files`` folder of this package. The default
    widths are multiples of 256 because llama.cpp's K-quants need rows of a
    multiple of 256 elements. Attention heads are ``hidden_size // head_dim``.
    """

    name: str
    hub_id: str
    architecture: Architecture
    summary: str
    config_file: str
    # Output file name -> source file, copied byte for byte.
    copied_files: Mapping[str, str]
    hidden_size: int
    intermediate_size: int
    head_dim: int
    # Attention heads per key/value head: the real model's ratio where the
    # shrunk head count allows it, with at least one key/value head.
    heads_per_kv_head: int
    # Default repository name for ``publish_tiny_model`` (under the caller's user).
    repo_name: str
    # Source of tokenizer_config.json when it is rewritten, not copied.
    tokenizer_config_file: str | None = None
    tokenizer_config_drop: tuple[str, ...] = ()
    tokenizer_build: TokenizerBuild | None = None
    # Real config key -> new value (or DROP), applied before shrinking.
    config_edits: Mapping[str, object] = field(default_factory=dict)
    # Model card whose YAML header is reused, or None for a minimal header.
    card_file: str | None = None
    num_shards: int = 1
    # When set, the default intermediate size is this multiple of hidden_size
    # (llama.cpp's phi2 converter writes a feed-forward length of 4 * hidden).
    intermediate_per_hidden: int | None = None
    num_local_experts: int | None = None
    # Where ``extreme_weight`` is planted: element [0, 0] of this tensor.
    extreme_weight_tensor: str = "model.layers.0.mlp.down_proj.weight"


def _files(mapping: dict[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


_PHI3_4K = "Phi-3-mini-4k-instruct"
_PHI3_128K = "Phi-3-mini-128k-instruct"
_PHI3_2024_05 = "Phi-3-mini-128k-instruct.2024-05"
_SPM_MODEL = f"{_PHI3_4K}/tokenizer.model"

# The 4k fixtures have no generation_config.json, added_tokens.json or
# special_tokens_map.json. These come from the 128k model's first public
# revision (May 2024), which has the same tokens and ids.
_PHI3_4K_FILES = _files(
    {
        "tokenizer.json": f"{_PHI3_4K}/tokenizer.json",
        "tokenizer.model": _SPM_MODEL,
        "tokenizer_config.json": f"{_PHI3_4K}/tokenizer_config.json",
        "added_tokens.json": f"{_PHI3_2024_05}/added_tokens.json",
        "special_tokens_map.json": f"{_PHI3_2024_05}/special_tokens_map.json",
        "generation_config.json": f"{_PHI3_2024_05}/generation_config.json",
    }
)

_PHI3_SHAPE = {"hidden_size": 256, "intermediate_size": 768, "head_dim": 64, "heads_per_kv_head": 1}

_SPECS = [
    TinyModelSpec(
        name="phi-3-mini-4k-instruct",
        hub_id="microsoft/Phi-3-mini-4k-instruct",
        architecture="Phi3ForCausalLM",
        summary="Phi-3-mini 4k (April 2024 config): SentencePiece tokenizer, no RoPE scaling.",
        config_file=f"{_PHI3_4K}/config.2024-04.RECONSTRUCTED-from-hf-page.json",
        copied_files=_PHI3_4K_FILES,
        repo_name="Phi-3-mini-4k-instruct",
        **_PHI3_SHAPE,
    ),
    TinyModelSpec(
        name="phi-3-mini-4k-instruct-sharded",
        hub_id="microsoft/Phi-3-mini-4k-instruct",
        architecture="Phi3ForCausalLM",
        summary="phi-3-mini-4k-instruct with its weights in three safetensors shards.",
        config_file=f"{_PHI3_4K}/config.2024-04.RECONSTRUCTED-from-hf-page.json",
        copied_files=_PHI3_4K_FILES,
        repo_name="Phi-3-mini-4k-instruct-sharded",
        num_shards=3,
        **_PHI3_SHAPE,
    ),
    TinyModelSpec(
        name="phi-3-mini-128k-instruct",
        hub_id="microsoft/Phi-3-mini-128k-instruct",
        architecture="Phi3ForCausalLM",
        summary="Phi-3-mini 128k, current revision: rope_scaling type longrope.",
        config_file=f"{_PHI3_128K}/config.json",
        copied_files=_files(
            {
                "tokenizer.json": f"{_PHI3_128K}/tokenizer.json",
                "tokenizer.model": _SPM_MODEL,
                "tokenizer_config.json": f"{_PHI3_128K}/tokenizer_config.json",
                "added_tokens.json": f"{_PHI3_128K}/added_tokens.json",
                "special_tokens_map.json": f"{_PHI3_128K}/special_tokens_map.json",
                "generation_config.json": f"{_PHI3_128K}/generation_config.json",
            }
        ),
        repo_name="Phi-3-mini-128k-instruct",
        **_PHI3_SHAPE,
    ),
    TinyModelSpec(
        name="phi-3-mini-128k-instruct-2024-05",
        hub_id="microsoft/Phi-3-mini-128k-instruct",
        architecture="Phi3ForCausalLM",
        summary="Phi-3-mini 128k, first public revision (May 2024): rope_scaling type su.",
        config_file=f"{_PHI3_2024_05}/config.json",
        copied_files=_files(
            {
                "tokenizer.json": f"{_PHI3_2024_05}/tokenizer.json",
                "tokenizer.model": _SPM_MODEL,
                "tokenizer_config.json": f"{_PHI3_2024_05}/tokenizer_config.json",
                "added_tokens.json": f"{_PHI3_2024_05}/added_tokens.json",
                "special_tokens_map.json": f"{_PHI3_2024_05}/special_tokens_map.json",
                "generation_config.json": f"{_PHI3_2024_05}/generation_config.json",
            }
        ),
        repo_name="Phi-3-mini-128k-instruct-2024-05",
        card_file=f"{_PHI3_2024_05}/README.md",
        **_PHI3_SHAPE,
    ),
    TinyModelSpec(
        name="phi-3.5-mini-instruct",
        hub_id="microsoft/Phi-3.5-mini-instruct",
        architecture="Phi3ForCausalLM",
        summary=(
            "Phi-3.5-mini tokenizer and chat template on the Phi-3-mini 128k config; "
            "the chat template ships only as chat_template.jinja."
        ),
        config_file=f"{_PHI3_128K}/config.json",
        copied_files=_files(
            {
                "tokenizer.json": f"{_PHI3_4K}/tokenizer.json",
                "tokenizer.model": _SPM_MODEL,
                "added_tokens.json": f"{_PHI3_128K}/added_tokens.json",
                "special_tokens_map.json": f"{_PHI3_128K}/special_tokens_map.json",
                "generation_config.json": f"{_PHI3_128K}/generation_config.json",
                "chat_template.jinja": "Phi-3.5-mini-instruct/chat_template.jinja",
            }
        ),
        tokenizer_config_file=f"{_PHI3_128K}/tokenizer_config.json",
        tokenizer_config_drop=("chat_template",),
        repo_name="Phi-3.5-mini-instruct",
        card_file="Phi-3.5-mini-instruct/README.md.yaml-header-EXCERPT",
        **_PHI3_SHAPE,
    ),
    TinyModelSpec(
        name="phi-4-mini-instruct",
        hub_id="microsoft/Phi-4-mini-instruct",
        architecture="Phi3ForCausalLM",
        summary=(
            "Phi-4-mini: o200k byte-level BPE, partial rotary factor 0.75, tied embeddings "
            "(no lm_head tensor), longrope."
        ),
        config_file="Phi-4-mini-instruct/config.json",
        copied_files=_files(
            {
                "vocab.json": "Phi-4-mini-instruct/vocab.json",
                "merges.txt": "Phi-4-mini-instruct/merges.txt",
                "tokenizer_config.json": "Phi-4-mini-instruct/tokenizer_config.json",
                "added_tokens.json": "Phi-4-mini-instruct/added_tokens.json",
                "special_tokens_map.json": "Phi-4-mini-instruct/special_tokens_map.json",
                "generation_config.json": "Phi-4-mini-instruct/generation_config.json",
            }
        ),
        tokenizer_build="o200k",
        # head_dim 128 as in the real model, so partial rotary 0.75 gives 96
        # rotary dims and the 48 real LongRoPE factors per list fit unchanged.
        hidden_size=256,
        intermediate_size=768,
        head_dim=128,
        heads_per_kv_head=3,
        repo_name="Phi-4-mini-instruct",
    ),
    TinyModelSpec(
        name="phi-4",
        hub_id="microsoft/phi-4",
        architecture="Phi3ForCausalLM",
        summary=(
            "Phi-4 (Phi3ForCausalLM): December 2024 mirror config, official tokenizer_config, "
            "cl100k byte-level BPE rebuilt from tiktoken ranks."
        ),
        config_file="phi-4.2024-12-mirror/config.json",
        copied_files=_files(
            {
                "tokenizer_config.json": "phi-4/tokenizer_config.json",
                "added_tokens.json": "phi-4.2024-12-mirror/added_tokens.json",
                "generation_config.json": "phi-4.2024-12-mirror/generation_config.json",
            }
        ),
        tokenizer_build="cl100k",
        hidden_size=256,
        intermediate_size=1024,
        head_dim=64,
        heads_per_kv_head=4,
        repo_name="phi-4",
    ),
    TinyModelSpec(
        name="phi-tiny-moe-instruct",
        hub_id="microsoft/Phi-tiny-MoE-instruct",
        architecture="PhiMoEForCausalLM",
        summary="Phi-tiny-MoE (phimoe): 4 experts, top-2, attention and lm_head biases, LayerNorm.",
        config_file="Phi-tiny-MoE-instruct/config.json",
        copied_files=_files(
            {
                "tokenizer.json": "Phi-tiny-MoE-instruct/tokenizer.json",
                "tokenizer.model": _SPM_MODEL,
                "tokenizer_config.json": "Phi-tiny-MoE-instruct/tokenizer_config.json",
                "added_tokens.json": "Phi-tiny-MoE-instruct/added_tokens.json",
                "special_tokens_map.json": "Phi-tiny-MoE-instruct/special_tokens_map.json",
                "generation_config.json": "Phi-tiny-MoE-instruct/generation_config.json",
            }
        ),
        # The real model has 16 heads of 128 (q width 2048) on hidden 4096.
        # The tiny one keeps head_dim 128 and the 4:1 grouping but makes the
        # q width equal to hidden_size, which llama.cpp's converter assumes.
        hidden_size=512,
        intermediate_size=256,
        head_dim=128,
        heads_per_kv_head=4,
        num_local_experts=4,
        # transformers implements phimoe natively, and the real auto_map points
        # at remote code that is not shipped.
        config_edits=MappingProxyType({"auto_map": DROP}),
        card_file="Phi-tiny-MoE-instruct/README.md",
        repo_name="Phi-tiny-MoE-instruct",
        extreme_weight_tensor="model.layers.0.block_sparse_moe.experts.0.w2.weight",
    ),
    TinyModelSpec(
        name="phi-2",
        hub_id="microsoft/phi-2",
        architecture="PhiForCausalLM",
        summary="Phi-2 (PhiForCausalLM): GPT-2 style BPE (CodeGenTokenizer), LayerNorm, biases.",
        config_file="phi-2/config.json",
        copied_files=_files(
            {
                "tokenizer.json": "phi-2/tokenizer.json",
                "vocab.json": "phi-2/vocab.json",
                "merges.txt": "phi-2/merges.txt",
                "tokenizer_config.json": "phi-2/tokenizer_config.json",
                "added_tokens.json": "phi-2/added_tokens.json",
                "special_tokens_map.json": "phi-2/special_tokens_map.json",
                "generation_config.json": "phi-2/generation_config.json",
            }
        ),
        hidden_size=256,
        intermediate_size=1024,
        intermediate_per_hidden=4,
        head_dim=64,
        heads_per_kv_head=1,
        # The real head_dim 80 with factor 0.4 gives 32 rotary dims. A
        # multiple-of-256 width cannot have a head_dim that is a multiple of
        # 5 below hidden 1280, so the tiny model keeps the 32 rotary dims with
        # head_dim 64 and factor 0.5 (0.4 * 64 = 25.6 is not a valid size).
        config_edits=MappingProxyType({"auto_map": DROP, "partial_rotary_factor": 0.5}),
        card_file="phi-2/README.md",
        repo_name="phi-2",
        extreme_weight_tensor="model.layers.0.mlp.fc2.weight",
    ),
]

TINY_MODELS: dict[str, TinyModelSpec] = {spec.name: spec for spec in _SPECS}


def get_spec(name: str) -> TinyModelSpec:
    """Return the spec called ``name``, or raise KeyError listing the valid names."""
    try:
        return TINY_MODELS[name]
    except KeyError:
        raise KeyError(f"unknown tiny model {name!r}; choose one of: {', '.join(TINY_MODELS)}") from None
