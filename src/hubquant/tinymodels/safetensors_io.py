"""Read and write safetensors files with the standard library and numpy only.

Format (https://huggingface.co/docs/safetensors): an 8-byte little-endian
unsigned header length, a UTF-8 JSON header mapping each tensor name to its
``dtype``, ``shape`` and ``data_offsets`` (relative to the end of the header),
plus ``__metadata__``, then the tensor bytes, contiguous and without gaps.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

# safetensors dtype name -> (numpy storage dtype, bytes per element). bfloat16
# has no numpy dtype, so it is stored and returned as raw uint16 bit patterns.
SAFETENSORS_DTYPES: dict[str, tuple[np.dtype, int]] = {
    "BF16": (np.dtype("<u2"), 2),
    "F16": (np.dtype("<f2"), 2),
    "F32": (np.dtype("<f4"), 4),
}

# Names accepted by ``build_tiny_model(dtype=...)`` -> safetensors dtype name.
TORCH_DTYPE_TO_SAFETENSORS = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}

_HEADER_ALIGNMENT = 8


def float32_to_bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (round to nearest, ties to even).

    Returns the bfloat16 bit patterns as uint16. NaN stays NaN (quiet), and
    values beyond the bfloat16 range round to infinity as IEEE rounding does.
    """
    as_float = np.ascontiguousarray(values, dtype=np.float32)
    bits = as_float.view(np.uint32)
    lsb = (bits >> 16) & np.uint32(1)
    rounded = (bits + np.uint32(0x7FFF) + lsb) >> 16
    result = rounded.astype(np.uint16)
    nan_mask = np.isnan(as_float)
    if nan_mask.any():
        result[nan_mask] = np.uint16(0x7FC0)
    return result


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bit patterns (uint16) to float32 exactly."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


# Elements converted per step, which bounds the temporaries of a large tensor.
_ENCODE_CHUNK = 1 << 22


def encode_tensor(values: np.ndarray, dtype: str) -> bytes:
    """Encode float32 ``values`` as little-endian bytes of safetensors ``dtype``."""
    if dtype == "BF16":
        flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        encoded = np.empty(flat.shape, dtype="<u2")
        for start in range(0, flat.size, _ENCODE_CHUNK):
            stop = start + _ENCODE_CHUNK
            encoded[start:stop] = float32_to_bfloat16_bits(flat[start:stop])
        return encoded.tobytes()
    if dtype == "F16":
        return np.asarray(values, dtype=np.float32).astype("<f2").tobytes()
    if dtype == "F32":
        return np.asarray(values, dtype="<f4").tobytes()
    raise ValueError(f"unsupported safetensors dtype {dtype!r}; use one of {sorted(SAFETENSORS_DTYPES)}")


def write_safetensors(
    path: Path,
    tensors: Mapping[str, np.ndarray],
    dtype: str,
    metadata: Mapping[str, str] | None = None,
) -> int:
    """Write ``tensors`` (float32 arrays) to ``path`` as one safetensors file.

    Every tensor is stored as ``dtype``, in name order. ``metadata`` defaults
    to ``{"format": "pt"}``, which transformers requires. Returns the number
    of tensor bytes written (the header excluded), as model.safetensors.index.json
    counts them in ``total_size``.
    """
    header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
    payloads: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        array = tensors[name]
        payload = encode_tensor(array, dtype)
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(payload)],
        }
        payloads.append(payload)
        offset += len(payload)

    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Pad with spaces so the tensor data starts 8-byte aligned, as the
    # reference implementation does.
    padding = (-(8 + len(header_bytes))) % _HEADER_ALIGNMENT
    header_bytes += b" " * padding

    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(header_bytes)))
        handle.write(header_bytes)
        for payload in payloads:
            handle.write(payload)
    return offset


def read_safetensors_header(path: Path) -> dict[str, dict]:
    """Return the parsed JSON header of a safetensors file (``__metadata__`` included)."""
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise ValueError(f"{path}: file too short for a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        raw = handle.read(length)
    if len(raw) != length:
        raise ValueError(f"{path}: header length {length} exceeds the file size")
    return json.loads(raw.decode("utf-8"))


def read_safetensors_tensor(path: Path, name: str) -> np.ndarray:
    """Read one tensor from a safetensors file as float32."""
    header = read_safetensors_header(path)
    if name not in header:
        raise KeyError(f"{path}: tensor {name!r} not found")
    entry = header[name]
    storage_dtype, _ = SAFETENSORS_DTYPES[entry["dtype"]]
    start, end = entry["data_offsets"]
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        handle.seek(8 + length + start)
        raw = handle.read(end - start)
    stored = np.frombuffer(raw, dtype=storage_dtype).reshape(entry["shape"])
    if entry["dtype"] == "BF16":
        return bfloat16_bits_to_float32(stored)
    return stored.astype(np.float32)
