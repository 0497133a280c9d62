"""The standard-library safetensors writer and its bfloat16 rounding."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from hubquant.tinymodels.safetensors_io import (
    bfloat16_bits_to_float32,
    float32_to_bfloat16_bits,
    read_safetensors_header,
    read_safetensors_tensor,
    write_safetensors,
)

# float32 value -> expected bfloat16 bits (round to nearest, ties to even).
BF16_CASES = [
    (1.0, 0x3F80),
    (-2.0, 0xC000),
    (0.0, 0x0000),
    (-0.0, 0x8000),
    # 1 + 2**-8 lies halfway between 1.0 (even) and 1 + 2**-7 (odd): to even.
    (1.0 + 2**-8, 0x3F80),
    # 1 + 3 * 2**-8 lies halfway between 0x3F81 (odd) and 0x3F82 (even).
    (1.0 + 3 * 2**-8, 0x3F82),
    # Just above the halfway point rounds up.
    (1.0 + 2**-8 + 2**-20, 0x3F81),
    # 1e5 = 99840 (0x47C3) + 160, and the next bfloat16 value up is 100352.
    (1e5, 0x47C3),
    (float("inf"), 0x7F80),
    (float("-inf"), 0xFF80),
    # The largest float32 rounds up past the largest bfloat16, to infinity.
    (float(np.finfo(np.float32).max), 0x7F80),
]


@pytest.mark.parametrize(("value", "expected"), BF16_CASES)
def test_bfloat16_rounding(value: float, expected: int) -> None:
    bits = float32_to_bfloat16_bits(np.array([value], dtype=np.float32))
    assert int(bits[0]) == expected, f"{value!r} -> {int(bits[0]):#06x}, expected {expected:#06x}"


def test_bfloat16_nan_stays_nan() -> None:
    bits = float32_to_bfloat16_bits(np.array([np.nan, -np.nan], dtype=np.float32))
    assert np.isnan(bfloat16_bits_to_float32(bits)).all()


def test_bfloat16_matches_truncation_error_bound() -> None:
    values = np.random.default_rng(0).standard_normal(10_000).astype(np.float32)
    widened = bfloat16_bits_to_float32(float32_to_bfloat16_bits(values))
    # Round to nearest: the error is at most half a unit in the last of 8 bits.
    assert np.all(np.abs(widened - values) <= np.abs(values) * 2.0**-8)


def test_write_header_layout(tmp_path) -> None:
    path = tmp_path / "model.safetensors"
    tensors = {"b.weight": np.ones((2, 3), np.float32), "a.bias": np.arange(5, dtype=np.float32)}
    written = write_safetensors(path, tensors, "BF16")

    raw = path.read_bytes()
    (header_length,) = struct.unpack("<Q", raw[:8])
    assert (8 + header_length) % 8 == 0
    header = json.loads(raw[8 : 8 + header_length])
    assert header["__metadata__"] == {"format": "pt"}
    assert header["a.bias"] == {"dtype": "BF16", "shape": [5], "data_offsets": [0, 10]}
    assert header["b.weight"] == {"dtype": "BF16", "shape": [2, 3], "data_offsets": [10, 22]}
    assert written == 22
    assert len(raw) == 8 + header_length + 22


@pytest.mark.parametrize("dtype", ["BF16", "F16", "F32"])
def test_write_read_round_trip(tmp_path, dtype: str) -> None:
    path = tmp_path / "model.safetensors"
    values = np.array([[0.5, -1.25], [3.0, 1024.0]], dtype=np.float32)
    write_safetensors(path, {"x": values}, dtype)
    assert read_safetensors_header(path)["x"]["dtype"] == dtype
    np.testing.assert_array_equal(read_safetensors_tensor(path, "x"), values)


def test_write_rejects_unknown_dtype(tmp_path) -> None:
    with pytest.raises(ValueError, match="unsupported safetensors dtype"):
        write_safetensors(tmp_path / "x.safetensors", {"x": np.zeros(1, np.float32)}, "I8")
