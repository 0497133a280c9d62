"""mlx:Nbit-gptq: mlx-lm's GPTQ fed with hubquant's calibration text, and the
data-aware methods that are rejected up front."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hubquant.backends.mlx import parse_precision
from hubquant.errors import UsageError


SOURCE = "alice/calibration-source-mlx"


@pytest.fixture(scope="module")
def gptq_release(hub_release) -> Path:
    """The job from the local Hub, pushed back, then downloaded fresh."""
    return hub_release(SOURCE, ["mlx:4bit-gptq"])


@pytest.mark.parametrize(
    ("text", "name", "group_size"),
    [("4bit-gptq", "4bit-gptq", 64), ("3BIT-G32-GPTQ", "3bit-g32-gptq", 32), ("8bit-g64-gptq", "8bit-gptq", 64)],
)
def test_gptq_precision_parses(text, name, group_size):
    fmt = parse_precision(text)
    assert fmt.name == name
    assert fmt.method == "gptq"
    assert fmt.group_size == group_size
    assert fmt.data_free().name == name.removesuffix("-gptq")
    assert fmt.data_free().method is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("4bit-awq", "AWQ has no configuration for the Phi family"),
        ("4bit-dwq", "DWQ trains the quantized model"),
        ("mixed_3_6-gptq", "applies to the affine Nbit formats only"),
        ("mxfp4-gptq", "applies to the affine Nbit formats only"),
        ("bf16-gptq", "applies to the affine Nbit formats only"),
    ],
)
def test_unsupported_method_rejected(text, message):
    with pytest.raises(UsageError, match=message):
        parse_precision(text)


def test_gptq_release_named_and_quantized(gptq_release):
    assert gptq_release.name.endswith("-mlx-4bit-gptq")
    quantization = json.loads((gptq_release / "config.json").read_text())["quantization"]
    assert quantization["bits"] == 4
    assert quantization["group_size"] == 64
    assert quantization["model.embed_tokens"] == {"bits": 4, "group_size": 64}


def test_gptq_download_generates(gptq_release, mlx_toolchain):
    import subprocess

    code = ("import sys; from mlx_lm import load, generate; model, tokenizer = load(sys.argv[1]); "
            "print(len(generate(model, tokenizer, prompt='Hello', max_tokens=4)) >= 0)")  # fmt: skip
    result = subprocess.run([str(mlx_toolchain.python), "-c", code, str(gptq_release)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("True")


def test_gptq_facts_and_comparison(gptq_release):
    entry = json.loads((gptq_release / "hubquant.json").read_text())["artifacts"][0]
    calibration = entry["facts"]["calibration"]
    assert calibration["method"] == "gptq"
    assert calibration["samples"] >= 1
    assert calibration["license"] == "cc0-1.0"
    data_free = entry["facts"]["data_free"]
    assert data_free["target"] == "mlx:4bit"
    assert data_free["kl_mean"] > 0
    assert data_free["kl_mean"] != entry["validation"]["kl_mean"]


def test_gptq_card_describes_data(gptq_release):
    card = (gptq_release / "README.md").read_text()
    assert "by mlx-lm's GPTQ on calibration text" in card
    assert "### Calibration data" in card
    assert "rows of 512 tokens of hubquant's own public-domain calibration corpus" in card
    assert "| `mlx:4bit-gptq` (this release) |" in card
    assert "| `mlx:4bit` |" in card
