"""The traps of the OpenVINO export: group sizes that do not divide a width,
target options passing through, the fp16 range, and the rule that compresses
models of a billion parameters to int8."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hubquant.backends.openvino import OpenvinoBackend, resolve_compression
from hubquant.backends.openvino_checks import check_weight_formats
from hubquant.validation import ValidationReport

from openvino_helpers import check_statuses, local_job, staged_manifest

# 704 = 64 * 11: group size 128 does not divide the down_proj width, and NNCF's
# fallback picks 64, the largest power of two that does.
ODD_WIDTH = 704
OPTIONS_TARGET = "openvino:int4:all-layers=true,backup-precision=int8_sym,ratio=1.0"


@pytest.fixture(scope="module")
def odd_width_release(tiny_model, tmp_path_factory):
    folder = tiny_model("phi-3-mini-4k-instruct", intermediate_size=ODD_WIDTH)
    result = local_job(folder, [OPTIONS_TARGET], tmp_path_factory.mktemp("odd-width"))
    return result.releases[0]


def test_odd_width_falls_back(odd_width_release):
    assert odd_width_release.failed == {}
    facts = staged_manifest(odd_width_release)["artifacts"][0]["facts"]
    assert facts["group_size_fallbacks"] == [
        {"module": f"model.layers.{layer}.mlp.down_proj", "width": ODD_WIDTH, "group_size": 64, "stored_as": "int4_asym"}
        for layer in (0, 1)
    ]


def test_card_lists_fallback_layers(odd_width_release):
    card = odd_width_release.card
    assert "2 weights could not use group size 128" in card
    assert "| model.layers.0.mlp.down\\_proj | 704 | 64 | `int4_asym` |" in card


def test_target_options_reach_the_ir(odd_width_release):
    manifest = staged_manifest(odd_width_release)
    artifact = manifest["artifacts"][0]
    assert artifact["target"] == "openvino:int4:all-layers=true,backup-precision=int8_sym,ratio=1"
    recorded = artifact["facts"]["weight_compression"]
    assert recorded["all_layers"] == "True"
    assert recorded["backup_mode"] == "int8_sym"
    assert recorded["ratio"] == "1.0"
    # With all-layers the embedding and lm_head are 4-bit too.
    assert artifact["facts"]["weight_formats"] == {"int4_asym": 10}
    assert check_statuses(artifact["validation"])["compression settings in the IR"] == "passed"


def test_fp16_rejects_weights_beyond_range(tiny_model, tmp_path):
    folder = tiny_model("phi-3-mini-4k-instruct", extreme_weight=1e5)
    result = local_job(folder, ["openvino:fp16"], tmp_path)
    reason = result.releases[0].failed["openvino:fp16"]
    assert "beyond the fp16 range (65504)" in reason
    assert "choose fp32 or int8" in reason


def test_int8_beyond_fp16_range_checked_against_fp32(tiny_model, tmp_path):
    """Quantized targets of such a source are compared with an fp32 export, since fp16 would hold inf."""
    folder = tiny_model("phi-3-mini-4k-instruct", extreme_weight=1e5)
    result = local_job(folder, ["openvino:int8"], tmp_path)
    release = result.releases[0]
    assert result.ok, release.failed
    artifact = staged_manifest(release)["artifacts"][0]
    statuses = check_statuses(artifact["validation"])
    assert statuses["KL divergence to the unquantized IR"] == "passed"
    card = (Path(release.url) / "README.md").read_text()
    assert "compared with the unquantized fp32 IR" in card
    assert "The unquantized fp32 export was run with optimum-intel and openvino-genai" in card


def test_billion_parameters_stay_fp16(tiny_model, openvino_toolchain, tmp_path):
    """A 2-layer model whose 1.96M-token vocabulary puts it just over 1e9 parameters.

    optimum-intel 2.2.0 counts the elements of every floating-point constant
    in the exported IR and compresses the weights to int8 from 1e9 on, unless
    a weight format is given. The embedding and lm_head carry the count, so
    the layers (and the run) stay small.
    """
    threshold = subprocess.run(
        [str(openvino_toolchain.python), "-c",
         "from optimum.exporters.openvino.utils import _MAX_UNCOMPRESSED_SIZE as size; print(int(size))"],
        capture_output=True, text=True, check=True, env={"CI": "true", "HOME": str(tmp_path)},
    ).stdout  # fmt: skip
    assert int(threshold) == 1_000_000_000

    folder = tiny_model("phi-3-mini-4k-instruct", config_overrides={"vocab_size": 1_960_000})
    compression = resolve_compression("fp16", [])
    _, described, _ = OpenvinoBackend()._export(openvino_toolchain, tmp_path, "fp16", folder, compression)
    assert described["float_parameters"] >= int(threshold)
    assert described["modes"] == {"fp16": 10}
    report = ValidationReport()
    check_weight_formats(report, described, compression)
    assert report.passed
