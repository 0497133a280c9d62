"""Builder options users pick in the target, built end to end: the graph the
builder wrote must show each option, and the variant must still validate."""

from __future__ import annotations

import json

import pytest

from hubquant.pipeline import JobRequest, run_job

FOLDER = "cpu-int4-kquant-block-64-acc-level-1-asym-lm-head-int8"


@pytest.fixture(scope="module")
def options_release(tiny_model, onnx_toolchain, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx-options")
    folder = tiny_model("phi-3-mini-4k-instruct")
    targets = ["onnx:int4-kquant-block-64-acc-level-1-asym-lm-head-int8", "onnx:int4-lm-head-float"]
    result = run_job(JobRequest(source=str(folder), targets=targets, output_dir=out))
    release = result.releases[0]
    manifest = json.loads((out / release.repo_id / "hubquant.json").read_text())
    return result, {entry["facts"]["folder"]: entry for entry in manifest["artifacts"]}


def test_option_variants_validate(options_release):
    result, artifacts = options_release
    assert result.ok, result.releases[0].failed
    assert sorted(artifacts) == sorted([FOLDER, "cpu-int4-rtn-block-32-acc-level-4-lm-head-float"])
    for entry in artifacts.values():
        assert entry["validation"]["status"] == "passed", entry["validation"]


def test_graph_shows_block_accuracy_asymmetry_and_head(options_release):
    _, artifacts = options_release
    quantization = artifacts[FOLDER]["facts"]["quantization"]
    assert quantization["block_size"] == 64
    assert quantization["accuracy_level"] == 1
    assert quantization["symmetric"] is False
    assert quantization["lm_head_bits"] == 8
    assert quantization["bits"] == [4, 8]


def test_float_lm_head_left_unquantized(options_release):
    _, artifacts = options_release
    quantization = artifacts["cpu-int4-rtn-block-32-acc-level-4-lm-head-float"]["facts"]["quantization"]
    assert quantization["lm_head_bits"] is None
    assert "lm_head" not in quantization["matrices"]
    assert quantization["bits"] == [4]


def test_unvalidated_run_builds_no_fp32(tiny_model, tmp_path, monkeypatch):
    """Benchmarks turn validation off. The fp32 CPU variant, built only to
    compare the others with, is then skipped."""
    from hubquant.backends.onnx import OnnxBackend

    built = []
    original = OnnxBackend._build_variant

    def recording(self, context, toolchain, variant, root, source_facts):
        built.append(variant.name)
        return original(self, context, toolchain, variant, root, source_facts)

    monkeypatch.setattr(OnnxBackend, "_build_variant", recording)
    folder = tiny_model("phi-3-mini-4k-instruct")
    result = run_job(JobRequest(source=str(folder), targets=["onnx:int4"], output_dir=tmp_path, validate=False))
    assert result.ok, result.releases[0].failed
    assert built == ["cpu-int4-rtn-block-32-acc-level-4"]
