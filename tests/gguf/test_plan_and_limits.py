"""``hubquant plan``, ``--for HARDWARE`` and validation on a machine short of memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hubquant.backends import backend_names
from hubquant.hardware import targets_for
from hubquant.pipeline import JobRequest, run_job
from hubquant.targets import parse_targets

from gguf_helpers import run_cli


def _plan(hub, tmp_path, *args) -> dict:
    result = run_cli(["plan", "microsoft/Phi-3-mini-4k-instruct", *args, "--push", "--json"], hub=hub, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_plan_names_repo_and_files(hub, phi3_source, tmp_path):
    plan = _plan(hub, tmp_path, "--target", "gguf:Q4_K_M", "--target", "gguf:Q8_0")
    assert plan["sha"] == phi3_source
    release = plan["releases"][0]
    assert release["repo"].endswith("/Phi-3-mini-4k-instruct-GGUF")
    assert [item["name"] for item in release["files"]] == [
        "Phi-3-mini-4k-instruct-Q4_K_M.gguf", "Phi-3-mini-4k-instruct-Q8_0.gguf"]


def test_plan_estimates_sizes(hub, phi3_source, tmp_path):
    plan = _plan(hub, tmp_path, "--target", "gguf:Q8_0")
    estimate = plan["releases"][0]["files"][0]["estimated_bytes"]
    assert 0.8 * plan["parameters"] < estimate < 1.3 * plan["parameters"]
    assert plan["estimated_disk_bytes"] > estimate


def test_plan_estimates_memory_per_target(hub, phi3_source, tmp_path):
    plan = _plan(hub, tmp_path, "--target", "gguf:Q4_K_M", "--target", "onnx:int4", "--target", "mlx:4bit")
    parameters = plan["parameters"]
    build = plan["build_memory_bytes"]
    # GGUF works memory-mapped. The ONNX builder keeps the model twice in float32, MLX once in 16-bit.
    assert build["gguf:Q4_K_M"] == 0
    assert build["onnx:cpu-int4-rtn-block-32-acc-level-4"] == parameters * 8 + 300_000_000
    assert build["mlx:4bit"] == parameters * 2
    assert plan["estimated_memory_bytes"] == max(plan["reference_memory_bytes"], *build.values())


def test_plan_creates_nothing(hub, alice, phi3_source, tmp_path):
    _plan(hub, tmp_path, "--target", "gguf:Q2_K", "--repo-name", "planned-only")
    assert not alice.repo_exists("alice/planned-only-GGUF")


def test_plan_for_hardware_uses_table(hub, phi3_source, tmp_path):
    plan = _plan(hub, tmp_path, "--for", "phone")
    planned = [item["target"] for release in plan["releases"] for item in release["files"]]
    expected = [str(target) for target in parse_targets(targets_for(["phone"], backends=backend_names()))]
    assert planned == expected
    assert all(any(mark in target for mark in ("Q4", "IQ4", "int4", "4bit")) for target in planned)


def test_unknown_hardware_rejected(hub, phi3_source, tmp_path):
    result = run_cli(["plan", "microsoft/Phi-3-mini-4k-instruct", "--for", "toaster"], hub=hub, cwd=tmp_path)
    assert result.returncode == 2
    assert "toaster" in result.stderr


def test_low_memory_skips_reference_but_checks_file(tiny_model, tmp_path, monkeypatch):
    """Without the memory to run the source in transformers, the conversion still
    runs memory-mapped in llama.cpp, and quantized files are measured against it."""
    monkeypatch.setattr("hubquant.pipeline.available_memory", lambda: 1)
    folder = tiny_model("phi-3-mini-128k-instruct")
    result = run_job(JobRequest(source=str(folder), targets=["gguf:Q8_0", "gguf:Q2_K"], output_dir=tmp_path))
    release = result.releases[0]
    assert release.failed == {}
    checks = {check["name"]: check["status"] for check in release.validation["checks"]}
    assert checks["logits against transformers"] == "skipped"
    assert checks["rope long factors"] == "passed"
    # The tokenizer ran, so llama.cpp's tokens and EOS handling are still compared with it.
    assert checks["tokenizer agrees with transformers"] == "passed"
    assert checks["every EOS id ends generation"] == "passed"
    assert "lack of memory" in release.card
    assert "generation stops at EOS" in release.card

    manifest = json.loads((Path(release.url) / "hubquant.json").read_text())
    by_target = {entry["target"]: entry["validation"] for entry in manifest["artifacts"]}
    for target in ("gguf:Q8_0", "gguf:Q2_K"):
        quantized = {check["name"]: check["status"] for check in by_target[target]["checks"]}
        assert quantized["KL divergence to the unquantized conversion"] == "passed", by_target[target]
        assert quantized["generation stops at EOS"] == "passed"
    # Q2_K is measured, and measured as further from the conversion than Q8_0.
    assert by_target["gguf:Q2_K"]["kl_mean"] > by_target["gguf:Q8_0"]["kl_mean"] > 0


def test_low_memory_refuses_whole_model_backends_before_download(hub, alice, tiny_model, tmp_path, monkeypatch):
    """ONNX, OpenVINO and MLX load the whole model to build it, so a machine
    without that memory gets an error before any weight is downloaded."""
    from hubquant.cards import human_size
    from hubquant.errors import ResourceError
    from hubquant.tinymodels import publish_tiny_model

    repo_id = "alice/Phi-3-mini-4k-memory"
    publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id=repo_id, cache=tiny_model)
    parameters = 0
    monkeypatch.setattr("hubquant.pipeline.available_memory", lambda: 10_000_000)
    monkeypatch.setattr("hubquant.pipeline.download", lambda *args, **kwargs: pytest.fail("downloaded"))
    for target, per_parameter, base in (("onnx:int4", 8, 3e8), ("openvino:int4", 4, 3e8), ("mlx:4bit", 2, 0)):
        request = JobRequest(source=repo_id, targets=["gguf:Q8_0", target], endpoint=hub.url, token=alice.token, output_dir=tmp_path)
        with pytest.raises(ResourceError) as raised:
            run_job(request)
        message = str(raised.value)
        assert message.startswith(f"not enough memory for {parse_targets([target])[0]}: ")
        assert "10.0 MB are free" in message
        assert "choose gguf: targets" in message
        parameters = parameters or alice.get_safetensors_metadata(repo_id).parameter_count["BF16"]
        assert f"at least {human_size(int(parameters * per_parameter + base))}, " in message
        assert parameters * per_parameter + base > 10_000_000


def test_memory_check_can_be_turned_off(tiny_model, tmp_path, monkeypatch):
    from hubquant.resources import check_memory
    from hubquant.targets import parse_targets

    monkeypatch.setattr("hubquant.pipeline.available_memory", lambda: 1)
    monkeypatch.setattr("hubquant.pipeline.check_memory", lambda *args: pytest.fail("checked"))
    folder = tiny_model("phi-3-mini-4k-instruct")
    result = run_job(JobRequest(source=str(folder), targets=["gguf:Q8_0"], output_dir=tmp_path, check_memory=False))
    assert result.ok
    # GGUF alone never needs the whole model in memory.
    check_memory(10**12, parse_targets(["gguf:Q4_K_M", "gguf:F16"]), 1)
