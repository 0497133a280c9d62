"""onnx:int4-gptq: GPTQ from onnxruntime's MatMulNBitsQuantizer on a copy of the
fp32 CPU variant, fed with hubquant's calibration text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hubquant.backends.onnx import parse_variant

FOLDER = "cpu-int4-gptq-block-32-acc-level-4"
SOURCE = "alice/calibration-source-onnx"


@pytest.fixture(scope="module")
def gptq_release(hub_release) -> Path:
    """The job from the local Hub, pushed back, then downloaded fresh."""
    return hub_release(SOURCE, ["onnx:int4-gptq"])


def _entry(release: Path) -> dict:
    return json.loads((release / "hubquant.json").read_text())["artifacts"][0]


def test_gptq_variant_name():
    variant = parse_variant("int4-gptq-block-64-asym")
    assert variant.name == "cpu-int4-gptq-block-64-acc-level-4-asym"
    assert variant.data_aware
    assert variant.data_free().name == "cpu-int4-rtn-block-64-acc-level-4-asym"
    assert not variant.data_free().data_aware


def test_gptq_release_runs_after_download(gptq_release, onnx_toolchain):
    from hubquant import toolchains

    described = toolchains.run_step(onnx_toolchain, "onnx", {"op": "describe", "folder": str(gptq_release / FOLDER)}).data
    assert described["quantized_nodes"]


def test_gptq_folder_is_self_contained(gptq_release):
    names = {path.name for path in (gptq_release / FOLDER).iterdir()}
    for name in ("model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json", "chat_template.jinja"):
        assert name in names, name


def test_gptq_graph_is_4_bit(gptq_release):
    quantization = _entry(gptq_release)["facts"]["quantization"]
    assert quantization["bits"] == [4]
    assert quantization["block_size"] == 32
    assert quantization["accuracy_level"] == 4
    assert quantization["symmetric"] is True


def test_gptq_ran_and_validated(gptq_release):
    entry = _entry(gptq_release)
    statuses = {check["name"]: check["status"] for check in entry["validation"]["checks"]}
    assert entry["validation"]["status"] == "passed"
    assert statuses["KL divergence to the fp32 variant"] == "passed"
    assert statuses["generation stops at EOS"] == "passed"


def test_gptq_facts_and_comparison(gptq_release):
    facts = _entry(gptq_release)["facts"]
    assert facts["calibration"]["method"] == "gptq"
    assert facts["calibration"]["rows"] >= 1
    assert facts["calibration"]["license"] == "cc0-1.0"
    assert facts["data_free"]["target"] == "onnx:cpu-int4-rtn-block-32-acc-level-4"
    assert facts["data_free"]["kl_mean"] != _entry(gptq_release)["validation"]["kl_mean"]


def test_gptq_card_describes_method(gptq_release):
    card = (gptq_release / "README.md").read_text()
    assert "was quantized with GPTQ, not by the builder" in card
    assert "hubquant's own public-domain calibration corpus" in card
    assert "the builder's round-to-nearest variant with the same settings (`onnx:cpu-int4-rtn-block-32-acc-level-4`" in card
