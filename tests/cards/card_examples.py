"""A complete GGUF card context for microsoft/Phi-tiny-MoE-instruct, and the source cards.

The numbers are plausible but made up: no model was quantized to produce them.
Phi-tiny-MoE is the example because its expert FFN width (448) is not a
multiple of 256, so K-quant files of it really contain fallback tensors.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from hubquant import hardware
from hubquant.cards import card_metadata

DATA = Path(__file__).parent / "data"

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n'"
    " + message['content'] + '<|end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

PROMPT_EXAMPLE = (
    "<|system|>\nYou are a helpful assistant.<|end|>\n"
    "<|user|>\nWhat is the capital of France?<|end|>\n"
    "<|assistant|>\n"
)

HARDWARE_KEYS = ["phone", "apple-silicon", "any-cpu"]


def load_source_card(name: str) -> dict:
    return yaml.safe_load((DATA / f"{name}.card.yaml").read_text(encoding="utf-8"))


def _check(name: str, status: str, detail: str) -> dict:
    return {"name": name, "status": status, "detail": detail}


def _file_checks(kl_detail: str, kl_status: str = "passed") -> list[dict]:
    return [
        _check("load in llama.cpp", "passed", "loaded and generated 16 tokens"),
        _check("KL divergence", kl_status, kl_detail),
        _check(
            "greedy continuation",
            "skipped",
            "the reference run produced no greedy continuation to compare with",
        ),
    ]


def build_gguf_context() -> dict:
    """Return a complete `GgufCardContext`; every test gets a fresh copy."""
    source_card = load_source_card("Phi-tiny-MoE-instruct")
    type_tags = ["q4_k_m", "q8_0", "q4_0"]
    metadata = card_metadata(
        source_card,
        base_model="microsoft/Phi-tiny-MoE-instruct",
        library_name="gguf",
        backend_tags=["gguf", "llama.cpp", "quantized"],
        extra_tags=[*type_tags, *HARDWARE_KEYS],
    )
    sha = "9ddc5b7a39a7f6e0c1e43bd7d8c6b1b3c5e4f2a1"
    return {
        "metadata": metadata,
        "repo_id": "hubquant-test/Phi-tiny-MoE-instruct-GGUF",
        "model_name": "Phi-tiny-MoE-instruct",
        "backend": "gguf",
        "source": {
            "id": "microsoft/Phi-tiny-MoE-instruct",
            "sha": sha,
            "url": "https://huggingface.co/microsoft/Phi-tiny-MoE-instruct",
            "revision_url": f"https://huggingface.co/microsoft/Phi-tiny-MoE-instruct/tree/{sha}",
            "local": False,
            "declared_base_model": None,
            "architecture": "PhiMoEForCausalLM",
            "parameters": 3_757_000_000,
            "dtype": "bfloat16",
            "license": "mit",
            "license_link": None,
            "private": False,
            "gated": False,
        },
        "files": [
            {
                "name": "Phi-tiny-MoE-instruct-Q4_K_M.gguf",
                "type": "Q4_K_M",
                "size_bytes": 2_351_804_416,
                "bits_per_weight": 5.008,
                "tensor_types": {"F32": 195, "Q4_K": 113, "Q5_0": 16, "Q6_K": 17, "Q8_0": 16},
                "fallbacks": [
                    {"tensor": "blk.0.ffn_down_exps.weight", "columns": 448, "block": 256, "type": "Q8_0"},
                    {"tensor": "blk.1.ffn_down_exps.weight", "columns": 448, "block": 256, "type": "Q5_0"},
                ],
                "parts": [],
                "hardware": hardware.gguf_type_hint("Q4_K_M").hardware,
                "quality": hardware.gguf_type_hint("Q4_K_M").quality,
                "imatrix": False,
                "imatrix_required": False,
                "output_type": None,
                "embedding_type": None,
                "data_free": None,
                "validation": {
                    "status": "passed",
                    "checks": _file_checks("mean 0.0412 <= 0.1, max 1.93 <= 5"),
                    "kl_mean": 0.0412,
                    "kl_max": 1.9301,
                    "top1_agreement": 0.9563,
                    "max_abs_diff": None,
                },
            },
            {
                "name": "Phi-tiny-MoE-instruct-Q8_0-00001-of-00002.gguf",
                "type": "Q8_0",
                "size_bytes": 3_992_977_408,
                "bits_per_weight": 8.502,
                "tensor_types": {"F32": 195, "Q8_0": 162},
                "fallbacks": [],
                "parts": [
                    "Phi-tiny-MoE-instruct-Q8_0-00001-of-00002.gguf",
                    "Phi-tiny-MoE-instruct-Q8_0-00002-of-00002.gguf",
                ],
                "hardware": hardware.gguf_type_hint("Q8_0").hardware,
                "quality": hardware.gguf_type_hint("Q8_0").quality,
                "imatrix": False,
                "imatrix_required": False,
                "output_type": None,
                "embedding_type": None,
                "data_free": None,
                "validation": {
                    "status": "passed",
                    "checks": _file_checks("mean 0.0017 <= 0.1, max 0.088 <= 5"),
                    "kl_mean": 0.0017,
                    "kl_max": 0.0881,
                    "top1_agreement": 0.9938,
                    "max_abs_diff": 0.7734,
                },
            },
            {
                "name": "Phi-tiny-MoE-instruct-Q4_0.gguf",
                "type": "Q4_0",
                "size_bytes": 2_139_095_040,
                "bits_per_weight": 4.554,
                "tensor_types": {"F32": 195, "Q4_0": 129, "Q6_K": 1, "Q8_0": 32},
                "fallbacks": [],
                "parts": [],
                "hardware": hardware.gguf_type_hint("Q4_0").hardware,
                "quality": hardware.gguf_type_hint("Q4_0").quality,
                "imatrix": False,
                "imatrix_required": False,
                "output_type": None,
                "embedding_type": None,
                "data_free": None,
                "validation": {
                    "status": "forced",
                    "checks": _file_checks("mean 0.1240 > 0.1", kl_status="failed"),
                    "kl_mean": 0.124,
                    "kl_max": 6.2015,
                    "top1_agreement": 0.9141,
                    "max_abs_diff": None,
                },
            },
        ],
        "reference_validation": {
            "status": "passed",
            "checks": [
                _check("tokenizer round trip", "passed", "8 prompts encode to the same ids"),
                _check("logits against transformers", "passed", "max abs diff 0.0625 <= 0.5"),
                _check("long prompt", "skipped", "the source's 4096-token window exceeds the test budget"),
            ],
            "max_abs_diff": 0.0625,
            "top1_agreement": 1.0,
            "prompts": 8,
            "greedy_match": True,
        },
        "chat_template": CHAT_TEMPLATE,
        "prompt_example": PROMPT_EXAMPLE,
        "eos_tokens": [
            {"id": 32000, "text": "<|endoftext|>"},
            {"id": 32001, "text": "<|assistant|>"},
            {"id": 32007, "text": "<|end|>"},
        ],
        "license_files": ["LICENSE"],
        "provenance": {
            "hubquant_version": "0.1.0",
            "date": "2025-06-02",
            "tool_versions": {"gguf": "0.17.1", "llama-cpp-python": "0.3.36", "transformers": "4.53.2"},
            "llama_cpp_build": "b11312",
            "llama_cpp_commit": "4b0a4ffc1b4bf06adc3e31bf1cd0d3b4c5b7e1a9",
            "options": {"imatrix": None, "keep_split": False, "max_shard_size": "2GB"},
            "command": (
                "hubquant gguf microsoft/Phi-tiny-MoE-instruct"
                " --targets gguf:Q4_K_M,gguf:Q8_0,gguf:Q4_0 --force"
            ),
        },
        "memory_guidance": hardware.memory_guidance(HARDWARE_KEYS),
        "calibration": None,
    }

