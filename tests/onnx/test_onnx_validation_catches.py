"""The checks fail on broken variants: wrong weights, runaway generation,
different tokenization, graphs not built for their provider, and a failed
variant is not published."""

from __future__ import annotations

import copy
import dataclasses
import re
import shutil

import pytest

from hubquant import toolchains
from hubquant.backends import onnx as onnx_backend
from hubquant.backends.onnx import parse_variant
from hubquant.backends.onnx_checks import check_against_source, check_runtime, check_structure, prompt_requests
from hubquant.reference import compute_reference
from hubquant.validation import ValidationReport

from onnx_helpers import checks_of, local_job


@pytest.fixture(scope="module")
def phi3_reference(tiny_model, tmp_path_factory):
    """Reference outputs of the tiny Phi-3 that the release was built from."""
    folder = tiny_model("phi-3-mini-4k-instruct")
    return compute_reference(folder, tmp_path_factory.mktemp("reference"), has_chat_template=True)


def _evaluate(toolchain, folder, reference, out_dir, eos_ids=None) -> dict:
    return toolchains.run_step(
        toolchain,
        "onnx",
        {
            "op": "evaluate",
            "folder": str(folder),
            "prompts": prompt_requests(reference, None),
            "eos_ids": reference.eos_ids if eos_ids is None else eos_ids,
            "max_new_tokens": reference.max_new_tokens,
            "out_dir": str(out_dir),
        },
    ).data


@pytest.fixture(scope="module")
def fp32_evaluation(phi3_onnx_download, onnx_toolchain, phi3_reference, tmp_path_factory) -> dict:
    # A token that is no EOS id is forced too: generation must go on after it.
    eos_ids = [*phi3_reference.eos_ids, 450]
    return _evaluate(onnx_toolchain, phi3_onnx_download / "cpu-fp32", phi3_reference, tmp_path_factory.mktemp("eval"), eos_ids)


def test_published_fp32_passes(fp32_evaluation, phi3_reference):
    report = ValidationReport()
    check_against_source(report, fp32_evaluation, phi3_reference, onnx_backend.FP32_LOGIT_LIMIT, onnx_backend.FP32_TOP1_MIN)
    assert report.passed, report.summary()


def test_corrupted_weights_fail(phi3_onnx_download, onnx_toolchain, phi3_reference, tmp_path):
    folder = tmp_path / "cpu-fp32"
    shutil.copytree(phi3_onnx_download / "cpu-fp32", folder)
    data = folder / "model.onnx.data"
    raw = bytearray(data.read_bytes())
    # Flip an exponent bit of every float32 in the second half, which
    # multiplies or divides each of those weights by 4.
    for offset in range((len(raw) // 2) // 4 * 4 + 3, len(raw), 4):
        raw[offset] ^= 0x01
    data.write_bytes(bytes(raw))
    evaluation = _evaluate(onnx_toolchain, folder, phi3_reference, tmp_path / "eval")
    report = ValidationReport()
    check_against_source(report, evaluation, phi3_reference, onnx_backend.FP32_LOGIT_LIMIT, onnx_backend.FP32_TOP1_MIN)
    assert checks_of(report.to_dict())["logits match transformers"] == "failed"


def test_non_eos_token_does_not_stop(fp32_evaluation, phi3_reference):
    reference = dataclasses.replace(phi3_reference, eos_ids=[*phi3_reference.eos_ids, 450])
    report = ValidationReport()
    check_runtime(report, fp32_evaluation, reference)
    check = next(check for check in report.checks if check.name == "generation stops at EOS")
    assert check.status == "failed"
    assert check.detail == "generation does not stop on EOS ids [450]"


def test_tokenizer_mismatch_detected(fp32_evaluation, phi3_reference):
    prompts = [dataclasses.replace(prompt) for prompt in phi3_reference.prompts]
    prompts[0].input_ids = [1, *prompts[0].input_ids]
    reference = dataclasses.replace(phi3_reference, prompts=prompts)
    report = ValidationReport()
    check_runtime(report, fp32_evaluation, reference)
    assert checks_of(report.to_dict())["tokenizer agrees with transformers"] == "failed"


# --- structural checks on a real description, edited -------------------------


@pytest.fixture(scope="module")
def cuda_description(phi3_onnx_download, onnx_toolchain) -> dict:
    return toolchains.run_step(onnx_toolchain, "onnx", {"op": "describe", "folder": str(phi3_onnx_download / "cuda-fp16")}).data


@pytest.fixture(scope="module")
def int4_description(phi3_onnx_download, onnx_toolchain) -> dict:
    folder = phi3_onnx_download / "cpu-int4-rtn-block-32-acc-level-4"
    return toolchains.run_step(onnx_toolchain, "onnx", {"op": "describe", "folder": str(folder)}).data


class _Context:
    def __init__(self, source, reference):
        self.source = source
        self.reference = reference


@pytest.fixture(scope="module")
def context(tiny_model, phi3_reference):
    from hubquant.source import inspect_folder

    return _Context(inspect_folder(tiny_model("phi-3-mini-4k-instruct")), phi3_reference)


UNTIED = {"tie_word_embeddings": False}


def _structure(described, target, context, source_facts=UNTIED) -> dict[str, str]:
    report = ValidationReport()
    check_structure(report, described, parse_variant(target), context, source_facts)
    return checks_of(report.to_dict())


def test_real_variants_pass_structure(cuda_description, int4_description, context):
    assert set(_structure(cuda_description, "cuda-fp16", context).values()) == {"passed"}
    assert set(_structure(int4_description, "int4", context).values()) == {"passed"}


def test_cuda_attention_in_fp32_rejected(cuda_description, context):
    described = copy.deepcopy(cuda_description)
    for entry in described["node_types"]:
        if entry["op"] == "GroupQueryAttention":
            entry["type"] = "FLOAT"
    assert _structure(described, "cuda-fp16", context)["operators implemented by the CUDA execution provider"] == "failed"


def test_directml_quantized_gather_rejected(cuda_description, context):
    described = copy.deepcopy(cuda_description)
    described["node_types"].append({"domain": "com.microsoft", "op": "GatherBlockQuantized", "type": "FLOAT16"})
    described["genai_config"]["providers"] = ["dml"]
    checks = _structure(described, "dml-fp16", context)
    assert checks["operators implemented by the DirectML execution provider"] == "failed"
    assert checks["genai_config.json provider"] == "passed"


def test_cpu_graph_as_cuda_rejected(int4_description, context):
    checks = _structure(int4_description, "cuda-int4", context)
    assert checks["genai_config.json provider"] == "failed"
    assert checks["input and output types"] == "failed"
    assert checks["quantization matches the request"] == "failed"


def test_shared_embeddings_on_untied_source_rejected(int4_description, context):
    described = copy.deepcopy(int4_description)
    described["shared_embeddings"] = True
    assert _structure(described, "int4", context)["embedding and LM head weights"] == "failed"
    assert _structure(described, "int4", context, {"tie_word_embeddings": True})["embedding and LM head weights"] == "passed"


def test_other_block_size_rejected(int4_description, context):
    assert _structure(int4_description, "int4-block-64", context)["quantization matches the request"] == "failed"
    assert _structure(int4_description, "int4-asym", context)["quantization matches the request"] == "failed"
    assert _structure(int4_description, "int4-lm-head-float", context)["quantization matches the request"] == "failed"
    assert _structure(int4_description, "int4-embeds-int4", context)["quantization matches the request"] == "failed"


def test_missing_eos_id_rejected(int4_description, context):
    described = copy.deepcopy(int4_description)
    described["genai_config"]["eos_token_id"] = [32000]
    assert _structure(described, "int4", context)["genai_config.json EOS ids"] == "failed"


def test_changed_chat_template_rejected(int4_description, context):
    described = copy.deepcopy(int4_description)
    described["chat_template"] = described["chat_template"] + " "
    assert _structure(described, "int4", context)["chat template"] == "failed"


def test_missing_weights_file_rejected(int4_description, context):
    described = copy.deepcopy(int4_description)
    del described["files"]["model.onnx.data"]
    assert _structure(described, "int4", context)["folder is self-contained"] == "failed"


def test_failed_variants_not_published(tiny_model, tmp_path, monkeypatch):
    """int8 fails validation, fp32 (77 MB of weights) is over the file limit, int4 is published."""
    monkeypatch.setitem(onnx_backend.KL_LIMITS, "int8", (-1.0, 2.0))
    targets = ["onnx:fp32", "onnx:int8", "onnx:int4"]
    result = local_job(tiny_model("phi-3-mini-4k-instruct"), targets, tmp_path, max_file_bytes=60_000_000)
    release = result.releases[0]
    assert "validation failed" in release.failed["onnx:cpu-int8-rtn-block-32-acc-level-4"]
    assert re.search(r"cpu-fp32/model\.onnx\.data is 7\d\.\d MB, over the limit of 60\.0 MB", release.failed["onnx:cpu-fp32"])
    assert release.targets == ["onnx:cpu-int4-rtn-block-32-acc-level-4"]
    staged = sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*") if path.is_file())
    assert any(name.endswith("-onnx/cpu-int4-rtn-block-32-acc-level-4/model.onnx.data") for name in staged)
    assert not any("int8" in name or "cpu-fp32" in name for name in staged)
