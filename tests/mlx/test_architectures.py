"""Phi-4, phi-2 and PhiMoE convert and validate against transformers; recipes
mlx-lm cannot apply and architectures it was not checked on are rejected."""

from __future__ import annotations

import pytest

from hubquant import toolchains
from hubquant.errors import SourceError, ToolchainError
from hubquant.pipeline import JobRequest, run_job

from mlx_helpers import build_direct, checks_of, reference_for

MODELS = {
    "phi-4": ["8bit"],
    "phi-2": ["8bit"],
    "phi-tiny-moe-instruct": ["8bit", "bf16"],
}
# Targets each model must fail, with the start of the reason.
EXPECTED_FAILURES = {
    "phi-tiny-moe-instruct": {"mlx:bf16": "MLX's CPU build (mlx-cpu 0.32.4) runs unquantized PhiMoEForCausalLM experts only in float32"},
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def built(request, tiny_model, tmp_path_factory):
    folder = tiny_model(request.param)
    work = tmp_path_factory.mktemp(f"arch-{request.param}")
    release = build_direct(folder, MODELS[request.param], work, reference_for(folder, work))
    return request.param, release


def test_model_converts_and_validates(built):
    name, release = built
    expected_failures = EXPECTED_FAILURES.get(name, {})
    assert set(release.failed) == set(expected_failures), release.failed
    for target, reason in expected_failures.items():
        assert release.failed[target].startswith(reason), release.failed[target]
    built_targets = [f"mlx:{p}" for p in MODELS[name] if f"mlx:{p}" not in expected_failures]
    assert [str(artifact.target) for artifact in release.artifacts] == built_targets
    artifact = release.artifacts[0]
    assert artifact.validation.passed, artifact.validation.summary()


def test_source_run_matches_transformers(built):
    _, release = built
    source = release.facts["reference_validation"]
    checks = checks_of(source)
    assert checks["logits match transformers"] == "passed"
    assert checks["greedy continuation"] == "passed"
    assert checks["tokenizer agrees with transformers"] == "passed"
    assert source["max_abs_diff"] < 1e-3


def test_release_checks_pass(built):
    _, release = built
    checks = checks_of(release.artifacts[0].validation.to_dict())
    for name in ("loads and runs in mlx-lm", "KL divergence to the unquantized conversion", "tokenizer agrees with transformers",
                 "layers load as converted", "rope settings", "chat template", "EOS ids in config",
                 "every EOS id ends generation", "generation stops at EOS"):  # fmt: skip
        assert checks[name] == "passed", name


def test_phi2_rejects_mixed_recipe(tiny_model, mlx_toolchain, tmp_path):
    request = {
        "op": "convert",
        "source_dir": str(tiny_model("phi-2")),
        "out_dir": str(tmp_path / "out"),
        "dtype": "bfloat16",
        "quantization": {"mode": "affine", "bits": 3, "group_size": 64, "recipe": "mixed_3_6"},
    }
    with pytest.raises(ToolchainError, match="cannot apply the mixed recipe mixed_3_6: Model does not have expected keys"):
        toolchains.run_step(mlx_toolchain, "mlx", request)


def test_phi2_mixed_recipe_rejected_up_front(tiny_model, tmp_path, monkeypatch):
    from hubquant.backends.mlx import MlxBackend

    def no_build(*args, **kwargs):
        raise AssertionError("the job started building")

    monkeypatch.setattr(MlxBackend, "build", no_build)
    request = JobRequest(source=str(tiny_model("phi-2")), targets=["mlx:4bit", "mlx:mixed_3_6"], output_dir=tmp_path)
    with pytest.raises(SourceError, match=r"mlx:mixed_3_6: mlx-lm 0.32.2's mixed recipes pick layers by names .* choose a single bit width"):
        run_job(request)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_phimoe_unquantized_rejected_up_front(tiny_model, tmp_path, monkeypatch, precision):
    from hubquant.backends.mlx import MlxBackend

    def no_build(*args, **kwargs):
        raise AssertionError("the job started building")

    monkeypatch.setattr(MlxBackend, "build", no_build)
    request = JobRequest(source=str(tiny_model("phi-tiny-moe-instruct")), targets=[f"mlx:{precision}"], output_dir=tmp_path)
    with pytest.raises(SourceError, match=f"mlx:{precision}: MLX's CPU build, the one used on linux, runs unquantized PhiMoEForCausalLM experts only in float32"):
        run_job(request)


def test_unchecked_architecture_rejected_before_work(tiny_model, tmp_path):
    folder = tiny_model("phi-3-mini-4k-instruct", config_overrides={"architectures": ["LlamaForCausalLM"]})
    request = JobRequest(source=str(folder), targets=["mlx:4bit"], output_dir=tmp_path)
    with pytest.raises(SourceError, match="mlx backend does not support architecture LlamaForCausalLM; supported: Phi3ForCausalLM, PhiForCausalLM, PhiMoEForCausalLM"):
        run_job(request)


def test_unsupported_rope_type_fails_target(tiny_model, tmp_path):
    folder = tiny_model("phi-2", config_overrides={"rope_scaling": {"type": "linear", "factor": 2.0}})
    release = build_direct(folder, ["8bit"], tmp_path, None)
    assert release.artifacts == []
    assert "RoPE type 'linear', which mlx-lm 0.32.2 does not implement for PhiForCausalLM" in release.failed["mlx:8bit"]
