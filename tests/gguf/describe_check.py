"""Run in the gguf toolchain: compare the worker's header reader with gguf-py's
GGUFReader on each file given, and print one JSON line per file."""

import json
import sys
import time
from pathlib import Path

import gguf
from hubquant_worker.gguf import _LARGE_ARRAYS, _field_value, describe


def with_reader(path: str) -> dict:
    reader = gguf.GGUFReader(path)
    metadata = {name: _field_value(field) for name, field in reader.fields.items()
                if not name.startswith("GGUF.") and name not in _LARGE_ARRAYS}
    types, tensors, weights, tensor_bytes = {}, [], 0, 0
    for tensor in reader.tensors:
        types[tensor.tensor_type.name] = types.get(tensor.tensor_type.name, 0) + 1
        weights += int(tensor.n_elements)
        tensor_bytes += int(tensor.n_bytes)
        tensors.append({"name": tensor.name, "type": tensor.tensor_type.name, "shape": [int(x) for x in tensor.shape]})
    tokens = len(reader.fields["tokenizer.ggml.tokens"].data) if "tokenizer.ggml.tokens" in reader.fields else 0
    return {"metadata": metadata, "tensor_types": types, "tensors": tensors, "parameters": weights,
            "tensor_bytes": tensor_bytes, "vocab_tokens": tokens}


for path in sys.argv[1:]:
    started = time.perf_counter()
    fast = describe(Path(path))
    fast_seconds = time.perf_counter() - started
    expected = with_reader(path)
    differences = sorted(key for key in expected if fast[key] != expected[key])
    print(json.dumps({"file": Path(path).name, "differences": differences, "seconds": fast_seconds,
                      "vocab_tokens": fast["vocab_tokens"]}))
