"""``hubquant plan``, ``--for HARDWARE`` and validation on a machine short of memory."""

from __future__ import annotations

import json


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
    monkeypatch.setattr("hubquant.pipeline.available_memory", lambda: 1)
    folder = tiny_model("phi-3-mini-128k-instruct")
    result = run_job(JobRequest(source=str(folder), targets=["gguf:Q8_0"], output_dir=tmp_path))
    release = result.releases[0]
    assert release.failed == {}
    checks = {check["name"]: check["status"] for check in release.validation["checks"]}
    assert checks["logits against transformers"] == "skipped"
    assert checks["rope long factors"] == "passed"
    assert "lack of memory" in release.card
    assert "generation stops at EOS" in release.card
