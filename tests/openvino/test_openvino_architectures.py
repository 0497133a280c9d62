"""Each tiny Phi-family architecture exports to fp16 and matches transformers in
both runtimes, keeping rope factors, chat template and every EOS id."""

from __future__ import annotations

import pytest

from openvino_helpers import check_statuses, local_job, staged_manifest

# Phi-3.5-mini (LongRoPE, template only in chat_template.jinja) and plain
# Phi-3-mini run in the release and trap tests.
MODELS = {
    # rope_scaling type "su", LongRoPE's first spelling (May 2024).
    "phi-3-mini-128k-instruct-2024-05": {"rope": True, "eos": [32000, 32001, 32007], "weights": 10},
    # Partial rotary factor 0.75, tied embeddings without lm_head (one shared
    # weight), LongRoPE.
    "phi-4-mini-instruct": {"rope": True, "eos": [199999, 200020], "weights": 9},
    "phi-4": {"rope": False, "eos": [100257, 100265], "weights": 10},
    # Per layer: q, k, v, o, router, the fused experts' gate and up halves and
    # down; plus the embedding and lm_head.
    "phi-tiny-moe-instruct": {"rope": False, "eos": [32000, 32001, 32007], "weights": 18},
    "phi-2": {"rope": False, "eos": [50256], "weights": 14},
}


@pytest.mark.parametrize("name", list(MODELS))
def test_model_exports_and_validates(name, tiny_model, tmp_path):
    result = local_job(tiny_model(name), ["openvino:fp16"], tmp_path)
    release = result.releases[0]
    assert release.failed == {}
    statuses = check_statuses(release.validation)
    for check in (
        "weight format",
        "logits match transformers",
        "top-1 agreement with transformers",
        "greedy continuation in optimum-intel",
        "greedy continuation in openvino-genai",
        "OpenVINO tokenizer agrees with transformers",
        "chat template (HF tokenizer)",
        "chat template (OpenVINO tokenizer)",
        "generation stops at EOS (optimum-intel)",
        "generation stops at EOS (openvino-genai)",
        "openvino-genai agrees with optimum-intel",
    ):
        assert statuses[check] == "passed", check
    if MODELS[name]["rope"]:
        assert statuses["rope long factors"] == "passed"
        assert statuses["rope short factors"] == "passed"
    facts = staged_manifest(release)["artifacts"][0]["facts"]
    assert facts["weight_formats"] == {"fp16": MODELS[name]["weights"]}
    eos_check = next(check for check in release.validation["checks"] if check["name"] == "generation stops at EOS (optimum-intel)")
    assert str(MODELS[name]["eos"]) in eos_check["detail"]



def test_phimoe_int4_compresses_experts(tiny_model, tmp_path):
    """NNCF compresses PhiMoE's fused expert weights like the other weights."""
    result = local_job(tiny_model("phi-tiny-moe-instruct"), ["openvino:int4"], tmp_path)
    release = result.releases[0]
    assert release.failed == {}
    artifact = staged_manifest(release)["artifacts"][0]
    statuses = check_statuses(artifact["validation"])
    assert statuses["KL divergence to the unquantized IR"] == "passed"
    formats = artifact["facts"]["weight_formats"]
    assert sum(formats.values()) == MODELS["phi-tiny-moe-instruct"]["weights"]
    assert formats == {"int4_asym": 16, "int8_asym": 2}
