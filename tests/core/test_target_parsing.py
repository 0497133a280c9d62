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


IMATRIX_ONLY = ["IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S",
                "IQ3_M", "Q2_K_S"]  # fmt: skip


@pytest.mark.parametrize("type_name", IMATRIX_ONLY)
def test_imatrix_type_parses(type_name):
    assert parse_target(f"gguf:{type_name.lower()}") == Target("gguf", type_name)


@pytest.mark.parametrize("type_name", IMATRIX_ONLY)
def test_imatrix_type_implies_matrix(type_name):
    from hubquant.backends.gguf import parse_variant

    assert parse_target(f"gguf:{type_name}:imatrix") == Target("gguf", type_name)
    assert parse_variant(type_name).imatrix


@pytest.mark.parametrize(
    ("text", "precision", "label"),
    [
        ("gguf:q4_k_m:imatrix", "Q4_K_M:imatrix", "Q4_K_M-imatrix"),
        ("gguf:Q4_K_M:embeddings=q8_0,output=Q8_0", "Q4_K_M:output=Q8_0,embeddings=Q8_0", "Q4_K_M-output-Q8_0-embeddings-Q8_0"),
        ("gguf:IQ2_M:output=Q6_K", "IQ2_M:output=Q6_K", "IQ2_M-output-Q6_K"),
        ("gguf:Q3_K_M: imatrix , output=Q8_0", "Q3_K_M:imatrix,output=Q8_0", "Q3_K_M-imatrix-output-Q8_0"),
    ],
)
def test_gguf_options_canonical(text, precision, label):
    from hubquant.backends.gguf import parse_variant

    target = parse_target(text)
    assert target.precision == precision
    assert parse_variant(target.precision).file_label == label


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gguf:Q4_K_M:imatrx", "unknown option 'imatrx'"),
        ("gguf:Q4_K_M:output=Q9_K", "unknown tensor type 'Q9_K' for output"),
        ("gguf:Q4_K_M:output", "unknown option 'output'"),
        ("gguf:F16:imatrix", "no effect on the unquantized type F16"),
    ],
)
def test_gguf_bad_option_rejected(text, message):
    with pytest.raises(UsageError, match=message):
        parse_target(text)


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
