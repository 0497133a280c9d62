"""Every MLX target the other tests do not convert: built, loaded and checked
against the unquantized conversion on the tiny Phi-3."""

from __future__ import annotations

import json

import pytest

from hubquant.backends.mlx import RECIPES, parse_precision

from mlx_helpers import build_direct, checks_of, reference_for

TARGETS = ["2bit", "3bit", "5bit", "6bit", "4bit-g32", "mxfp4", "nvfp4", "mxfp8", "mixed_2_6", "mixed_3_4", "mixed_3_6", "mixed_4_6", "fp16"]


@pytest.fixture(scope="module")
def release(tiny_model, tmp_path_factory):
    folder = tiny_model("phi-3-mini-4k-instruct")
    work = tmp_path_factory.mktemp("every-target")
    return build_direct(folder, TARGETS, work, reference_for(folder, work))


@pytest.fixture(scope="module")
def artifacts(release) -> dict:
    assert not release.failed, release.failed
    return {artifact.target.precision: artifact for artifact in release.artifacts}


def test_every_target_built(artifacts):
    assert sorted(artifacts) == sorted(parse_precision(name).name for name in TARGETS)


@pytest.mark.parametrize("name", TARGETS)
def test_target_validates(artifacts, name):
    artifact = artifacts[parse_precision(name).name]
    report = artifact.validation.to_dict()
    assert report["status"] == "passed", report
    assert checks_of(report)["loads and runs in mlx-lm"] == "passed"
    assert checks_of(report)["generation stops at EOS"] == "passed"


@pytest.mark.parametrize("name", [t for t in TARGETS if t != "fp16"])
def test_config_records_quantization(artifacts, name):
    fmt = parse_precision(name)
    artifact = artifacts[fmt.name]
    config = json.loads((artifact.root / "config.json").read_text())
    quantization = config["quantization"]
    assert quantization["bits"] == fmt.bits
    assert quantization["group_size"] == fmt.group_size
    assert quantization.get("mode", "affine") == fmt.mode


@pytest.mark.parametrize("recipe", ["mixed_2_6", "mixed_3_4", "mixed_3_6", "mixed_4_6"])
def test_recipe_uses_both_widths(artifacts, recipe):
    low, high = RECIPES[recipe]
    widths = {setting["bits"] for setting in artifacts[recipe].facts["layer_settings"]}
    assert widths == {low, high}


def test_fp16_weights_are_float16(artifacts):
    facts = artifacts["fp16"].facts
    assert facts["float_dtype"] == "float16"
    assert "F16" in facts["tensor_dtypes"]
    assert "BF16" not in facts["tensor_dtypes"]


def test_recipes_match_mlx_lm(mlx_toolchain):
    import subprocess

    code = "import json; from mlx_lm.convert import QUANT_RECIPES; print(json.dumps(sorted(QUANT_RECIPES)))"
    output = subprocess.run([str(mlx_toolchain.python), "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(output) == sorted(RECIPES)
