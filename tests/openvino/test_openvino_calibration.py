"""Data-aware int4 compression: NNCF's AWQ, scale estimation, GPTQ and
sensitivity metrics, fed with hubquant's calibration text and never a Hub
data set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hubquant.backends.openvino import resolve_compression
from hubquant.errors import UsageError
from hubquant.targets import parse_target

from openvino_helpers import check_statuses, local_job, staged_manifest

DATA_AWARE = "openvino:int4:awq=true,scale-estimation=true,sensitivity-metric=max_activation_variance,ratio=0.8,sym=true"


SOURCE = "alice/calibration-source-openvino"


@pytest.fixture(scope="module")
def release(hub_release) -> Path:
    """The job from the local Hub, pushed back, then downloaded fresh."""
    return hub_release(SOURCE, [DATA_AWARE])


def _card(release: Path) -> str:
    return (release / "README.md").read_text()


def _manifest(release: Path) -> dict:
    return json.loads((release / "hubquant.json").read_text())


def test_download_runs_in_openvino_genai(release, openvino_toolchain):
    from hubquant import toolchains

    generated = toolchains.run_step(openvino_toolchain, "openvino", {"op": "generate", "folder": str(release), "prompt": "Hello", "max_new_tokens": 4}).data
    assert "text" in generated


def test_ir_records_data_aware_settings(release):
    manifest = _manifest(release)
    recorded = manifest["artifacts"][0]["facts"]["weight_compression"]
    assert recorded["awq"] == "True"
    assert recorded["scale_estimation"] == "True"
    assert recorded["sensitivity_metric"] == "max_activation_variance"
    assert recorded["ratio"] == "0.8"
    assert check_statuses(manifest["artifacts"][0]["validation"])["compression settings in the IR"] == "passed"


def test_card_names_calibration_and_comparison(release):
    card = _card(release)
    assert "| AWQ (data-aware) | `True` | target |" in card
    assert "| Scale estimation | `True` | target |" in card
    assert "calibration samples: paragraphs of hubquant's own public-domain calibration corpus" in card
    assert "No data set was downloaded for it." in card
    assert "| With calibration data (this release) |" in card
    assert "| Without (`--task text-generation-with-past" in card


def test_data_free_comparison_differs(release):
    manifest = _manifest(release)
    validation = manifest["artifacts"][0]["validation"]
    card = _card(release)
    kl_with = f"{validation['kl_mean']:.4g}"
    assert f"| With calibration data (this release) | {kl_with} |" in card
    without_row = next(line for line in card.splitlines() if line.startswith("| Without ("))
    assert f"| {kl_with} |" not in without_row


@pytest.mark.parametrize(
    ("precision", "data_aware"),
    [
        ("int4", False),
        ("int4:awq=true", False),
        ("int4:awq=true,calibrate=true", True),
        ("int4:gptq=true", True),
        ("int4:scale-estimation=true", True),
        ("int4:sensitivity-metric=weight_quantization_error,ratio=0.5", False),
        ("int4:sensitivity-metric=hessian_input_activation,ratio=0.5", True),
    ],
)
def test_data_aware_options(precision, data_aware):
    compression = resolve_compression(precision, [])
    assert compression.data_aware is data_aware
    assert not compression.data_free().data_aware


def test_gptq_arguments():
    arguments = resolve_compression("int4:gptq=true,sensitivity-metric=mean_activation_magnitude", []).export_arguments()
    assert "--gptq" in arguments
    assert arguments[arguments.index("--sensitivity-metric") + 1] == "mean_activation_magnitude"
    assert "--dataset" not in arguments


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("openvino:int4:sensitivity-metric=loudness", "sensitivity-metric in openvino:int4:sensitivity-metric=loudness must be one of"),
        ("openvino:int4:gptq=yes", "option gptq in openvino:int4:gptq=yes must be true or false"),
        ("openvino:int8:gptq=true", "openvino:int8 takes no option 'gptq'"),
    ],
)
def test_bad_data_aware_option(text, message):
    with pytest.raises(UsageError, match=message):
        parse_target(text)


def test_gptq_export_runs(tiny_model, tmp_path):
    folder = tiny_model("phi-3-mini-4k-instruct")
    result = local_job(folder, ["openvino:int4:gptq=true,sym=true"], tmp_path)
    assert result.ok, result.releases[0].failed
    manifest = staged_manifest(result.releases[0])
    assert manifest["artifacts"][0]["facts"]["weight_compression"]["gptq"] == "True"
