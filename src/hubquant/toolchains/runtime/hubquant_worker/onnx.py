"""onnxruntime-genai steps: check a source, build a variant, describe and run it.

The variants are built by onnxruntime-genai's own model builder
(``python -m onnxruntime_genai.models.builder``), run as a subprocess exactly as
a user would run it, and evaluated with the onnxruntime-genai runtime of the
same release.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from hubquant_worker.protocol import StepError, info, progress, serve

# Nodes that only reshape or retype a weight on its way to the op that uses it.
_PASS_THROUGH_OPS = {"Reshape", "Transpose", "Cast", "Identity", "Squeeze", "Unsqueeze"}
_QUANTIZED_OPS = {"MatMulNBits", "GatherBlockQuantized"}


# --- check_source ------------------------------------------------------------


def check_source(request: dict) -> dict:
    """List the layers that onnxruntime-genai 0.18.0's builder would mis-wire.

    The builder walks every module of the loaded model and treats any
    ``nn.Linear`` whose ``out_features`` equals ``vocab_size`` as the LM head,
    and any ``nn.Embedding`` with ``vocab_size`` rows as the token embedding
    (builders/base.py, ``has_lm_head`` and ``make_model``). The model is built
    here on the meta device, so no weights are read.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(request["source_dir"])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    vocab_size = int(config.vocab_size)
    head = model.get_output_embeddings()
    embedding = model.get_input_embeddings()
    conflicts = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module.out_features == vocab_size and module is not head:
            conflicts.append({"module": name, "kind": "Linear", "width": int(module.out_features)})
        if isinstance(module, torch.nn.Embedding) and module.num_embeddings == vocab_size and module is not embedding:
            conflicts.append({"module": name, "kind": "Embedding", "width": int(module.num_embeddings)})
    return {
        "vocab_size": vocab_size,
        "tie_word_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
        "conflicts": conflicts,
    }


# --- build -------------------------------------------------------------------


def build(request: dict) -> dict:
    """Run the model builder once: one precision for one execution provider."""
    out_dir = Path(request["out_dir"])
    cache_dir = Path(request["cache_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)

    command = [
        sys.executable,
        "-m",
        "onnxruntime_genai.models.builder",
        "-i",
        request["source_dir"],
        "-o",
        str(out_dir),
        "-p",
        request["precision"],
        "-e",
        request["execution_provider"],
        "-c",
        str(cache_dir),
    ]
    options = request.get("extra_options") or {}
    if options:
        command += ["--extra_options", *[f"{key}={value}" for key, value in options.items()]]

    env = dict(os.environ)
    # The builder runs `git rev-parse HEAD` above its site-packages for the
    # producer string. A nonexistent GIT_DIR makes that fail, so it falls back
    # to the commit recorded in the onnxruntime_genai package, even when the
    # toolchain lies inside someone's git checkout.
    env["GIT_DIR"] = str(out_dir / ".no-git-repository")

    info("running " + " ".join(command[1:]))
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.monotonic() - started
    sys.stderr.write(result.stderr[-20000:])
    if result.returncode != 0:
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        raise StepError("the onnxruntime-genai model builder failed:\n" + "\n".join(lines[-8:]))
    return {"out_dir": str(out_dir), "seconds": seconds, "command": command[1:]}


# --- GPTQ ------------------------------------------------------------------


class _DecoderCalibration:
    """Rows of calibration token ids as inputs of a builder's decoder graph.

    Each row is one prompt with an empty KV cache: ``input_ids``, an
    all-ones ``attention_mask``, ``position_ids`` when the graph takes them,
    and past keys and values with a past length of 0.
    """

    def __init__(self, rows: list[list[int]], graph_inputs, decoder: dict) -> None:
        self.rows = rows
        self.inputs = graph_inputs
        # The cache's head count and size, which the graph may leave symbolic.
        self.kv_shape = (decoder["num_key_value_heads"], decoder["head_size"])
        self.index = 0

    def get_next(self) -> dict | None:
        if self.index >= len(self.rows):
            return None
        ids = np.array([self.rows[self.index]], dtype=np.int64)
        self.index += 1
        feed = {}
        for graph_input in self.inputs:
            name = graph_input.name
            if name == "input_ids":
                feed[name] = ids
            elif name == "attention_mask":
                feed[name] = np.ones_like(ids)
            elif name == "position_ids":
                feed[name] = np.arange(ids.shape[1], dtype=np.int64)[None, :]
            elif name.startswith("past_key_values."):
                # [batch, kv heads, past length, head size]
                shape = (1, self.kv_shape[0], 0, self.kv_shape[1])
                feed[name] = np.zeros(shape, dtype=_numpy_dtype(graph_input.type.tensor_type.elem_type))
            else:
                raise StepError(f"the decoder graph has an input {name!r} that GPTQ calibration cannot fill")
        return feed

    def rewind(self) -> None:
        self.index = 0

    def __iter__(self):
        self.rewind()
        while (feed := self.get_next()) is not None:
            yield feed


def _numpy_dtype(code: int):
    from onnx import helper

    return helper.tensor_dtype_to_np_dtype(code)


def gptq(request: dict) -> dict:
    """Quantize the MatMul weights of an fp32 variant folder in place with GPTQ.

    Request: ``folder`` (a copy of the builder's fp32 CPU variant),
    ``source_dir`` (for its tokenizer), ``calibration_text``, ``sequence_length``
    and ``max_rows`` (how the text is cut into prompts), ``bits``, ``block_size``,
    ``symmetric``, ``accuracy_level`` and ``exclude`` (node names left in
    float). onnxruntime's MatMulNBitsQuantizer runs GPTQ (its bundled port of
    Intel Neural Compressor) and writes MatMulNBits nodes, the same operator
    the builder writes, so onnxruntime-genai runs the folder unchanged.
    """
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import GPTQWeightOnlyQuantConfig, MatMulNBitsQuantizer
    from transformers import AutoTokenizer

    folder = Path(request["folder"])
    model_path = folder / "model.onnx"
    length = int(request["sequence_length"])
    tokens = AutoTokenizer.from_pretrained(request["source_dir"])(request["calibration_text"])["input_ids"]
    rows = [tokens[start : start + length] for start in range(0, len(tokens) - length + 1, length)]
    rows = rows[: int(request.get("max_rows") or len(rows))]
    if not rows:
        raise StepError(f"the calibration text has {len(tokens)} tokens, fewer than one row of {length}")
    model = onnx.load(str(model_path))
    decoder = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
    reader = _DecoderCalibration(rows, list(model.graph.input), decoder)
    info(f"GPTQ on {len(rows)} calibration rows of {length} tokens, block size {request['block_size']}")
    started = time.monotonic()
    quantizer = MatMulNBitsQuantizer(
        model,
        bits=int(request["bits"]),
        block_size=int(request["block_size"]),
        is_symmetric=bool(request["symmetric"]),
        accuracy_level=int(request["accuracy_level"]) or None,
        nodes_to_exclude=list(request.get("exclude") or []),
        algo_config=GPTQWeightOnlyQuantConfig(calibration_data_reader=reader),
    )
    quantizer.process()
    for stale in (model_path, folder / "model.onnx.data"):
        stale.unlink(missing_ok=True)
    quantizer.model.save_model_to_file(str(model_path), use_external_data_format=True)
    (folder / "model.onnx.data").chmod(0o644)  # onnx writes it owner-only
    return {"seconds": time.monotonic() - started, "rows": len(rows), "sequence_length": length, "tokens": len(tokens)}


# --- describe ----------------------------------------------------------------


def _dtype_name(code: int) -> str:
    import onnx

    return onnx.TensorProto.DataType.Name(code)


def _initializer_bytes(tensor) -> int:
    import onnx

    for entry in tensor.external_data:
        if entry.key == "length":
            return int(entry.value)
    if tensor.raw_data:
        return len(tensor.raw_data)
    return onnx.numpy_helper.to_array(tensor).nbytes


def _elements(dims) -> int:
    count = 1
    for dim in dims:
        count *= int(dim)
    return count


def _trace_weight(name: str, producers: dict, initializers: set) -> str | None:
    """Follow a weight input back through reshapes and casts to its initializer."""
    seen = 0
    while name not in initializers and seen < 8:
        node = producers.get(name)
        if node is None or node.op_type not in _PASS_THROUGH_OPS:
            return None
        name = node.input[0]
        seen += 1
    return name if name in initializers else None


def _attributes(node) -> dict:
    import onnx

    return {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in node.attribute}


def _matrix_group(node_name: str) -> str:
    """Name a weight matrix without its layer number: ``attn/qkv_proj``, ``lm_head``."""
    parts = [part for part in node_name.strip("/").split("/") if part]
    parts = [part for part in parts if part != "model" and not part.startswith("layers.")]
    if parts and parts[-1].startswith(("MatMul", "Gather")):
        parts = parts[:-1]
    return "/".join(parts) or node_name


def describe(request: dict) -> dict:
    """Summarise a built variant: graph check, ops, types, quantization facts, sizes."""
    import onnx

    folder = Path(request["folder"])
    model_path = folder / "model.onnx"
    model = onnx.load(str(model_path), load_external_data=False)
    checker_error = _check_graph(model, folder)
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list] = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)

    logical: dict[str, int] = {name: _elements(tensor.dims) for name, tensor in initializers.items()}
    quantized_nodes = []
    for node in graph.node:
        if node.op_type not in _QUANTIZED_OPS:
            continue
        attributes = _attributes(node)
        weight = _trace_weight(node.input[0 if node.op_type == "GatherBlockQuantized" else 1], producers, set(initializers))
        scales = node.input[2] if len(node.input) > 2 else ""
        zero_points = node.input[3] if len(node.input) > 3 else ""
        if node.op_type == "MatMulNBits":
            rows, columns = int(attributes["N"]), int(attributes["K"])
        else:
            tensor = initializers.get(weight) if weight else None
            rows = int(tensor.dims[0]) if tensor is not None else 0
            columns = _gather_columns(tensor) if tensor is not None else 0
        if weight:
            logical[weight] = rows * columns
        for name in (scales, zero_points):
            if name in logical:
                logical[name] = 0
        quantized_nodes.append(
            {
                "name": node.name,
                "op": node.op_type,
                "group": _matrix_group(node.name),
                "bits": int(attributes.get("bits", 4)),
                "block_size": int(attributes.get("block_size", 0)),
                "accuracy_level": int(attributes.get("accuracy_level", 0)),
                "symmetric": not zero_points,
                "rows": rows,
                "columns": columns,
            }
        )

    embedding, head = _embedding_and_head(graph, producers, set(initializers))
    total_bytes = sum(_initializer_bytes(tensor) for tensor in initializers.values())
    weights = sum(logical.values())
    genai_config = json.loads((folder / "genai_config.json").read_text())
    decoder = genai_config["model"]["decoder"]
    providers = [name for entry in decoder.get("session_options", {}).get("provider_options", []) for name in entry]
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    template_file = folder / "chat_template.jinja"
    return {
        "checker_error": checker_error,
        "ir_version": int(model.ir_version),
        "opsets": {entry.domain or "ai.onnx": int(entry.version) for entry in model.opset_import},
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "ops": dict(collections.Counter(f"{node.domain or 'ai.onnx'}.{node.op_type}" for node in graph.node)),
        "node_types": _node_types(graph, initializers),
        "inputs": {value.name: _dtype_name(value.type.tensor_type.elem_type) for value in graph.input},
        "outputs": {value.name: _dtype_name(value.type.tensor_type.elem_type) for value in graph.output},
        "initializer_types": dict(collections.Counter(_dtype_name(t.data_type) for t in initializers.values())),
        "quantized_nodes": quantized_nodes,
        "embedding": embedding,
        "lm_head": head,
        "shared_embeddings": bool(embedding["weight"] and embedding["weight"] == head["weight"]),
        "tensor_bytes": total_bytes,
        "weights": weights,
        "bits_per_weight": 8 * total_bytes / weights if weights else 0.0,
        "genai_config": {
            "type": genai_config["model"].get("type"),
            "eos_token_id": _as_list(genai_config["model"].get("eos_token_id")),
            "context_length": genai_config["model"].get("context_length"),
            "providers": providers,
            "filename": decoder.get("filename"),
        },
        "files": {path.relative_to(folder).as_posix(): path.stat().st_size for path in files},
        "chat_template": template_file.read_text() if template_file.is_file() else None,
    }


# Operators that onnxruntime registers in the ONNX domain although ONNX itself
# does not define them (onnxruntime docs/OperatorKernels.md lists
# SimplifiedLayerNormalization under ai.onnx, opset 1).
_ORT_ONNX_DOMAIN_OPS = {"SimplifiedLayerNormalization"}


def _check_graph(model, folder: Path) -> str | None:
    """Run the ONNX checker on the graph and its external data; return its error or None.

    The checker has no schema for onnxruntime's own ONNX-domain operators, so it
    checks a copy of the graph in which those nodes are moved to the
    com.microsoft domain, whose operators it skips.
    """
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node in copy.graph.node:
        if node.domain in ("", "ai.onnx") and node.op_type in _ORT_ONNX_DOMAIN_OPS:
            node.domain = "com.microsoft"
    path = folder / ".checker-copy.onnx"
    onnx.save(copy, str(path))
    try:
        onnx.checker.check_model(str(path))
    except Exception as error:  # the checker raises several types; report the message
        return f"{type(error).__name__}: {error}"
    finally:
        path.unlink(missing_ok=True)
    return None


def _gather_columns(tensor) -> int:
    # GatherBlockQuantized data is [rows, columns] for int4 types, or [rows,
    # columns / 2] bytes when stored as uint8 with two 4-bit values per byte.
    import onnx

    columns = int(tensor.dims[-1]) if len(tensor.dims) > 1 else 0
    if tensor.data_type == onnx.TensorProto.UINT8:
        return columns * 2
    return columns


def _node_types(graph, initializers: dict) -> list[dict]:
    """Return each operator with the element type of its first typed input."""
    types: dict[str, str] = {value.name: value.type.tensor_type.elem_type for value in graph.input}
    for value in graph.value_info:
        types[value.name] = value.type.tensor_type.elem_type
    for name, tensor in initializers.items():
        types[name] = tensor.data_type
    for value in graph.output:
        types[value.name] = value.type.tensor_type.elem_type
    entries = set()
    for node in graph.node:
        element = next((types[name] for name in node.output if name in types), None)
        if element is None:
            element = next((types[name] for name in node.input if name in types), None)
        entries.add((node.domain or "ai.onnx", node.op_type, _dtype_name(element) if element else ""))
    return [{"domain": d, "op": o, "type": t} for d, o, t in sorted(entries)]


def _embedding_and_head(graph, producers: dict, initializers: set) -> tuple[dict, dict]:
    embedding = {"node": None, "op": None, "weight": None}
    for node in graph.node:
        if node.op_type in ("Gather", "GatherBlockQuantized") and "input_ids" in node.input[1:2]:
            embedding = {"node": node.name, "op": node.op_type, "weight": _trace_weight(node.input[0], producers, initializers)}
            break
    head = {"node": None, "op": None, "weight": None}
    logits = "logits"
    node = producers.get(logits)
    while node is not None and node.op_type in _PASS_THROUGH_OPS:
        node = producers.get(node.input[0])
    if node is not None and node.op_type in ("MatMul", "MatMulNBits"):
        head = {"node": node.name, "op": node.op_type, "weight": _trace_weight(node.input[1], producers, initializers)}
    return embedding, head


def _as_list(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(item) for item in value]


# --- evaluate ----------------------------------------------------------------


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Compare two logit matrices (positions x vocab): KL, top-1 and max difference."""
    if reference.shape != candidate.shape:
        raise StepError(f"logit shapes differ: {reference.shape} vs {candidate.shape}")
    if not np.isfinite(candidate).all():
        return {"finite": False, "max_abs_diff": float("inf"), "kl_mean": float("inf"),
                "kl_max": float("inf"), "top1_agreement": 0.0}  # fmt: skip
    log_p = _log_softmax(reference.astype(np.float64))
    log_q = _log_softmax(candidate.astype(np.float64))
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=-1)
    return {
        "finite": True,
        "max_abs_diff": float(np.abs(reference.astype(np.float64) - candidate).max()),
        "kl_mean": float(kl.mean()),
        "kl_max": float(kl.max()),
        "top1_agreement": float((reference.argmax(-1) == candidate.argmax(-1)).mean()),
    }


def _load_model(folder: str, threads: int):
    import onnxruntime_genai as og

    config = og.Config(folder)
    # Run on the CPU whatever provider the folder was built for.
    config.clear_providers()
    if threads:
        overlay = {"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}
        config.overlay(json.dumps(overlay))
    return og.Model(config)


def _generator(model, ids: list[int], max_new_tokens: int):
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + max_new_tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array([ids], dtype=np.int32))
    return generator


def evaluate(request: dict) -> dict:
    """Run a variant on fixed token ids and compare it with reference logits.

    Request: ``folder``, ``prompts`` (``id``, ``text``, ``input_ids``,
    ``reference_logits`` path or null, ``messages`` for chat prompts or null),
    ``eos_ids``, ``max_new_tokens``, ``out_dir``, ``threads``.
    """
    import onnxruntime_genai as og

    out_dir = Path(request["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    model = _load_model(request["folder"], int(request.get("threads") or 0))
    tokenizer = og.Tokenizer(model)
    max_new_tokens = int(request["max_new_tokens"])
    results = []
    for index, prompt in enumerate(request["prompts"]):
        progress("evaluate", index, len(request["prompts"]))
        ids = [int(token) for token in prompt["input_ids"]]
        generator = _generator(model, ids, max_new_tokens)
        logits = np.asarray(generator.get_output("logits"))[0].astype(np.float32)
        logits_path = out_dir / f"{prompt['id']}.logits.npy"
        np.save(logits_path, logits)
        entry = {"id": prompt["id"], "logits_path": str(logits_path)}
        if prompt.get("reference_logits"):
            entry["comparison"] = compare_logits(np.load(prompt["reference_logits"]), logits)
        tokens = []
        stopped = False
        while not generator.is_done():
            generator.generate_next_token()
            tokens.append(int(generator.get_next_tokens()[0]))
        stopped = bool(tokens) and tokens[-1] in request.get("eos_ids", [])
        entry["continuation"] = {"tokens": tokens, "stopped_at_eos": stopped}
        if prompt.get("text") is not None:
            entry["tokens_from_text"] = [int(token) for token in tokenizer.encode(prompt["text"])]
        if prompt.get("messages"):
            entry["chat_text"] = tokenizer.apply_chat_template(json.dumps(prompt["messages"]), add_generation_prompt=True)
        results.append(entry)
    return {
        "prompts": results,
        "stops": _forced_stops(model, request.get("eos_ids", []), request.get("stop_prompt_ids") or [1]),
        "tokenizer_eos_ids": [int(token) for token in tokenizer.eos_token_ids],
    }


def _forced_stops(model, eos_ids: list[int], prompt_ids: list[int]) -> list[dict]:
    """Force each EOS id as the next token and check that generation ends on it."""
    outcomes = []
    for token in eos_ids:
        generator = _generator(model, prompt_ids, 8)
        logits = np.asarray(generator.get_output("logits"))[:, -1, :].astype(np.float32)
        forced = np.full_like(logits, -1e4)
        forced[:, token] = 1e4
        generator.set_logits(forced)
        generator.generate_next_token()
        chosen = int(generator.get_next_tokens()[0])
        outcomes.append({"id": int(token), "chosen": chosen, "done": bool(generator.is_done())})
    return outcomes


OPERATIONS = {
    "check_source": check_source,
    "build": build,
    "describe": describe,
    "evaluate": evaluate,
    "gptq": gptq,
}


def handle(request: dict) -> dict:
    operation = request.get("op")
    if operation not in OPERATIONS:
        raise StepError(f"unknown onnx operation {operation!r}; known: {sorted(OPERATIONS)}")
    return OPERATIONS[operation](request)


if __name__ == "__main__":
    serve(handle)
