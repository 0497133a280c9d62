"""Target strings: BACKEND:PRECISION, checked against the backend registry."""

from __future__ import annotations

import pytest

from hubquant.errors import UsageError
from hubquant.targets import Target, parse_target, parse_targets

ALL_GGUF = ["F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_0", "Q4_K_M", "Q4_K_S",
            "Q4_0", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K", "IQ4_XS", "IQ4_NL"]  # fmt: skip


@pytest.mark.parametrize("type_name", ALL_GGUF)
def test_gguf_type_parses(type_name):
    assert parse_target(f"gguf:{type_name.lower()}") == Target("gguf", type_name)


@pytest.mark.parametrize("type_name", ["IQ2_XXS", "IQ1_S", "IQ3_XXS", "IQ3_M", "IQ2_M"])
def test_imatrix_type_rejected(type_name):
    with pytest.raises(UsageError, match="needs an importance matrix"):
        parse_target(f"gguf:{type_name}")


def test_unknown_type_lists_known():
    with pytest.raises(UsageError, match=r"unknown GGUF type 'Q9_X'; known types: F32, BF16, F16"):
        parse_target("gguf:Q9_X")


def test_unknown_backend_lists_known():
    with pytest.raises(UsageError, match=r"unknown backend 'tflite'; known backends: gguf"):
        parse_target("tflite:int8")


@pytest.mark.parametrize("text", ["gguf", "Q4_K_M", ":Q4_K_M", "gguf:"])
def test_malformed_target_rejected(text):
    with pytest.raises(UsageError, match="write BACKEND:PRECISION"):
        parse_target(text)


def test_duplicate_targets_kept_once():
    assert parse_targets(["gguf:Q8_0", "GGUF:q8_0", "gguf:F16"]) == [Target("gguf", "Q8_0"), Target("gguf", "F16")]
