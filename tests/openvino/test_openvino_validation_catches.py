"""Validation must fail on broken OpenVINO releases, each for the right reason."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest

from hubquant.backends.base import BuildContext
from hubquant.backends.openvino import PRECISIONS, OpenvinoBackend, resolve_compression
from hubquant.backends.openvino_checks import check_files, check_rope_factors, validate_quantized, validate_unquantized
from hubquant.progress import Reporter
from hubquant.reference import compute_reference
from hubquant.source import chat_template_of, inspect_folder
from hubquant.validation import ValidationReport

FP16 = resolve_compression("fp16", [])
CORRUPTED_WEIGHT = "self.model.layers.0.mlp.down_proj._openvino_orig_weight"


@pytest.fixture(scope="module")
def exported(tiny_model, openvino_toolchain, tmp_path_factory):
    """An fp16 export of the tiny Phi-3-mini, its reference and its own logits."""
    folder = tiny_model("phi-3-mini-4k-instruct")
    work = tmp_path_factory.mktemp("catch")
    source = inspect_folder(folder)
    reference = compute_reference(folder, work / "reference", has_chat_template=chat_template_of(folder) is not None)
    context = BuildContext(source=source, reference=reference, work_dir=work, reporter=Reporter(), max_file_bytes=10**12)
    backend = OpenvinoBackend()
    ir, described, _ = backend._export(openvino_toolchain, work, "fp16", folder, FP16)
    evaluation = backend._evaluate(openvino_toolchain, ir, context, work / "eval-intact", None)
    return backend, context, ir, described, evaluation, work


def _copy(exported, name: str) -> Path:
    ir, work = exported[2], exported[5]
    copy = work / name
    shutil.copytree(ir, copy)
    return copy


def _failures(report: ValidationReport) -> set[str]:
    return {check.name for check in report.failures}


def test_intact_export_passes(exported):
    _, context, ir, described, evaluation, _ = exported
    report = validate_unquantized(context, PRECISIONS["fp16"], ir, described, evaluation, FP16)
    assert _failures(report) == set()


def test_dropped_eos_and_changed_template_fail(exported, openvino_toolchain):
    backend, context, _, described, _, work = exported
    copy = _copy(exported, "tampered-config")
    config_file = copy / "generation_config.json"
    config = json.loads(config_file.read_text())
    config["eos_token_id"] = 32000
    config_file.write_text(json.dumps(config))
    (copy / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    evaluation = backend._evaluate(openvino_toolchain, copy, context, work / "eval-config", None)
    failed = _failures(validate_unquantized(context, PRECISIONS["fp16"], copy, described, evaluation, FP16))
    assert "generation stops at EOS (optimum-intel)" in failed
    assert "generation stops at EOS (openvino-genai)" in failed
    assert "chat template (HF tokenizer)" in failed
    # The OpenVINO tokenizer keeps its own copy of the template.
    assert "chat template (OpenVINO tokenizer)" not in failed
    assert "logits match transformers" not in failed


@pytest.fixture(scope="module")
def corrupted(exported):
    copy = _copy(exported, "corrupted-weight")
    layer = next(
        element for element in ElementTree.parse(copy / "openvino_model.xml").getroot().iter("layer")
        if element.get("name") == CORRUPTED_WEIGHT
    )  # fmt: skip
    data = layer.find("data")
    values = np.random.default_rng(0).standard_normal(int(data.get("size")) // 2).astype(np.float16)
    with open(copy / "openvino_model.bin", "r+b") as handle:
        handle.seek(int(data.get("offset")))
        handle.write(values.tobytes())
    return copy


def test_corrupted_weight_fails_against_transformers(exported, corrupted, openvino_toolchain):
    backend, context, _, described, _, work = exported
    evaluation = backend._evaluate(openvino_toolchain, corrupted, context, work / "eval-corrupted", None)
    failed = _failures(validate_unquantized(context, PRECISIONS["fp16"], corrupted, described, evaluation, FP16))
    assert "logits match transformers" in failed


def test_corrupted_weight_fails_against_unquantized(exported, corrupted, openvino_toolchain):
    backend, context, _, described, intact, work = exported
    against = {prompt["id"]: prompt["logits_path"] for prompt in intact["prompts"]}
    evaluation = backend._evaluate(openvino_toolchain, corrupted, context, work / "eval-corrupted-q", against)
    # Judged by the loosest quantized limits, those of int4.
    int4 = resolve_compression("int4", [])
    report = validate_quantized(context, PRECISIONS["int4"], corrupted, described, evaluation, int4)
    assert "KL divergence to the unquantized IR" in _failures(report)


def test_missing_detokenizer_fails(exported):
    copy = _copy(exported, "no-detokenizer")
    (copy / "openvino_detokenizer.xml").unlink()
    report = ValidationReport()
    check_files(report, exported[1], copy)
    assert report.failures[0].detail == "missing: openvino_detokenizer.xml"


def test_missing_rope_factors_fail(tiny_model):
    source = inspect_folder(tiny_model("phi-3-mini-128k-instruct"))
    context = BuildContext(source=source, reference=None, work_dir=Path("."), reporter=Reporter(), max_file_bytes=0)
    report = ValidationReport()
    check_rope_factors(report, context, {"float_vectors": []})
    assert _failures(report) == {"rope long factors", "rope short factors"}


def test_bf16_inference_fails_precision_check(exported):
    """An evaluation compiled at bf16 (the default on CPUs with bf16 units) is rejected."""
    _, context, ir, described, evaluation, _ = exported
    assert evaluation["inference_precision"] == "f32"
    at_bf16 = {**evaluation, "inference_precision": "bf16"}
    report = validate_unquantized(context, PRECISIONS["fp16"], ir, described, at_bf16, FP16)
    assert _failures(report) == {"inference precision"}
    assert "infers in bf16, not f32" in report.summary()


def _cpu_has_bf16() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


@pytest.mark.skipif(not _cpu_has_bf16(), reason="the CPU has no bf16 units, so OpenVINO cannot infer in bf16 here")
def test_worker_reports_compiled_precision(exported, openvino_toolchain):
    """The precision comes from the compiled model, not from the hint hubquant requested."""
    from hubquant.backends import openvino as openvino_backend

    backend, context, ir, described, _, work = exported
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(openvino_backend, "VALIDATION_RUNTIME_CONFIG",
                      {**openvino_backend.VALIDATION_RUNTIME_CONFIG, "INFERENCE_PRECISION_HINT": "bf16"})
        evaluation = backend._evaluate(openvino_toolchain, ir, context, work / "eval-bf16", None)
    assert evaluation["inference_precision"] == "bf16"
    report = validate_unquantized(context, PRECISIONS["fp16"], ir, described, evaluation, FP16)
    assert "inference precision" in _failures(report)


def test_wrong_long_factors_fail_past_the_original_context(tiny_model, openvino_toolchain, tmp_path):
    """The IR's long rope factors are checked by running it past the original
    context: compared with a source whose long factors differ, the short prompts
    still pass and the long one fails."""
    folder = tiny_model("phi-3.5-mini-instruct")
    altered = tmp_path / "altered-source"
    shutil.copytree(folder, altered)
    config = json.loads((altered / "config.json").read_text())
    scaling = config["rope_scaling"]
    scaling["long_factor"] = list(scaling["short_factor"])
    (altered / "config.json").write_text(json.dumps(config))

    backend = OpenvinoBackend()
    ir, described, _ = backend._export(openvino_toolchain, tmp_path, "fp16", folder, FP16)
    for source_folder, expect_pass in ((folder, True), (altered, False)):
        source = inspect_folder(source_folder)
        reference = compute_reference(
            source_folder, tmp_path / f"reference-{source_folder.name}", has_chat_template=True, config=source.config
        )
        assert len(reference.long_prompt.input_ids) == 4096 + 16
        context = BuildContext(source=source, reference=reference, work_dir=tmp_path, reporter=Reporter(), max_file_bytes=10**12)
        evaluation = backend._evaluate(openvino_toolchain, ir, context, tmp_path / f"eval-{source_folder.name}", None)
        report = validate_unquantized(context, PRECISIONS["fp16"], ir, described, evaluation, FP16)
        statuses = {check.name: check.status == "passed" for check in report.checks}
        assert statuses["logits match transformers"], report.summary()
        assert statuses["past the original context"] is expect_pass, report.summary()
    assert report.metrics["long_prompt_max_abs_diff"] > 5
