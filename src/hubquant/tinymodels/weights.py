"""Tensor layouts and random weights for the tiny Phi-family models.

Tensor names follow the checkpoints on the Hub, which transformers 5.25
loads (for PhiMoE it fuses the per-expert ``w1``/``w2``/``w3`` tensors into
``experts.gate_up_proj``/``down_proj`` at load time).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Literal

import numpy as np

TensorKind = Literal["weight", "norm", "bias"]

# Standard deviation of the random weights and biases: small enough that the
# activations and logits of a 2-layer model stay far from overflow.
WEIGHT_STD = 0.02
OUTPUT_LOGIT_STD = 4.0
EXTREME_WEIGHT_INDEX = (0, 0)


@dataclass(frozen=True)
class TensorSpec:
    """One checkpoint tensor: its name, shape and what kind of values it holds."""

    name: str
    shape: tuple[int, ...]
    kind: TensorKind

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))


def _attention_widths(config: dict) -> tuple[int, int, int]:
    """Return (head_dim, q width, k/v width) for a config."""
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    return head_dim, heads * head_dim, kv_heads * head_dim


def _phi3_tensors(config: dict) -> list[TensorSpec]:
    hidden = config["hidden_size"]
    intermediate = config["intermediate_size"]
    vocab = config["vocab_size"]
    _, q_width, kv_width = _attention_widths(config)
    tensors = [TensorSpec("model.embed_tokens.weight", (vocab, hidden), "weight")]
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}"
        tensors += [
            TensorSpec(f"{prefix}.input_layernorm.weight", (hidden,), "norm"),
            TensorSpec(f"{prefix}.self_attn.qkv_proj.weight", (q_width + 2 * kv_width, hidden), "weight"),
            TensorSpec(f"{prefix}.self_attn.o_proj.weight", (hidden, q_width), "weight"),
            TensorSpec(f"{prefix}.post_attention_layernorm.weight", (hidden,), "norm"),
            TensorSpec(f"{prefix}.mlp.gate_up_proj.weight", (2 * intermediate, hidden), "weight"),
            TensorSpec(f"{prefix}.mlp.down_proj.weight", (hidden, intermediate), "weight"),
        ]
    tensors.append(TensorSpec("model.norm.weight", (hidden,), "norm"))
    if not config.get("tie_word_embeddings", False):
        tensors.append(TensorSpec("lm_head.weight", (vocab, hidden), "weight"))
    return tensors


def _linear(name: str, out_features: int, in_features: int, bias: bool) -> list[TensorSpec]:
    tensors = [TensorSpec(f"{name}.weight", (out_features, in_features), "weight")]
    if bias:
        tensors.append(TensorSpec(f"{name}.bias", (out_features,), "bias"))
    return tensors


def _layer_norm(name: str, width: int) -> list[TensorSpec]:
    return [TensorSpec(f"{name}.weight", (width,), "norm"), TensorSpec(f"{name}.bias", (width,), "bias")]


def _phimoe_tensors(config: dict) -> list[TensorSpec]:
    hidden = config["hidden_size"]
    intermediate = config["intermediate_size"]
    vocab = config["vocab_size"]
    experts = config["num_local_experts"]
    attention_bias = bool(config.get("attention_bias", False))
    _, q_width, kv_width = _attention_widths(config)
    tensors = [TensorSpec("model.embed_tokens.weight", (vocab, hidden), "weight")]
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}"
        tensors += _layer_norm(f"{prefix}.input_layernorm", hidden)
        tensors += _linear(f"{prefix}.self_attn.q_proj", q_width, hidden, attention_bias)
        tensors += _linear(f"{prefix}.self_attn.k_proj", kv_width, hidden, attention_bias)
        tensors += _linear(f"{prefix}.self_attn.v_proj", kv_width, hidden, attention_bias)
        tensors += _linear(f"{prefix}.self_attn.o_proj", hidden, q_width, attention_bias)
        tensors += _layer_norm(f"{prefix}.post_attention_layernorm", hidden)
        tensors += _linear(f"{prefix}.block_sparse_moe.gate", experts, hidden, False)
        for expert in range(experts):
            expert_prefix = f"{prefix}.block_sparse_moe.experts.{expert}"
            tensors += _linear(f"{expert_prefix}.w1", intermediate, hidden, False)
            tensors += _linear(f"{expert_prefix}.w2", hidden, intermediate, False)
            tensors += _linear(f"{expert_prefix}.w3", intermediate, hidden, False)
    tensors += _layer_norm("model.norm", hidden)
    if not config.get("tie_word_embeddings", False):
        tensors += _linear("lm_head", vocab, hidden, bool(config.get("lm_head_bias", False)))
    return tensors


def _phi_tensors(config: dict) -> list[TensorSpec]:
    hidden = config["hidden_size"]
    intermediate = config["intermediate_size"]
    vocab = config["vocab_size"]
    _, q_width, kv_width = _attention_widths(config)
    tensors = [TensorSpec("model.embed_tokens.weight", (vocab, hidden), "weight")]
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}"
        tensors += _layer_norm(f"{prefix}.input_layernorm", hidden)
        tensors += _linear(f"{prefix}.self_attn.q_proj", q_width, hidden, True)
        tensors += _linear(f"{prefix}.self_attn.k_proj", kv_width, hidden, True)
        tensors += _linear(f"{prefix}.self_attn.v_proj", kv_width, hidden, True)
        tensors += _linear(f"{prefix}.self_attn.dense", hidden, q_width, True)
        tensors += _linear(f"{prefix}.mlp.fc1", intermediate, hidden, True)
        tensors += _linear(f"{prefix}.mlp.fc2", hidden, intermediate, True)
    tensors += _layer_norm("model.final_layernorm", hidden)
    if not config.get("tie_word_embeddings", False):
        tensors += _linear("lm_head", vocab, hidden, True)
    return tensors


_LAYOUTS = {
    "Phi3ForCausalLM": _phi3_tensors,
    "PhiMoEForCausalLM": _phimoe_tensors,
    "PhiForCausalLM": _phi_tensors,
}


def tensor_layout(architecture: str, config: dict) -> list[TensorSpec]:
    """List the checkpoint tensors of ``architecture`` for ``config``, in module order."""
    try:
        layout = _LAYOUTS[architecture]
    except KeyError:
        raise ValueError(f"unsupported architecture {architecture!r}; expected one of {sorted(_LAYOUTS)}") from None
    return layout(config)


def random_tensor(spec: TensorSpec, seed: int) -> np.ndarray:
    """Draw the float32 values of one tensor.

    The generator is keyed by ``seed`` and the tensor name, so a tensor's
    values do not depend on which other tensors exist or on shard layout.
    Linear weights have std 1/sqrt(fan_in), so every layer changes the
    residual stream. The token embedding and the output projection have std
    OUTPUT_LOGIT_STD/sqrt(hidden): after the final norm the logits then have a
    std of about OUTPUT_LOGIT_STD, so next-token distributions are peaked and
    KL divergence and top-1 agreement measure something. Biases are normal
    with std WEIGHT_STD; norm weights are 1 + normal(0, WEIGHT_STD), so a
    converter that drops or shifts them changes the output.
    """
    rng = np.random.default_rng([seed, zlib.crc32(spec.name.encode("utf-8"))])
    values = rng.standard_normal(spec.shape, dtype=np.float32)
    if spec.kind == "norm":
        values *= np.float32(WEIGHT_STD)
        values += np.float32(1.0)
    elif spec.kind == "bias" or len(spec.shape) < 2:
        values *= np.float32(WEIGHT_STD)
    elif spec.name.endswith(("embed_tokens.weight", "lm_head.weight")):
        values *= np.float32(OUTPUT_LOGIT_STD / np.sqrt(spec.shape[-1]))
    else:
        values *= np.float32(1.0 / np.sqrt(spec.shape[-1]))
    return values
