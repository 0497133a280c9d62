"""llama.cpp steps: convert, quantize, inspect, split and evaluate GGUF files.

The converter is llama.cpp's own ``convert_hf_to_gguf.py`` with its matching
``gguf-py``, extracted from the llama-cpp-python sdist whose compiled library does
the quantizing and running, so all three come from one llama.cpp commit.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import re
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from hubquant_worker.protocol import StepError, info, progress, serve, warning

LLAMA_CPP_DIR = Path(sys.prefix).parent / "llama.cpp"
sys.path.insert(0, str(LLAMA_CPP_DIR / "gguf-py"))

import gguf  # noqa: E402  (the converter's own gguf-py, not PyPI's)

# GGUF type name -> llama_ftype value, as in llama.h of the pinned release.
FTYPES = {
    "F32": 0,
    "F16": 1,
    "Q4_0": 2,
    "Q4_1": 3,
    "Q8_0": 7,
    "Q5_0": 8,
    "Q5_1": 9,
    "Q2_K": 10,
    "Q3_K_S": 11,
    "Q3_K_M": 12,
    "Q3_K_L": 13,
    "Q4_K_S": 14,
    "Q4_K_M": 15,
    "Q5_K_S": 16,
    "Q5_K_M": 17,
    "Q6_K": 18,
    "IQ2_XXS": 19,
    "IQ2_XS": 20,
    "Q2_K_S": 21,
    "IQ3_XS": 22,
    "IQ3_XXS": 23,
    "IQ1_S": 24,
    "IQ4_NL": 25,
    "IQ3_S": 26,
    "IQ3_M": 27,
    "IQ2_S": 28,
    "IQ2_M": 29,
    "IQ4_XS": 30,
    "IQ1_M": 31,
    "BF16": 32,
}


# --- convert ---------------------------------------------------------------


def convert(request: dict) -> dict:
    source = Path(request["source_dir"])
    out_file = Path(request["out_file"])
    out_file.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        str(LLAMA_CPP_DIR / "convert_hf_to_gguf.py"),
        str(source),
        "--outfile",
        str(out_file),
        "--outtype",
        request["outtype"].lower(),
    ]
    if request.get("model_name"):
        command += ["--model-name", request["model_name"]]
    info(f"converting {source.name} to {request['outtype']} with convert_hf_to_gguf.py")
    env = dict(os.environ, NO_LOCAL_GGUF="")
    env.pop("NO_LOCAL_GGUF")
    lines: list[str] = []
    with subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    ) as process:
        for line in _lines(process.stderr):
            written = _WRITING.search(line)
            if written:
                # The tensor data is written last, with a byte count on tqdm's
                # bar. That is the long part of a conversion.
                progress("convert", _tqdm_bytes(*written.group(1, 2)), _tqdm_bytes(*written.group(3, 4)))
                continue
            lines.append(line)
            sys.stderr.write(line + "\n")
        returncode = process.wait()
    if returncode != 0:
        message = "\n".join([line for line in lines if line.strip()][-8:])
        raise StepError(f"convert_hf_to_gguf.py failed:\n{message}")
    return {"file": str(out_file), **describe(out_file)}


# tqdm's bar as the converter's writer prints it: "Writing:  91%|...| 32.8M/36.2M [...]".
_WRITING = re.compile(r"^Writing:.*\|\s*([\d.]+)([kMGTP]?)/([\d.]+)([kMGTP]?)\s")
_UNITS = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}


def _tqdm_bytes(number: str, unit: str) -> float:
    return float(number) * _UNITS[unit]


def _lines(stream):
    """Yield text lines ended by a newline or a carriage return (tqdm redraws)."""
    pending = b""
    for chunk in iter(lambda: stream.read1(65536), b""):
        pending += chunk
        *complete, pending = re.split(rb"\r|\n", pending)
        for line in complete:
            if line:
                yield line.decode("utf-8", errors="replace")
    if pending:
        yield pending.decode("utf-8", errors="replace")


# --- quantize --------------------------------------------------------------


class QuantizeLog:
    """Collects llama.cpp's log lines while the quantizer runs."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._partial = ""
        self._counted = ""
        self.total = 0
        self._lock = threading.Lock()

    def add(self, text: str) -> None:
        with self._lock:
            self._partial += text
            while "\n" in self._partial:
                line, self._partial = self._partial.split("\n", 1)
                self.lines.append(line)
                sys.stderr.write(line + "\n")
            # llama.cpp starts each tensor's line with "[  12/ 291] name ..." and
            # ends it in a later call, so the count is read from the open line.
            counted = _TENSOR_COUNT.match(self._partial)
            if counted and counted.group(0) != self._counted:
                self._counted = counted.group(0)
                self.total = int(counted.group(2))
                progress("quantize", int(counted.group(1)) - 1, int(counted.group(2)))


_TENSOR_COUNT = re.compile(r"\[\s*(\d+)/\s*(\d+)\]")

# llama.cpp b11312 logs, per tensor that needs it:
#   "blk.0.ffn_down.weight - ncols 640 not divisible by 256 (required for type q4_K)
#    -> falling back to q5_0"
_FALLBACK = re.compile(
    r"(\S+)\s+- ncols\s+(\d+) not divisible by (\d+) \(required for type\s+(\w+)\)"
    r" -> falling back to\s+(\w+)"
)


def quantize(request: dict) -> dict:
    import llama_cpp

    type_name = request["type"]
    if type_name not in FTYPES:
        raise StepError(f"unknown llama.cpp quantization type {type_name!r}")
    log = QuantizeLog()

    @llama_cpp.llama_log_callback
    def on_log(level, text, user_data):
        log.add(text.decode("utf-8", errors="replace"))

    llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[type_name]
    params.nthread = int(request.get("threads") or 0)
    params.only_copy = bool(request.get("only_copy", False))
    kv_overrides = dict(request.get("kv_overrides") or {})
    for key in ("output_tensor_type", "token_embedding_type"):
        if request.get(key):
            setattr(params, key, _ggml_type(request[key]))
    imatrix_summary = None
    keep_alive: list = []  # the importance-matrix arrays, read by llama_model_quantize
    if request.get("imatrix"):
        from hubquant_worker import gguf_imatrix

        imatrix_array, keep_alive, imatrix_summary = gguf_imatrix.quantize_array(llama_cpp, Path(request["imatrix"]))
        params.imatrix = ctypes.cast(imatrix_array, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        # The keys llama-quantize writes when it uses an importance matrix.
        kv_overrides["quantize.imatrix.file"] = Path(request["imatrix"]).name
        if imatrix_summary["datasets"]:
            kv_overrides["quantize.imatrix.dataset"] = imatrix_summary["datasets"][0]
        kv_overrides["quantize.imatrix.entries_count"] = imatrix_summary["entries"]
        kv_overrides["quantize.imatrix.chunks_count"] = imatrix_summary["chunk_count"]
    overrides = _kv_overrides(llama_cpp, kv_overrides)
    if overrides is not None:
        params.kv_overrides = ctypes.cast(
            overrides, ctypes.POINTER(llama_cpp.llama_model_kv_override)
        )
    info(f"quantizing to {type_name}")
    code = llama_cpp.llama_model_quantize(
        request["input"].encode(), request["output"].encode(), ctypes.byref(params)
    )
    if code == 0 and log.total:
        progress("quantize", log.total, log.total)
    if code != 0:
        reason = [line for line in log.lines if "error" in line.lower()][-3:]
        raise StepError(
            f"llama_model_quantize to {type_name} failed (code {code}): "
            + (" ".join(reason) or "see the log")
        )
    fallbacks = _parse_fallbacks(log.lines)
    for item in fallbacks:
        warning(
            f"{item['tensor']}: width {item['columns']} is not divisible by "
            f"{item['block']}, stored as {item['type']}"
        )
    return {"file": request["output"], "fallbacks": fallbacks, **describe(Path(request["output"]))}


def _ggml_type(name: str) -> int:
    try:
        return gguf.GGMLQuantizationType[name.upper()].value
    except KeyError:
        raise StepError(f"unknown ggml tensor type {name!r}") from None


def imatrix(request: dict) -> dict:
    from hubquant_worker import gguf_imatrix

    return gguf_imatrix.compute(request)


def read_imatrix(request: dict) -> dict:
    from hubquant_worker import gguf_imatrix

    loaded = gguf_imatrix.read(Path(request["file"]))
    entries = {name: entry["count"] for name, entry in sorted(loaded["entries"].items())}
    return {**{key: loaded[key] for key in ("chunk_count", "chunk_size", "datasets")}, "entries": entries}


def _kv_overrides(llama_cpp, values: dict):
    """Build llama.cpp's kv-override array (integers are written as uint32)."""
    if not values:
        return None
    array = (llama_cpp.llama_model_kv_override * (len(values) + 1))()
    for index, (key, value) in enumerate(values.items()):
        entry = array[index]
        entry.key = key.encode()
        if isinstance(value, bool):
            entry.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_BOOL
            entry.value.val_bool = value
        elif isinstance(value, int):
            entry.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
            entry.value.val_i64 = value
        elif isinstance(value, float):
            entry.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_FLOAT
            entry.value.val_f64 = value
        else:
            entry.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
            entry.value.val_str = str(value).encode()[:127]
    array[len(values)].key = b""
    return array


def _parse_fallbacks(lines: list[str]) -> list[dict]:
    """Find tensors that the quantizer stored in another type than requested."""
    fallbacks = []
    for line in lines:
        match = _FALLBACK.search(line)
        if match:
            fallbacks.append(
                {
                    "tensor": match.group(1),
                    "columns": int(match.group(2)),
                    "block": int(match.group(3)),
                    "requested": match.group(4).upper(),
                    "type": match.group(5).upper(),
                }
            )
    return fallbacks


# --- inspect ---------------------------------------------------------------


def _field_value(field):
    types = field.types
    if not types:
        return None
    if types[0] == gguf.GGUFValueType.ARRAY:
        if len(types) > 1 and types[1] == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if types[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
    return field.parts[field.data[0]].tolist()[0]


_LARGE_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")


# GGUF value types (gguf-py's GGUFValueType) and the struct format of the fixed-size ones.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class _HeaderReader:
    """Reads a GGUF header (metadata and tensor infos) without touching tensor data.

    gguf-py's GGUFReader builds numpy views of every element of every field,
    which took 1.2 to 1.7 s per file with a 32k-token vocabulary. This class
    reads the same values with struct in 10 to 30 ms. Large arrays in ``skip``
    are skipped and only their length is kept.
    """

    def __init__(self, data, skip: tuple[str, ...]) -> None:
        self.data = data
        self.offset = 0
        self.skip = skip

    def unpack(self, fmt: str):
        (value,) = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.unpack("<Q")
        text = bytes(self.data[self.offset : self.offset + length]).decode("utf-8", "replace")
        self.offset += length
        return text

    def value(self, kind: int, keep: bool = True):
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            if keep:
                return self.string()
            length = self.unpack("<Q")
            self.offset += length
            return None
        if kind == _ARRAY:
            element, count = self.unpack("<I"), self.unpack("<Q")
            if not keep and element in _SCALARS:
                size = count * struct.calcsize(_SCALARS[element])
                self.offset += size
                return count
            if not keep:
                # Step over each element (strings have their own lengths) without keeping them.
                for _ in range(count):
                    self.value(element, keep=False)
                return count
            return [self.value(element) for _ in range(count)]
        raise StepError(f"unknown GGUF value type {kind} at byte {self.offset}")

    def read(self) -> tuple[dict, dict, list[dict]]:
        if bytes(self.data[:4]) != b"GGUF":
            raise StepError("not a GGUF file (no GGUF magic)")
        self.offset = 4
        version = self.unpack("<I")
        if version < 2:
            raise StepError(f"GGUF version {version} is not supported")
        tensor_count, field_count = self.unpack("<Q"), self.unpack("<Q")
        metadata, skipped = {}, {}
        for _ in range(field_count):
            name = self.string()
            kind = self.unpack("<I")
            if name in self.skip:
                skipped[name] = self.value(kind, keep=False)
            else:
                metadata[name] = self.value(kind)
        tensors = []
        for _ in range(tensor_count):
            name = self.string()
            dims = [self.unpack("<Q") for _ in range(self.unpack("<I"))]
            type_id = self.unpack("<I")
            self.unpack("<Q")  # offset in the data section
            tensors.append({"name": name, "type_id": type_id, "shape": dims})
        return metadata, skipped, tensors


def describe(path: Path) -> dict:
    """Summarise a GGUF file: metadata, tensor types and measured bits per weight."""
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        view = memoryview(data)
        try:
            metadata, skipped, tensor_infos = _HeaderReader(view, _LARGE_ARRAYS).read()
        finally:
            view.release()
    types: dict[str, int] = {}
    tensors = []
    weights = 0
    tensor_bytes = 0
    for tensor_info in tensor_infos:
        quant_type = gguf.GGMLQuantizationType(tensor_info["type_id"])
        block_size, type_size = gguf.GGML_QUANT_SIZES[quant_type]
        elements = 1
        for dim in tensor_info["shape"]:
            elements *= dim
        types[quant_type.name] = types.get(quant_type.name, 0) + 1
        weights += elements
        tensor_bytes += elements // block_size * type_size
        tensors.append({"name": tensor_info["name"], "type": quant_type.name, "shape": tensor_info["shape"]})
    token_count = skipped.get("tokenizer.ggml.tokens", 0)
    return {
        "metadata": metadata,
        "tensor_types": types,
        "tensors": tensors,
        "parameters": weights,
        "tensor_bytes": tensor_bytes,
        "file_bytes": path.stat().st_size,
        "bits_per_weight": 8 * tensor_bytes / weights if weights else 0.0,
        "vocab_tokens": token_count,
    }


def read_tensor(request: dict) -> dict:
    reader = gguf.GGUFReader(request["file"])
    for tensor in reader.tensors:
        if tensor.name == request["name"]:
            return {"values": np.asarray(tensor.data, dtype=np.float64).reshape(-1).tolist()}
    return {"values": None}


def max_abs(request: dict) -> dict:
    """Return the largest absolute weight among the file's float tensors."""
    reader = gguf.GGUFReader(request["file"])
    peak = 0.0
    for tensor in reader.tensors:
        kind = tensor.tensor_type
        if kind == gguf.GGMLQuantizationType.BF16:
            raw = np.asarray(tensor.data).view(np.uint16).astype(np.uint32) << 16
            values = raw.view(np.float32)
        elif kind in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            values = np.asarray(tensor.data)
        else:
            continue
        peak = max(peak, float(np.abs(values.astype(np.float32)).max()))
    return {"max_abs": peak}


def inspect(request: dict) -> dict:
    return describe(Path(request["file"]))


# --- split -----------------------------------------------------------------


def split(request: dict) -> dict:
    """Split a GGUF into parts of at most ``max_bytes`` in llama.cpp's split format.

    The parts are named ``{stem}-00001-of-0000N.gguf`` and carry the ``split.no``,
    ``split.count`` and ``split.tensors.count`` keys, as llama-gguf-split writes them.
    """
    source = Path(request["file"])
    max_bytes = int(request["max_bytes"])
    reader = gguf.GGUFReader(str(source))
    arch = _field_value(reader.fields["general.architecture"])

    # Each part's size counts its header: the whole metadata (vocabulary
    # included) in the first part, and per tensor its info and alignment padding.
    first_header = int(reader.data_offset) + 1024
    later_header = 1024
    per_tensor = 256
    groups: list[list] = [[]]
    size = first_header
    for tensor in reader.tensors:
        needed = int(tensor.n_bytes) + per_tensor
        if later_header + needed > max_bytes:
            raise StepError(
                f"tensor {tensor.name} takes {int(tensor.n_bytes)} bytes, more than a part of at most "
                f"{max_bytes} bytes can hold; llama.cpp's split format cannot split one tensor, so raise the limit"
            )
        if groups[-1] and size + needed > max_bytes:
            groups.append([])
            size = later_header
        groups[-1].append(tensor)
        size += needed

    count = len(groups)
    stem = source.name[: -len(".gguf")]
    parts = []
    for index, group in enumerate(groups):
        part = source.parent / f"{stem}-{index + 1:05d}-of-{count:05d}.gguf"
        writer = gguf.GGUFWriter(str(part), arch, use_temp_file=False)
        if index == 0:
            _copy_metadata(reader, writer)
        writer.add_uint16(gguf.Keys.Split.LLM_KV_SPLIT_NO, index)
        writer.add_uint16(gguf.Keys.Split.LLM_KV_SPLIT_COUNT, count)
        writer.add_int32(gguf.Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT, len(reader.tensors))
        for tensor in group:
            data = np.asarray(tensor.data)
            writer.add_tensor_info(
                tensor.name,
                list(data.shape),
                data.dtype,
                int(tensor.n_bytes),
                raw_dtype=tensor.tensor_type,
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor in group:
            writer.write_tensor_data(np.asarray(tensor.data))
        writer.close()
        if part.stat().st_size > max_bytes:
            raise StepError(f"part {part.name} came out at {part.stat().st_size} bytes, over the limit of {max_bytes}")
        parts.append(str(part))
    del reader
    source.unlink()
    return {"parts": parts}


def _copy_metadata(reader, writer) -> None:
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name.startswith("split.") or name == "general.architecture":
            continue
        value_type = field.types[0]
        value = _field_value(field)
        if value_type == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(name, value, value_type, sub_type=field.types[1])
        else:
            writer.add_key_value(name, value, value_type)


# --- evaluate --------------------------------------------------------------


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Compare two logit matrices (positions x vocab) as llama.cpp's KL tool does."""
    if reference.shape != candidate.shape:
        raise StepError(f"logit shapes differ: {reference.shape} vs {candidate.shape}")
    finite = bool(np.isfinite(candidate).all())
    if not finite:
        return {"finite": False, "max_abs_diff": float("inf"), "kl_mean": float("inf"),
                "kl_max": float("inf"), "top1_agreement": 0.0}
    log_p = _log_softmax(reference.astype(np.float64))
    log_q = _log_softmax(candidate.astype(np.float64))
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=-1)
    return {
        "finite": True,
        "max_abs_diff": float(np.abs(reference - candidate).max()),
        "kl_mean": float(kl.mean()),
        "kl_max": float(kl.max()),
        "top1_agreement": float((reference.argmax(-1) == candidate.argmax(-1)).mean()),
    }


def evaluate(request: dict) -> dict:
    """Run a GGUF on fixed token ids and compare it with reference logits.

    Request: ``file``, ``prompts`` (``id``, ``text``, ``input_ids``,
    ``reference_logits`` path or null, ``continuation``), ``eos_ids``,
    ``max_new_tokens``, ``out_dir`` (where this file's logits are saved), ``n_ctx``.
    """
    import llama_cpp
    from llama_cpp import Llama

    out_dir = Path(request["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    longest = max(len(p["input_ids"]) for p in request["prompts"])
    n_ctx = int(request.get("n_ctx") or max(256, longest + 64))
    llm = Llama(
        model_path=request["file"],
        n_ctx=n_ctx,
        n_batch=max(512, longest + 1),
        logits_all=True,
        n_threads=int(request.get("threads") or os.cpu_count() or 2),
        use_mmap=True,
        verbose=False,
    )
    vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
    results = []
    for index, prompt in enumerate(request["prompts"]):
        progress("evaluate", index, len(request["prompts"]))
        ids = list(prompt["input_ids"])
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[: len(ids), :], dtype=np.float32)
        logits_path = out_dir / f"{prompt['id']}.logits.npy"
        np.save(logits_path, logits)

        entry = {"id": prompt["id"], "logits_path": str(logits_path)}
        if prompt.get("reference_logits"):
            reference = np.load(prompt["reference_logits"])
            entry["comparison"] = compare_logits(reference, logits)
        entry["continuation"] = _greedy(llm, vocab, logits[-1], request["max_new_tokens"])
        if prompt.get("text") is not None:
            entry["tokens_from_text"] = llm.tokenize(
                prompt["text"].encode("utf-8"), add_bos=False, special=True
            )
        results.append(entry)

    eos = [
        {"id": token, "is_eog": bool(llama_cpp.llama_vocab_is_eog(vocab, token))}
        for token in request.get("eos_ids", [])
    ]
    return {
        "prompts": results,
        "eos": eos,
        "chat_template": _chat_template(llm),
        "n_vocab": int(llm.n_vocab()),
    }


def _greedy(llm, vocab, last_logits: np.ndarray, max_new_tokens: int) -> dict:
    import llama_cpp

    tokens: list[int] = []
    stopped = False
    logits = last_logits
    for _ in range(max_new_tokens):
        token = int(np.argmax(logits))
        if llama_cpp.llama_vocab_is_eog(vocab, token):
            stopped = True
            tokens.append(token)
            break
        tokens.append(token)
        llm.eval([token])
        logits = np.array(llm.scores[llm.n_tokens - 1, :], dtype=np.float32)
    return {"tokens": tokens, "stopped_at_eog": stopped}


def _chat_template(llm) -> str | None:
    return llm.metadata.get("tokenizer.chat_template")


def forced_stop(request: dict) -> dict:
    """Force each EOS id with a logit bias and check that generation ends on it."""
    from llama_cpp import Llama

    llm = Llama(model_path=request["file"], n_ctx=256, verbose=False, n_threads=os.cpu_count() or 2)
    outcomes = []
    for token in request["eos_ids"]:
        output = llm.create_completion(
            request["prompt"],
            max_tokens=8,
            temperature=0.0,
            logit_bias={token: 100.0},
        )
        outcomes.append(
            {"id": token, "finish_reason": output["choices"][0]["finish_reason"],
             "generated_tokens": output["usage"]["completion_tokens"]}
        )
    return {"outcomes": outcomes}


def build_info(request: dict) -> dict:
    """Return what the compiled library reports about its own build: the CPU
    features it was compiled for and the llama.cpp commit given to the build."""
    import llama_cpp

    library = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    library.ggml_commit.restype = ctypes.c_char_p
    features = {}
    for part in llama_cpp.llama_print_system_info().decode().split("|"):
        name, _, value = part.partition("=")
        if value.strip():
            features[name.split(":")[-1].strip()] = value.strip()
    return {"ggml_commit": library.ggml_commit().decode(), "features": features}


OPERATIONS = {
    "build_info": build_info,
    "convert": convert,
    "quantize": quantize,
    "inspect": inspect,
    "read_tensor": read_tensor,
    "max_abs": max_abs,
    "split": split,
    "evaluate": evaluate,
    "forced_stop": forced_stop,
    "imatrix": imatrix,
    "read_imatrix": read_imatrix,
}


def handle(request: dict) -> dict:
    operation = request.get("op")
    if operation not in OPERATIONS:
        raise StepError(f"unknown gguf operation {operation!r}; known: {sorted(OPERATIONS)}")
    return OPERATIONS[operation](request)


if __name__ == "__main__":
    serve(handle)
