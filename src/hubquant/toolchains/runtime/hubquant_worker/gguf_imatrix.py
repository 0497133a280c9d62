"""Importance matrices for llama.cpp quantization, computed in llama.cpp itself.

This follows llama-imatrix of the pinned release (tools/imatrix/imatrix.cpp),
whose binary the llama-cpp-python wheel does not ship. The text is tokenized
with a BOS, cut into chunks of ``chunk_size`` tokens (the remainder is
dropped), and each chunk is decoded on its own with every output requested.
A graph callback receives each matrix multiplication with a ``blk.*`` weight and an
F32 activation of at least 16 rows, and adds the squared activations per input
column. The result is written in llama-imatrix's GGUF format
(``NAME.in_sum2``, ``NAME.counts``, ``imatrix.*`` keys), which
``llama-quantize --imatrix`` reads as well.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

import gguf  # the converter's own gguf-py, put on sys.path by hubquant_worker.gguf
from hubquant_worker.protocol import StepError, info, progress

KEY_DATASETS = "imatrix.datasets"
KEY_CHUNK_COUNT = "imatrix.chunk_count"
KEY_CHUNK_SIZE = "imatrix.chunk_size"
# Batches smaller than this are skipped by llama-imatrix, and so here.
MIN_ROWS = 16

GGML_MAX_DIMS = 4
GGML_MAX_SRC = 10
GGML_MAX_OP_PARAMS = 64
GGML_MAX_NAME = 64
GGML_TYPE_F32 = 0  # enum ggml_type in ggml.h


class GgmlTensor(ctypes.Structure):
    """``struct ggml_tensor`` as ggml.h of the pinned release declares it."""


GgmlTensor._fields_ = [
    ("type", ctypes.c_int),
    ("buffer", ctypes.c_void_p),
    ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
    ("nb", ctypes.c_size_t * GGML_MAX_DIMS),
    ("op", ctypes.c_int),
    ("op_params", ctypes.c_int32 * (GGML_MAX_OP_PARAMS // 4)),
    ("flags", ctypes.c_int32),
    ("src", ctypes.POINTER(GgmlTensor) * GGML_MAX_SRC),
    ("view_src", ctypes.POINTER(GgmlTensor)),
    ("view_offs", ctypes.c_size_t),
    ("data", ctypes.c_void_p),
    ("name", ctypes.c_char * GGML_MAX_NAME),
    ("extra", ctypes.c_void_p),
    ("padding", ctypes.c_char * 8),
]


def _ggml_library():
    import llama_cpp

    folder = Path(llama_cpp.__file__).parent / "lib"
    candidates = sorted(folder.glob("libggml-base.*"))
    if not candidates:
        raise StepError(f"libggml-base is missing from {folder}; rerun 'hubquant setup gguf'")
    library = ctypes.CDLL(str(candidates[0]))
    library.ggml_op_name.restype = ctypes.c_char_p
    library.ggml_op_name.argtypes = [ctypes.c_int]
    library.ggml_nbytes.restype = ctypes.c_size_t
    library.ggml_nbytes.argtypes = [ctypes.c_void_p]
    library.ggml_backend_tensor_get.restype = None
    library.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    return library


def _weight_name(raw: bytes) -> str:
    # Copies of a weight on another backend are named like "CUDA0#blk.0.ffn_up.weight#0".
    name = raw.decode("utf-8", "replace")
    if "#" in name:
        name = name.split("#")[1]
    return name


class Collector:
    """Sums of squared activations per input column, by weight name."""

    def __init__(self, library) -> None:
        self.library = library
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = {}
        self.error: str | None = None
        self._op_names: dict[int, str] = {}

    def _op_name(self, op: int) -> str:
        if op not in self._op_names:
            self._op_names[op] = self.library.ggml_op_name(op).decode()
        return self._op_names[op]

    def __call__(self, pointer, ask, user_data) -> bool:
        try:
            return self._collect(ctypes.cast(pointer, ctypes.POINTER(GgmlTensor)).contents, bool(ask))
        except Exception as error:  # an exception must not cross into C
            self.error = self.error or f"{type(error).__name__}: {error}"
            return False

    def _collect(self, tensor: GgmlTensor, ask: bool) -> bool:
        op = self._op_name(tensor.op)
        if op == "MUL_MAT_ID":
            if not ask:
                return True
            self.error = "mixture-of-experts layers (MUL_MAT_ID) are not supported by this importance-matrix run"
            return False
        if op != "MUL_MAT":
            return False
        weight = tensor.src[0].contents
        activation = tensor.src[1].contents
        name = _weight_name(weight.name)
        if ask:
            return activation.ne[1] >= MIN_ROWS and activation.type == GGML_TYPE_F32 and name.startswith("blk.")

        matrices = weight.ne[2] * weight.ne[3]
        if matrices != 1:
            self.error = f"{name}: weights with {matrices} matrices are not supported"
            return False
        # Copy the activation out of its backend buffer and view it with its strides.
        size = self.library.ggml_nbytes(ctypes.addressof(activation))
        buffer = np.empty(size, dtype=np.uint8)
        self.library.ggml_backend_tensor_get(ctypes.addressof(activation), buffer.ctypes.data, 0, size)
        shape = tuple(activation.ne[i] for i in reversed(range(GGML_MAX_DIMS)))
        strides = tuple(activation.nb[i] for i in reversed(range(GGML_MAX_DIMS)))
        values = np.lib.stride_tricks.as_strided(buffer.view(np.float32), shape=shape, strides=strides)
        values = values.astype(np.float64)

        squares = np.square(values).sum(axis=(0, 1, 2))
        if not np.all(np.isfinite(squares)):
            self.error = f"non-finite activations reached {name}"
            return False
        if name in self.sums:
            if self.sums[name].shape != squares.shape:
                self.error = f"inconsistent width for {name}: {self.sums[name].shape[0]} and {squares.shape[0]}"
                return False
            self.sums[name] += squares
        else:
            self.sums[name] = squares
        self.counts[name] = self.counts.get(name, 0) + int(shape[0] * shape[1] * shape[2])
        return True


def compute(request: dict) -> dict:
    """Compute an importance matrix.

    Request: ``model`` (an unquantized GGUF), ``text_file``, ``dataset_name``
    (recorded in ``imatrix.datasets``), ``output``, ``chunk_size``, optional
    ``max_chunks`` and ``threads``. Returns the chunk and token counts and each
    entry's row count.
    """
    import llama_cpp

    chunk_size = int(request["chunk_size"])
    if chunk_size < MIN_ROWS:
        raise StepError(f"chunk size {chunk_size} is below llama-imatrix's minimum batch of {MIN_ROWS} tokens")
    text = Path(request["text_file"]).read_text(encoding="utf-8")
    library = _ggml_library()
    collector = Collector(library)
    callback = llama_cpp.ggml_backend_sched_eval_callback(collector)

    # llama.cpp logs every tensor and setting as it loads; keep them off the worker's stderr.
    log_lines: list[str] = []

    @llama_cpp.llama_log_callback
    def on_log(level, text, user_data):
        log_lines.append(text.decode("utf-8", errors="replace"))

    llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    model_params = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(request["model"].encode(), model_params)
    if not model:
        reason = " ".join(line.strip() for line in log_lines if "error" in line.lower())[-500:]
        raise StepError(f"llama.cpp could not load {request['model']}: {reason or 'see the log'}")
    context = None
    try:
        context_params = llama_cpp.llama_context_default_params()
        context_params.n_ctx = chunk_size
        context_params.n_batch = chunk_size
        context_params.n_ubatch = chunk_size
        threads = int(request.get("threads") or os.cpu_count() or 2)
        context_params.n_threads = threads
        context_params.n_threads_batch = threads
        context_params.cb_eval = callback
        context_params.cb_eval_user_data = None
        context = llama_cpp.llama_init_from_model(model, context_params)
        if not context:
            raise StepError("llama.cpp could not create a context for the importance matrix")
        vocab = llama_cpp.llama_model_get_vocab(model)
        tokens = _tokenize(llama_cpp, vocab, text)
        add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        available = len(tokens) // chunk_size
        max_chunks = request.get("max_chunks")
        chunks = available if max_chunks is None else min(available, int(max_chunks))
        info(f"importance matrix: {len(tokens)} tokens, {chunks} chunks of {chunk_size}")
        batch = llama_cpp.llama_batch_init(chunk_size, 0, 1)
        try:
            for chunk in range(chunks):
                progress("imatrix", chunk, chunks)
                piece = tokens[chunk * chunk_size : (chunk + 1) * chunk_size]
                if add_bos:
                    piece[0] = llama_cpp.llama_vocab_bos(vocab)
                llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(context), True)
                _fill_batch(batch, piece)
                code = llama_cpp.llama_decode(context, batch)
                if collector.error:
                    raise StepError(f"importance matrix failed: {collector.error}")
                if code != 0:
                    raise StepError(f"llama_decode failed with code {code} on chunk {chunk}")
            progress("imatrix", chunks, chunks)
        finally:
            llama_cpp.llama_batch_free(batch)
    finally:
        if context:
            llama_cpp.llama_free(context)
        llama_cpp.llama_model_free(model)

    _write(Path(request["output"]), collector, [request["dataset_name"]], chunks, chunk_size)
    return {
        "file": request["output"],
        "chunk_count": chunks,
        "chunk_size": chunk_size,
        "tokens": len(tokens),
        "tokens_used": chunks * chunk_size,
        "entries": dict(sorted(collector.counts.items())),
    }


def _tokenize(llama_cpp, vocab, text: str) -> list[int]:
    # Special tokens are parsed, so chat turns rendered through a template keep
    # their role markers as single tokens.
    data = text.encode("utf-8")
    capacity = len(data) + 16
    buffer = (llama_cpp.llama_token * capacity)()
    count = llama_cpp.llama_tokenize(vocab, data, len(data), buffer, capacity, True, True)
    if count < 0:
        raise StepError(f"tokenization needs {-count} tokens, more than the buffer of {capacity}")
    return list(buffer[:count])


def _fill_batch(batch, tokens: list[int]) -> None:
    batch.n_tokens = len(tokens)
    for position, token in enumerate(tokens):
        batch.token[position] = token
        batch.pos[position] = position
        batch.n_seq_id[position] = 1
        batch.seq_id[position][0] = 0
        # Every output is requested, as in llama-imatrix, so the last layer's
        # feed-forward runs on every token.
        batch.logits[position] = True


def _write(path: Path, collector: Collector, datasets: list[str], chunks: int, chunk_size: int) -> None:
    writer = gguf.GGUFWriter(str(path), arch="", use_temp_file=False)
    # llama-imatrix files carry no architecture key, so drop the one the writer adds.
    for section in writer.kv_data:
        section.pop(gguf.Keys.General.ARCHITECTURE, None)
    writer.add_string(gguf.Keys.General.TYPE, "imatrix")
    writer.add_array(KEY_DATASETS, datasets)
    writer.add_uint32(KEY_CHUNK_COUNT, chunks)
    writer.add_uint32(KEY_CHUNK_SIZE, chunk_size)
    for name in sorted(collector.sums):
        # One matrix per weight, so 1-D tensors, as llama-imatrix's files have them.
        sums = collector.sums[name].astype(np.float32)
        counts = np.array([collector.counts[name]], dtype=np.float32)
        writer.add_tensor(f"{name}.in_sum2", sums)
        writer.add_tensor(f"{name}.counts", counts)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def read(path: Path) -> dict:
    """Read an importance-matrix file: its keys, and per entry the mean squared activations."""
    reader = gguf.GGUFReader(str(path))

    def scalar(key: str):
        field = reader.fields.get(key)
        return None if field is None else field.parts[field.data[0]].tolist()[0]

    datasets_field = reader.fields.get(KEY_DATASETS)
    datasets = [] if datasets_field is None else [bytes(datasets_field.parts[i]).decode() for i in datasets_field.data]
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        data = np.asarray(tensor.data, dtype=np.float32)
        if tensor.name.endswith(".in_sum2"):
            sums[tensor.name[: -len(".in_sum2")]] = data
        elif tensor.name.endswith(".counts"):
            counts[tensor.name[: -len(".counts")]] = data.reshape(-1)
    if set(sums) != set(counts):
        raise StepError(f"{path.name}: entries without both sums and counts: {sorted(set(sums) ^ set(counts))}")
    entries = {}
    for name, total in sums.items():
        matrices = counts[name].shape[0]
        rows = total.reshape(matrices, -1)
        mean = np.ones_like(rows)
        for index, count in enumerate(counts[name]):
            if count > 0:
                mean[index] = rows[index] / count
        entries[name] = {"values": mean.reshape(-1), "count": float(counts[name].min())}
    return {
        "chunk_count": scalar(KEY_CHUNK_COUNT),
        "chunk_size": scalar(KEY_CHUNK_SIZE),
        "datasets": datasets,
        "entries": entries,
    }


def quantize_array(llama_cpp, path: Path):
    """Build the ``llama_model_imatrix_data`` array that llama_model_quantize reads.

    Returns the array (terminated by an empty entry, as llama-quantize builds it),
    the objects that keep its memory alive, and the file's summary.
    """
    loaded = read(path)
    entries = loaded["entries"]
    array = (llama_cpp.llama_model_imatrix_data * (len(entries) + 1))()
    keep = []
    for index, (name, entry) in enumerate(sorted(entries.items())):
        values = np.ascontiguousarray(entry["values"], dtype=np.float32)
        encoded = name.encode()
        keep += [values, encoded]
        array[index].name = encoded
        array[index].data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        array[index].size = values.size
    array[len(entries)].name = None
    array[len(entries)].data = None
    array[len(entries)].size = 0
    summary = {key: loaded[key] for key in ("chunk_count", "chunk_size", "datasets")}
    summary["entries"] = len(entries)
    return array, keep, summary
