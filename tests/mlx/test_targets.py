"""MLX targets: parsing, normalised names, one repo per setting, estimates."""

from __future__ import annotations

import pytest

from hubquant.backends import get_backend
from hubquant.backends.mlx import MlxBackend, card_tags, parse_precision
from hubquant.errors import UsageError
from hubquant.targets import Target, parse_target, parse_targets

# Precision as typed -> (normalised name, mode, bits, group size, recipe, dtype).
CASES = [
    ("4bit", ("4bit", "affine", 4, 64, None, None)),
    ("8bit", ("8bit", "affine", 8, 64, None, None)),
    ("3bit", ("3bit", "affine", 3, 64, None, None)),
    ("6bit", ("6bit", "affine", 6, 64, None, None)),
    ("2bit", ("2bit", "affine", 2, 64, None, None)),
    ("5bit", ("5bit", "affine", 5, 64, None, None)),
    ("4BIT", ("4bit", "affine", 4, 64, None, None)),
    ("4bit-g64", ("4bit", "affine", 4, 64, None, None)),
    ("4bit-g32", ("4bit-g32", "affine", 4, 32, None, None)),
    ("8bit-g128", ("8bit-g128", "affine", 8, 128, None, None)),
    ("mixed_3_6", ("mixed_3_6", "affine", 3, 64, "mixed_3_6", None)),
    ("mixed-2-6", ("mixed_2_6", "affine", 2, 64, "mixed_2_6", None)),
    ("mixed_3_4-g32", ("mixed_3_4-g32", "affine", 3, 32, "mixed_3_4", None)),
    ("mixed_4_6", ("mixed_4_6", "affine", 4, 64, "mixed_4_6", None)),
    ("mxfp4", ("mxfp4", "mxfp4", 4, 32, None, None)),
    ("mxfp4-g32", ("mxfp4", "mxfp4", 4, 32, None, None)),
    ("nvfp4", ("nvfp4", "nvfp4", 4, 16, None, None)),
    ("mxfp8", ("mxfp8", "mxfp8", 8, 32, None, None)),
    ("bf16", ("bf16", None, None, None, None, "bfloat16")),
    ("bfloat16", ("bf16", None, None, None, None, "bfloat16")),
    ("fp16", ("fp16", None, None, None, None, "float16")),
    ("float16", ("fp16", None, None, None, None, "float16")),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_precision_parses(text, expected):
    fmt = parse_precision(text)
    assert (fmt.name, fmt.mode, fmt.bits, fmt.group_size, fmt.recipe, fmt.dtype) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("7bit", "unknown MLX precision '7bit'; known precisions: 2bit"),
        ("q4", "unknown MLX precision 'q4'"),
        ("mixed_2_4", "unknown MLX precision 'mixed_2_4'"),
        ("4bit-g16", "group size 16 is not one of 32, 64, 128"),
        ("4bit-g", "unknown MLX precision '4bit-g'"),
        ("mxfp4-g64", "mxfp4 uses group size 32 only; write mlx:mxfp4"),
        ("nvfp4-g32", "nvfp4 uses group size 16 only"),
        ("bf16-g32", "bf16 is not quantized, so it takes no group size"),
    ],
)
def test_invalid_precision_rejected(text, message):
    with pytest.raises(UsageError, match=message):
        parse_precision(text)


def test_backend_registered():
    assert isinstance(get_backend("mlx"), MlxBackend)


def test_target_string_normalised():
    assert parse_target("mlx:4bit-g64") == Target("mlx", "4bit")
    assert parse_target("MLX:Mixed-3-6") == Target("mlx", "mixed_3_6")


def test_same_setting_is_one_target():
    assert parse_targets(["mlx:4bit", "mlx:4bit-g64", "mlx:4BIT"]) == [Target("mlx", "4bit")]


def test_release_names():
    backend = MlxBackend()
    names = {
        precision: backend.release_name("Phi-4-mini-instruct", parse_target(f"mlx:{precision}"))
        for precision in ("4bit", "4bit-g32", "bf16", "mixed_3_6", "mxfp4")
    }
    assert names == {
        "4bit": "Phi-4-mini-instruct-mlx-4bit",
        "4bit-g32": "Phi-4-mini-instruct-mlx-4bit-g32",
        "bf16": "Phi-4-mini-instruct-mlx-bf16",
        "mixed_3_6": "Phi-4-mini-instruct-mlx-mixed_3_6",
        "mxfp4": "Phi-4-mini-instruct-mlx-mxfp4",
    }


def test_every_setting_gets_its_own_repo():
    backend = MlxBackend()
    precisions = ["2bit", "3bit", "4bit", "5bit", "6bit", "8bit", "4bit-g32", "4bit-g128", "mixed_2_6",
                  "mixed_3_4", "mixed_3_6", "mixed_4_6", "mxfp4", "nvfp4", "mxfp8", "bf16", "fp16"]  # fmt: skip
    names = {backend.release_name("m", Target("mlx", backend.normalize_precision(p))) for p in precisions}
    assert len(names) == len(precisions)


@pytest.mark.parametrize(
    ("precision", "bits"),
    [("4bit", 4.5), ("4bit-g32", 5.0), ("8bit-g128", 8.25), ("mxfp4", 4.25), ("nvfp4", 4.5), ("bf16", 16.0)],
)
def test_estimate_counts_group_overhead(precision, bits):
    backend = MlxBackend()
    assert backend.estimate_bytes(8_000_000, Target("mlx", precision)) == int(8_000_000 * bits / 8)


def test_estimate_of_mixed_recipe_between_its_bits():
    estimate = MlxBackend().estimate_bytes(8_000_000, Target("mlx", "mixed_3_6"))
    assert 3 * 1_000_000 < estimate < 6 * 1_000_000


def test_phi_family_supported():
    assert MlxBackend().supported_architectures() == {"Phi3ForCausalLM", "PhiForCausalLM", "PhiMoEForCausalLM"}


@pytest.mark.parametrize(
    ("precision", "tags"),
    [
        ("4bit", ["4-bit", "apple-silicon"]),
        ("mxfp4", ["4-bit", "mxfp4", "apple-silicon"]),
        ("mixed_3_6", ["mixed_3_6", "apple-silicon"]),
        ("bf16", ["bf16", "apple-silicon"]),
    ],
)
def test_card_tags(precision, tags):
    backend_tags, format_tags = card_tags(parse_precision(precision))
    assert backend_tags[:2] == ["mlx", "mlx-lm"]
    assert ("quantized" in backend_tags) == (precision != "bf16")
    assert format_tags == tags


def test_unvalidated_run_skips_the_mlx_run(tiny_model, tmp_path, monkeypatch):
    """Benchmarks turn validation off. The release folder is then not loaded
    and run in mlx-lm, which on MLX's CPU build takes longer than converting."""
    from hubquant.backends import mlx_checks
    from hubquant.pipeline import JobRequest, run_job

    def no_validation(*args, **kwargs):
        raise AssertionError("validate_release ran")

    monkeypatch.setattr(mlx_checks, "validate_release", no_validation)
    folder = tiny_model("phi-3-mini-4k-instruct")
    result = run_job(JobRequest(source=str(folder), targets=["mlx:4bit"], output_dir=tmp_path, validate=False))
    assert result.ok, result.releases[0].failed
