"""OpenVINO steps: export with optimum-cli, inspect the IR, run it.

``export`` runs ``optimum-cli export openvino`` (optimum-intel, with NNCF for
weight compression), ``inspect`` reads the IR's XML without loading weights,
``evaluate`` runs the IR through optimum-intel and through openvino-genai's
LLMPipeline, and ``max_abs`` reads the source's largest weight.
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

from hubquant_worker.protocol import StepError, info, progress, serve

MODEL_XML = "openvino_model.xml"
LOG_TAIL_LINES = 60

# Weight constants that optimum-intel 2.2.0 traces from module parameters are
# named after the module ("self.model.layers.0.mlp.down_proj..."). Weights of
# 16-bit models get the "_openvino_orig_weight" suffix. NNCF adds "/scale" and
# "/zero_point" constants next to each compressed weight.
_WEIGHT_NAME = re.compile(r"^self\.(?P<module>.+?)\.(?:_openvino_orig_weight|weight)$")

# IR element type -> weight format, as NNCF names the compression modes.
_ELEMENT_TYPES = {
    "i4": "int4_sym",
    "u4": "int4_asym",
    "i8": "int8_sym",
    "u8": "int8_asym",
    "f16": "fp16",
    "bf16": "bf16",
    "f32": "fp32",
}
_FLOAT_TYPES = ("f16", "f32", "bf16")


# --- export ----------------------------------------------------------------


def _opt_out_of_telemetry() -> None:
    """Write the consent file that ``opt_in_out --opt_out`` writes.

    The runner gives every step a scratch HOME, so the file lands there, not
    in the user's home. CI=true (set by the runner) already keeps NNCF's and
    the converter's telemetry off, and the file covers callers that do not
    pass ``disable_in_ci``.
    """
    consent = Path.home() / "intel" / "openvino_telemetry"
    consent.parent.mkdir(parents=True, exist_ok=True)
    consent.write_text("0")


def export(request: dict) -> dict:
    """Run ``optimum-cli export openvino --model SOURCE ARGS OUT``.

    Request: ``source_dir``, ``out_dir``, ``arguments`` (every option after
    the model, chosen by the orchestrator).
    """
    _opt_out_of_telemetry()
    out_dir = Path(request["out_dir"])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if request.get("calibration_texts"):
        # Data-aware compression: optimum-cli's export, fed with these texts.
        texts_file = out_dir.parent / f"{out_dir.name}.calibration.json"
        texts_file.write_text(json.dumps(request["calibration_texts"]), encoding="utf-8")
        entry = ["hubquant_worker.openvino_calibrated", str(texts_file)]
    else:
        entry = ["optimum.commands.optimum_cli", "export", "openvino"]
    command = [sys.executable, "-m", *entry, "--model", request["source_dir"], *request["arguments"], str(out_dir)]
    info(f"exporting with optimum-cli {' '.join(request['arguments'])}")
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, errors="replace")
    seconds = time.monotonic() - started
    output = (result.stdout + result.stderr).splitlines()
    sys.stderr.write("\n".join(output[-400:]) + "\n")
    if result.returncode != 0:
        lines = [line for line in output if line.strip()]
        raise StepError("optimum-cli export openvino failed:\n" + "\n".join(lines[-12:]))
    if not (out_dir / MODEL_XML).is_file():
        raise StepError(f"optimum-cli exited with status 0 but wrote no {MODEL_XML} in {out_dir}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "files": sorted(path.name for path in out_dir.iterdir() if path.is_file()),
        "seconds": seconds,
        "peak_rss_bytes": peak_kib * 1024,
        "log_tail": output[-LOG_TAIL_LINES:],
    }


# --- inspect ---------------------------------------------------------------


def _flatten_rt_info(element, prefix: str = "") -> dict[str, str]:
    """Flatten an IR ``<rt_info>`` tree into dotted keys such as
    ``nncf.weight_compression.group_size``."""
    values: dict[str, str] = {}
    for child in element:
        name = child.get("name") if child.tag in ("info", "attribute") else child.tag
        key = f"{prefix}{name}"
        if child.get("value") is not None:
            values[key] = child.get("value")
        values.update(_flatten_rt_info(child, f"{key}."))
    return values


def _shape(text: str | None) -> list[int]:
    if not text:
        return []
    return [int(part) for part in text.split(",") if part.strip()]


def _constants(root) -> dict[str, dict]:
    constants = {}
    for layer in root.iter("layer"):
        if layer.get("type") != "Const":
            continue
        data = layer.find("data")
        if data is None:
            continue
        constants[layer.get("name")] = {
            "id": layer.get("id"),
            "element_type": data.get("element_type"),
            "shape": _shape(data.get("shape")),
            "bytes": int(data.get("size") or 0),
            "offset": int(data.get("offset") or 0),
        }
    return constants


def _consumers(root) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Return each layer's type and the layers that read its outputs, by layer id."""
    types = {layer.get("id"): layer.get("type") for layer in root.iter("layer")}
    consumers: dict[str, list[str]] = {}
    edges = root.find("edges")
    for edge in edges if edges is not None else ():
        consumers.setdefault(edge.get("from-layer"), []).append(edge.get("to-layer"))
    return types, consumers


def _is_grouped(layer_id: str, types: dict[str, str], consumers: dict[str, list[str]]) -> bool:
    """Tell group-wise from per-channel compression by the decompression subgraph.

    NNCF stores a group-wise weight with an extra axis (groups x group size)
    and reshapes it back after scaling, so a Reshape follows within the
    Convert, Subtract, Multiply chain. A per-channel weight has none.
    """
    frontier = [layer_id]
    for _ in range(5):
        following = [target for source in frontier for target in consumers.get(source, [])]
        if any(types.get(target) == "Reshape" for target in following):
            return True
        frontier = [target for target in following if types.get(target) in ("Convert", "Subtract", "Multiply")]
        if not frontier:
            return False
    return False


def _is_weight(name: str, shape: list[int]) -> bool:
    # Weight matrices (and stacked expert weights) have at least two axes
    # longer than 1. NNCF names their scales and zero points after them.
    if name.endswith(("/scale", "/zero_point")):
        return False
    return sum(1 for dim in shape if dim > 1) >= 2


def _small_float_vectors(constants: dict[str, dict], bin_path: Path) -> list[list[float]]:
    """Read the values of every 1-D f32 or f16 constant of 2 to 1024 elements.

    LongRoPE's long and short factors are traced into the IR as such
    constants (next to norm weights and other small tables), so a check can
    look for them by value.
    """
    if not bin_path.is_file():
        return []
    dtypes = {"f32": np.float32, "f16": np.float16}
    vectors = []
    with open(bin_path, "rb") as handle:
        for constant in constants.values():
            shape = constant["shape"]
            dtype = dtypes.get(constant["element_type"])
            if dtype is None or len(shape) != 1 or not 2 <= shape[0] <= 1024:
                continue
            handle.seek(constant["offset"])
            values = np.frombuffer(handle.read(constant["bytes"]), dtype=dtype)
            vectors.append([float(value) for value in values])
    return vectors


def describe_ir(xml_path: Path) -> dict:
    """Summarise an IR from its XML: runtime info, weights and their formats.

    Each weight gets its module name, element type, compression mode, group
    size (-1 for one scale per output channel, None when not compressed) and
    the bytes it takes with its scales and zero points.
    """
    root = ElementTree.parse(xml_path).getroot()
    rt_info_element = root.find("rt_info")
    rt_info = _flatten_rt_info(rt_info_element) if rt_info_element is not None else {}
    constants = _constants(root)

    float_parameters = 0
    for constant in constants.values():
        if constant["element_type"] in _FLOAT_TYPES:
            count = 1
            for dim in constant["shape"]:
                count *= dim
            float_parameters += count

    types, consumers = _consumers(root)
    weights = []
    for name, constant in constants.items():
        element_type = constant["element_type"]
        shape = constant["shape"]
        if element_type not in _ELEMENT_TYPES or not _is_weight(name, shape):
            continue
        mode = _ELEMENT_TYPES[element_type]
        elements = 1
        for dim in shape:
            elements *= dim
        scale = constants.get(f"{name}/scale")
        zero_point = constants.get(f"{name}/zero_point")
        group_size = None
        width = shape[-1]
        if element_type not in _FLOAT_TYPES:
            if _is_grouped(constant["id"], types, consumers):
                group_size = shape[-1]
                width = shape[-2] * shape[-1]
            else:
                group_size = -1
        match = _WEIGHT_NAME.match(name)
        weights.append(
            {
                "module": match.group("module") if match else name,
                "element_type": element_type,
                "mode": mode,
                "shape": shape,
                "width": width,
                "elements": elements,
                "group_size": group_size,
                "bytes": constant["bytes"]
                + (scale["bytes"] if scale else 0)
                + (zero_point["bytes"] if zero_point else 0),
            }
        )

    weight_elements = sum(weight["elements"] for weight in weights)
    weight_bytes = sum(weight["bytes"] for weight in weights)
    modes: dict[str, int] = {}
    for weight in weights:
        modes[weight["mode"]] = modes.get(weight["mode"], 0) + 1
    bin_path = xml_path.with_suffix(".bin")
    return {
        "rt_info": rt_info,
        "weights": weights,
        "modes": modes,
        "float_parameters": float_parameters,
        "weight_elements": weight_elements,
        "weight_bytes": weight_bytes,
        "bits_per_weight": 8 * weight_bytes / weight_elements if weight_elements else 0.0,
        "bin_bytes": bin_path.stat().st_size if bin_path.is_file() else 0,
        "float_vectors": _small_float_vectors(constants, bin_path),
    }


def inspect(request: dict) -> dict:
    """Describe the model IR of an exported folder."""
    folder = Path(request["folder"])
    model_xml = folder / MODEL_XML
    if not model_xml.is_file():
        raise StepError(f"{folder} has no {MODEL_XML}")
    return describe_ir(model_xml)


# --- evaluate --------------------------------------------------------------


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Compare two logit matrices (positions x vocab): max difference, KL, top-1."""
    if reference.shape != candidate.shape:
        raise StepError(f"logit shapes differ: reference {reference.shape}, OpenVINO {candidate.shape}")
    if not np.isfinite(candidate).all():
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


def _optimum_outputs(model, prompt: dict, eos_ids: list[int], max_new_tokens: int):
    import torch

    ids = torch.tensor([prompt["input_ids"]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[0].float().numpy()
        generated = model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos_ids or None,
            pad_token_id=eos_ids[0] if eos_ids else 0,
            return_dict_in_generate=True,
            output_scores=True,
        )
    # Gap between the top two logits at each greedy step, to tell near ties
    # from real disagreements.
    margins = []
    for scores in generated.scores:
        top = torch.topk(scores[0].float(), 2).values
        margins.append(float(top[0] - top[1]))
    return logits, generated.sequences[0, ids.shape[1]:].tolist(), margins


def _forced_stops(model, prompt_ids: list[int], eos_ids: list[int]) -> list[dict]:
    """Force each EOS id with a logits processor and record what is generated.

    No eos_token_id is passed, so the artifact's own generation config must
    end generation right after the forced token.
    """
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    class ForceToken(LogitsProcessor):
        def __init__(self, token: int) -> None:
            self.token = token

        def __call__(self, input_ids, scores):
            forced = torch.full_like(scores, -1e9)
            forced[:, self.token] = 0.0
            return forced

    prompt = torch.tensor([prompt_ids])
    outcomes = []
    for token in eos_ids:
        generated = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=4,
            do_sample=False,
            logits_processor=LogitsProcessorList([ForceToken(token)]),
            pad_token_id=token,
        )
        new_tokens = generated[0, prompt.shape[1]:].tolist()
        outcomes.append({"id": token, "generated": new_tokens})
    return outcomes


def _genai_outputs(pipeline, prompt: dict, max_new_tokens: int) -> list[int]:
    import openvino as ov
    import openvino_genai

    ids = np.array([prompt["input_ids"]], dtype=np.int64)
    inputs = openvino_genai.TokenizedInputs(ov.Tensor(ids), ov.Tensor(np.ones_like(ids)))
    config = pipeline.get_generation_config()
    config.max_new_tokens = max_new_tokens
    config.do_sample = False
    result = pipeline.generate(inputs, config)
    return [int(token) for token in result.tokens[0]]


def evaluate(request: dict) -> dict:
    """Run an exported folder with optimum-intel and openvino-genai.

    Request: ``folder``, ``prompts`` (``id``, ``kind``, ``text``,
    ``input_ids``, ``reference_logits`` path or null), ``eos_ids``,
    ``max_new_tokens``, ``out_dir`` (where this artifact's logits are saved),
    ``runtime_config`` (OpenVINO properties for both runtimes).
    """
    import openvino_genai
    from optimum.intel import OVModelForCausalLM
    from transformers import AutoTokenizer

    folder = Path(request["folder"])
    out_dir = Path(request["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    runtime_config = dict(request.get("runtime_config") or {})
    eos_ids = list(request.get("eos_ids") or [])
    max_new_tokens = int(request["max_new_tokens"])

    info(f"loading {folder.name} in optimum-intel with {runtime_config}")
    model = OVModelForCausalLM.from_pretrained(folder, device="CPU", ov_config=runtime_config)
    compiled = model.request.get_compiled_model()
    precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()

    info(f"loading {folder.name} in openvino-genai's LLMPipeline")
    pipeline = openvino_genai.LLMPipeline(str(folder), "CPU", **runtime_config)
    genai_tokenizer = pipeline.get_tokenizer()
    hf_tokenizer = AutoTokenizer.from_pretrained(folder)

    results = []
    for index, prompt in enumerate(request["prompts"]):
        progress("evaluate", index, len(request["prompts"]))
        logits, continuation, margins = _optimum_outputs(model, prompt, eos_ids, max_new_tokens)
        logits_path = out_dir / f"{prompt['id']}.logits.npy"
        np.save(logits_path, logits.astype(np.float32))
        entry = {
            "id": prompt["id"],
            "logits_path": str(logits_path),
            "continuation": continuation,
            "continuation_margins": margins,
            "genai_continuation": _genai_outputs(pipeline, prompt, max_new_tokens),
        }
        if prompt.get("reference_logits"):
            entry["comparison"] = compare_logits(np.load(prompt["reference_logits"]), logits)
        if prompt.get("text") is not None:
            # Plain-text prompts were encoded with the tokenizer's special
            # tokens, chat prompts (already templated) without.
            add_special = prompt.get("kind") != "chat"
            encoded = genai_tokenizer.encode(prompt["text"], add_special_tokens=add_special)
            entry["genai_tokens"] = [int(token) for token in encoded.input_ids.data[0]]
            entry["hf_tokens"] = hf_tokenizer(prompt["text"], add_special_tokens=add_special)["input_ids"]
        results.append(entry)

    long_prompt = None
    if request.get("long_prompt"):
        long_prompt = _long_prompt(model, pipeline, request["long_prompt"], out_dir)

    generation_config = pipeline.get_generation_config()
    hf_template = hf_tokenizer.chat_template if isinstance(hf_tokenizer.chat_template, str) else None
    return {
        "prompts": results,
        "long_prompt": long_prompt,
        "inference_precision": precision,
        "forced_stops": _forced_stops(model, request["prompts"][0]["input_ids"], eos_ids) if eos_ids else [],
        "genai_stop_token_ids": sorted(int(token) for token in generation_config.stop_token_ids),
        "genai_eos_token_id": int(generation_config.eos_token_id),
        "genai_chat_template": genai_tokenizer.chat_template or None,
        "hf_chat_template": hf_template,
        "optimum_eos_token_id": _as_list(model.generation_config.eos_token_id),
    }


def _long_prompt(model, pipeline, prompt: dict, out_dir: Path) -> dict:
    """Run a prompt past original_max_position_embeddings: one forward pass
    (its last ``keep_last`` positions are compared with the reference), then a
    short generation in each runtime, as a user's long prompt would run."""
    import torch

    ids = torch.tensor([prompt["input_ids"]])
    keep = int(prompt["keep_last"])
    info(f"running a {ids.shape[1]}-token prompt past the original context")
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -keep:].float().numpy()
    path = out_dir / f"{prompt['id']}.logits.npy"
    np.save(path, logits.astype(np.float32))
    generate_error = None
    try:
        with torch.no_grad():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False, pad_token_id=0)
    except Exception as error:  # a runtime's limit, reported in the card, not a broken file
        generate_error = f"{type(error).__name__}: {error}"
    genai_tokens = _genai_outputs(pipeline, prompt, 1)
    top_two = np.sort(logits[-1])[-2:]
    return {
        "id": prompt["id"],
        "logits_path": str(path),
        "comparison": compare_logits(np.load(prompt["reference_logits"]), logits),
        "optimum_generate_error": generate_error,
        "genai_first_token": genai_tokens[0] if genai_tokens else None,
        "argmax": int(logits[-1].argmax()),
        "margin": float(top_two[1] - top_two[0]),
    }


def _as_list(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(item) for item in value]


# --- max_abs ---------------------------------------------------------------


def max_abs(request: dict) -> dict:
    """Return the largest absolute value among the source's floating-point weights."""
    from safetensors import safe_open

    peak = 0.0
    for path in sorted(Path(request["source_dir"]).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                tensor = handle.get_tensor(name)
                if tensor.is_floating_point() and tensor.numel():
                    peak = max(peak, float(tensor.abs().max().float()))
    return {"max_abs": peak}


def generate(request: dict) -> dict:
    """Generate greedily from ``prompt`` with openvino-genai's LLMPipeline, as a user would."""
    import openvino_genai

    pipeline = openvino_genai.LLMPipeline(request["folder"], "CPU", **(request.get("runtime_config") or {}))
    config = pipeline.get_generation_config()
    config.max_new_tokens = int(request.get("max_new_tokens", 8))
    config.do_sample = False
    text = pipeline.generate(request["prompt"], config)
    tokens = pipeline.get_tokenizer().encode(str(text), add_special_tokens=False).input_ids.data[0]
    return {"text": str(text), "tokens": [int(token) for token in tokens]}


def telemetry_status(request: dict) -> dict:
    """Return what OpenVINO's telemetry decides in a worker's environment.

    The consent check runs with the ``disable_in_ci`` switch that NNCF and the
    model converter pass, and without it. Nothing is sent.
    """
    from openvino_telemetry.utils.opt_in_checker import OptInChecker

    _opt_out_of_telemetry()
    checker = OptInChecker()
    return {
        "consent_file": checker.consent_file(),
        "in_ci": checker.check(enable_opt_in_dialog=False, disable_in_ci=True).name,
        "without_ci_switch": checker.check(enable_opt_in_dialog=False, disable_in_ci=False).name,
        "home": str(Path.home()),
    }


OPERATIONS = {
    "export": export,
    "generate": generate,
    "telemetry_status": telemetry_status,
    "inspect": inspect,
    "evaluate": evaluate,
    "max_abs": max_abs,
}


def handle(request: dict) -> dict:
    operation = request.get("op")
    if operation not in OPERATIONS:
        raise StepError(f"unknown openvino operation {operation!r}; known: {sorted(OPERATIONS)}")
    return OPERATIONS[operation](request)


if __name__ == "__main__":
    serve(handle)
