"""Targets, weight compression settings and the IR checks, without running OpenVINO."""

from __future__ import annotations

import pytest

from hubquant.backends import get_backend
from hubquant.backends.base import BuildContext, Release
from hubquant.backends.openvino import (
    GENERIC_INT4,
    INT4_RECIPES,
    OpenvinoBackend,
    resolve_compression,
)
from hubquant.backends.openvino_checks import (
    check_compression_info,
    check_weight_formats,
    group_size_fallbacks,
)
from hubquant.errors import UsageError
from hubquant.progress import Reporter
from hubquant.targets import Target, parse_target
from hubquant.validation import ValidationReport

PHI35 = "microsoft/Phi-3.5-mini-instruct"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("openvino:int4", "int4"),
        ("openvino:INT4", "int4"),
        ("openvino:fp16", "fp16"),
        ("openvino:int8:sym=TRUE", "int8:sym=true"),
        ("openvino:int4:sym=true,group-size=64", "int4:group-size=64,sym=true"),
        ("openvino:int4:ratio=0.80", "int4:ratio=0.8"),
        ("openvino:int4:backup-precision=INT8_SYM,all-layers=true,awq=false",
         "int4:all-layers=true,awq=false,backup-precision=int8_sym"),
    ],
)
def test_target_normalised(text, expected):
    assert parse_target(text) == Target("openvino", expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("openvino:int3", "unknown OpenVINO precision 'int3'; known precisions: fp32, fp16, int8, int4"),
        ("openvino:int4:groupsize=64", "takes no option 'groupsize'; its options: group-size, ratio"),
        ("openvino:int8:ratio=0.5", "openvino:int8 takes no option 'ratio'; its options: sym"),
        ("openvino:fp16:sym=true", "openvino:fp16 takes no option 'sym'; its options: none"),
        ("openvino:int4:sym", "write NAME=VALUE"),
        ("openvino:int4:sym=yes", "must be true or false"),
        ("openvino:int4:ratio=1.5", "must be in (0, 1]"),
        ("openvino:int4:group-size=0", "must be -1 (one scale per channel) or at least 2"),
        ("openvino:int4:backup-precision=int4", "must be one of none, int8_sym, int8_asym"),
    ],
)
def test_bad_target_rejected(text, message):
    with pytest.raises(UsageError) as error:
        parse_target(text)
    assert message in str(error.value)


def test_release_name_per_precision():
    backend = get_backend("openvino")
    assert backend.release_name("Phi-3.5-mini-instruct", Target("openvino", "int4:sym=true")) == "Phi-3.5-mini-instruct-int4-ov"
    assert backend.release_name("phi-4", Target("openvino", "fp16")) == "phi-4-fp16-ov"


def test_estimate_counts_unquantized_export():
    backend = OpenvinoBackend()
    assert backend.estimate_bytes(1_000_000, Target("openvino", "fp16")) == 2_000_000
    # An int4 target also needs the fp16 export it is checked against.
    assert backend.estimate_bytes(1_000_000, Target("openvino", "int4")) == 625_000 + 2_000_000


def test_phi35_gets_cookbook_recipe():
    compression = resolve_compression("int4", [PHI35])
    assert compression.options == {
        "group-size": 128, "ratio": 0.6, "sym": True, "awq": False,
        "backup-precision": "int8_asym", "all-layers": False,
        "calibrate": False, "scale-estimation": False, "gptq": False, "sensitivity-metric": None,
    }  # fmt: skip
    assert "Phi Cookbook" in compression.sources["ratio"]
    assert compression.recipe_url.startswith("https://github.com/microsoft/PhiCookBook/")


def test_phi4_mini_gets_data_free_awq():
    compression = resolve_compression("int4", ["microsoft/Phi-4-mini-instruct"])
    assert compression.options["group-size"] == 64
    assert compression.options["awq"] is True
    assert "--awq" in compression.export_arguments()
    assert "--dataset" not in compression.export_arguments()


def test_data_aware_preset_skipped():
    compression = resolve_compression("int4", ["microsoft/Phi-3-mini-4k-instruct"])
    assert compression.options["group-size"] == GENERIC_INT4.group_size
    assert compression.options["sym"] is False
    assert "wikitext2" in compression.skipped_preset


def test_target_options_override_recipe():
    compression = resolve_compression("int4:ratio=1.0,sym=false", [PHI35])
    assert compression.options["ratio"] == 1.0
    assert compression.options["sym"] is False
    assert compression.options["group-size"] == 128
    assert compression.sources["ratio"] == "target"
    assert "Phi Cookbook" in compression.sources["group-size"]


def test_declared_base_model_matches_recipe():
    compression = resolve_compression("int4", ["alice/my-copy", PHI35])
    assert compression.options["ratio"] == INT4_RECIPES[PHI35.lower()].ratio


def test_int4_arguments_are_explicit():
    arguments = resolve_compression("int4", []).export_arguments()
    assert arguments[:6] == ["--task", "text-generation-with-past", "--library", "transformers", "--weight-format", "int4"]
    for option in ("--group-size", "--ratio", "--backup-precision", "--group-size-fallback"):
        assert option in arguments, option
    assert arguments[arguments.index("--group-size-fallback") + 1] == "adjust"
    assert "--sym" not in arguments


def test_int8_arguments_name_group_size():
    # Without any compression option optimum-cli looks up a preset by name.
    assert resolve_compression("int8", []).export_arguments()[-2:] == ["--group-size", "-1"]
    assert resolve_compression("int8:sym=true", []).export_arguments()[-1] == "--sym"


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_unquantized_arguments_name_weight_format(precision):
    # optimum-intel compresses models of 1e9+ parameters to int8 without it.
    arguments = resolve_compression(precision, []).export_arguments()
    assert arguments[-2:] == ["--weight-format", precision]


def _described(modes: dict, weights: list[dict] | None = None, rt_info: dict | None = None) -> dict:
    return {"modes": modes, "weights": weights or [], "rt_info": rt_info or {}}


def test_int8_weights_fail_fp16_request():
    report = ValidationReport()
    check_weight_formats(report, _described({"int8_asym": 10}), resolve_compression("fp16", []))
    assert report.failures[0].name == "weight format"
    assert "fp16 was requested, but the IR stores 10 int8_asym weights" in report.failures[0].detail


def test_fp16_weights_pass_fp16_request():
    report = ValidationReport()
    check_weight_formats(report, _described({"fp16": 10}), resolve_compression("fp16", []))
    assert report.passed


def test_int4_without_int4_weights_fails():
    report = ValidationReport()
    check_weight_formats(report, _described({"int8_asym": 10}), resolve_compression("int4", []))
    assert "no weight is stored as int4" in report.failures[0].detail


def test_asymmetric_weights_fail_symmetric_request():
    report = ValidationReport()
    check_weight_formats(report, _described({"int4_asym": 8, "int8_asym": 2}), resolve_compression("int4:sym=true", []))
    assert not report.passed


def test_rt_info_mismatch_reported():
    rt_info = {
        "nncf.weight_compression.mode": "int4_asym",
        "nncf.weight_compression.group_size": "64",
        "nncf.weight_compression.ratio": "1.0",
        "nncf.weight_compression.backup_mode": "int8_asym",
        "nncf.weight_compression.all_layers": "False",
        "nncf.weight_compression.awq": "False",
    }
    report = ValidationReport()
    check_compression_info(report, _described({}, rt_info=rt_info), resolve_compression("int4", []))
    assert report.failures[0].detail == "group_size is 64, expected 128"


def test_rt_info_on_unquantized_fails():
    report = ValidationReport()
    rt_info = {"nncf.weight_compression.mode": "int8_asym"}
    check_compression_info(report, _described({}, rt_info=rt_info), resolve_compression("fp16", []))
    assert "records weight compression (int8_asym)" in report.failures[0].detail


def _weight(module: str, mode: str, width: int, group_size: int | None) -> dict:
    return {"module": module, "mode": mode, "width": width, "group_size": group_size}


def test_fallbacks_list_adjusted_and_backup_layers():
    weights = [
        _weight("model.embed_tokens", "int8_asym", 250, -1),
        _weight("model.layers.0.mlp.down_proj", "int4_asym", 704, 64),
        _weight("model.layers.0.mlp.gate_up_proj", "int4_asym", 256, 128),
        _weight("model.layers.1.mlp.down_proj", "int8_asym", 720, -1),
        _weight("lm_head", "int8_asym", 250, -1),
    ]
    fallbacks = group_size_fallbacks(_described({}, weights), resolve_compression("int4", []))
    assert fallbacks == [
        {"module": "model.layers.0.mlp.down_proj", "width": 704, "group_size": 64, "stored_as": "int4_asym"},
        {"module": "model.layers.1.mlp.down_proj", "width": 720, "group_size": -1, "stored_as": "int8_asym"},
    ]


def test_fallbacks_with_ratio_below_one_keep_forced_layers():
    # 720 has no power-of-two divisor of 32 or more, so it could not be 4-bit at any
    # group size NNCF adjusts to. 1088 could (64), so its backup precision is the ratio's choice.
    weights = [
        _weight("model.layers.0.mlp.down_proj", "int8_asym", 1088, -1),
        _weight("model.layers.1.mlp.down_proj", "int8_asym", 720, -1),
    ]
    assert group_size_fallbacks(_described({}, weights), resolve_compression("int4:ratio=0.8", [])) == [
        {"module": "model.layers.1.mlp.down_proj", "width": 720, "group_size": -1, "stored_as": "int8_asym"},
    ]


def test_oversized_file_fails(tmp_path):
    folder = tmp_path / "ir"
    folder.mkdir()
    (folder / "openvino_model.bin").write_bytes(bytes(100))
    target = Target("openvino", "fp32")
    release = Release("openvino", "model-fp32-ov", [target])
    context = BuildContext(source=None, reference=None, work_dir=tmp_path, reporter=Reporter(), max_file_bytes=50)
    export = {"seconds": 0.0, "peak_rss_bytes": 0}
    OpenvinoBackend()._publish(context, release, target, folder, {}, ValidationReport(), resolve_compression("fp32", []), export)
    assert release.artifacts == []
    assert release.failed["openvino:fp32"].startswith("openvino_model.bin is 100 B, over the 50 B limit for one file")
