"""Variants for every provider the pinned builder offers, built in one job on the
tiny Phi-3. The CPU fp16 variant runs here, the DirectML, WebGPU and
TensorRT-RTX ones are checked as graphs, and the card states which is which."""

from __future__ import annotations

import json

import pytest

from hubquant.backends.onnx import variant_hardware
from hubquant.cards import hardware_name, human_size
from hubquant.pipeline import JobRequest, run_job

TARGETS = ["onnx:fp16", "onnx:dml-int4", "onnx:webgpu-int4", "onnx:trt-rtx-fp16"]
FOLDERS = {
    "cpu-fp16": ("cpu", "fp16"),
    "dml-int4-rtn-block-32": ("dml", "int4"),
    "webgpu-int4-rtn-block-32-acc-level-4": ("webgpu", "int4"),
    "trt-rtx-fp16": ("trt-rtx", "fp16"),
}


@pytest.fixture(scope="module")
def providers_release(tiny_model, onnx_toolchain, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx-providers")
    result = run_job(JobRequest(source=str(tiny_model("phi-3-mini-4k-instruct")), targets=TARGETS, output_dir=out))
    release = result.releases[0]
    folder = out / release.repo_id
    manifest = json.loads((folder / "hubquant.json").read_text())
    artifacts = {entry["facts"]["folder"]: entry for entry in manifest["artifacts"]}
    return result, artifacts, (folder / "README.md").read_text()


def _statuses(entry: dict) -> dict[str, str]:
    return {check["name"]: check["status"] for check in entry["validation"]["checks"]}


def test_every_provider_variant_published(providers_release):
    result, artifacts, _ = providers_release
    assert result.ok, result.releases[0].failed
    assert sorted(artifacts) == sorted(FOLDERS)


def test_cpu_fp16_runs_here(providers_release):
    _, artifacts, _ = providers_release
    statuses = _statuses(artifacts["cpu-fp16"])
    assert "runs in onnxruntime-genai" not in statuses
    assert statuses["tokenizer agrees with transformers"] == "passed"
    assert statuses["generation stops at EOS"] == "passed"
    kl_checks = [name for name in statuses if name.startswith("KL divergence")]
    assert kl_checks
    assert all(statuses[name] == "passed" for name in kl_checks)
    assert artifacts["cpu-fp16"]["facts"]["io_types"] == {"kv_cache": "FLOAT16", "logits": "FLOAT16"}


@pytest.mark.parametrize("folder", ["dml-int4-rtn-block-32", "webgpu-int4-rtn-block-32-acc-level-4", "trt-rtx-fp16"])
def test_other_providers_checked_as_graphs(providers_release, folder):
    _, artifacts, _ = providers_release
    statuses = _statuses(artifacts[folder])
    assert statuses["graph passes the ONNX checker"] == "passed"
    assert statuses["input and output types"] == "passed"
    assert statuses["genai_config.json provider"] == "passed"
    assert statuses["runs in onnxruntime-genai"] == "skipped"


def test_operator_check_per_provider(providers_release):
    _, artifacts, _ = providers_release
    assert _statuses(artifacts["dml-int4-rtn-block-32"])["operators implemented by the DirectML execution provider"] == "passed"
    # ONNX Runtime publishes no kernel list for these two, as the card states.
    assert _statuses(artifacts["webgpu-int4-rtn-block-32-acc-level-4"])["operators implemented by the WebGPU execution provider"] == "skipped"
    assert _statuses(artifacts["trt-rtx-fp16"])["operators implemented by the NVIDIA TensorRT-RTX execution provider"] == "skipped"


def test_card_rows_name_hardware_and_runs(providers_release):
    _, _, card = providers_release
    table = card.split("## Variants", 1)[1].split("###", 1)[0]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ") and line.split("|")[1].strip() in FOLDERS}
    assert sorted(rows) == sorted(FOLDERS)
    for folder, (provider, precision) in FOLDERS.items():
        cells = [cell.strip() for cell in rows[folder].split("|")[1:-1]]
        assert cells[5] == ", ".join(hardware_name(key) for key in variant_hardware(provider, precision))
        assert cells[6] == ("yes, on the CPU" if provider == "cpu" else "no, structural checks only")
    assert "**Not run:** dml-int4-rtn-block-32, webgpu-int4-rtn-block-32-acc-level-4, trt-rtx-fp16 were built for" in card


def test_card_lists_each_file_with_its_size(providers_release):
    _, artifacts, card = providers_release
    for folder, entry in artifacts.items():
        for name, size in entry["facts"]["file_sizes"].items():
            assert f"| {folder} | `{name}` | {human_size(size)} |" in card
