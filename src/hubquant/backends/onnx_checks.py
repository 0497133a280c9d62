"""The checks every ONNX variant must pass before it is published.

Structural checks read the graph and the files and run for every variant.
Runtime checks run a CPU variant in onnxruntime-genai and compare it with the
source (the fp32 variant) or with the fp32 variant (every other one).
"""

from __future__ import annotations

from hubquant.comparison import check_against_unquantized, check_greedy_against_source, check_logits_against_source
from hubquant.reference import CHAT_PROMPTS, ReferenceOutputs
from hubquant.source import chat_template_of
from hubquant.validation import ValidationReport

FLOAT_TYPES = {"fp32": "FLOAT", "fp16": "FLOAT16", "bf16": "BFLOAT16"}

# Element types of the model inputs and outputs (past key/value cache, logits)
# that onnxruntime-genai 0.18.0's builder writes, by provider and precision, as
# measured on the tiny Phi-3 model. The runtime allocates its cache and reads
# the logits in these types, so another type means the graph was not built for
# the provider.
EXPECTED_IO = {
    ("cpu", "fp32"): ("FLOAT", "FLOAT"),
    ("cpu", "fp16"): ("FLOAT16", "FLOAT16"),
    ("cpu", "int8"): ("FLOAT", "FLOAT"),
    ("cpu", "int4"): ("FLOAT", "FLOAT"),
    ("cuda", "fp16"): ("FLOAT16", "FLOAT16"),
    ("cuda", "bf16"): ("BFLOAT16", "FLOAT"),
    ("cuda", "int8"): ("FLOAT16", "FLOAT16"),
    ("cuda", "int4"): ("FLOAT16", "FLOAT16"),
    ("dml", "fp16"): ("FLOAT16", "FLOAT16"),
    ("dml", "int4"): ("FLOAT16", "FLOAT16"),
    ("webgpu", "int8"): ("FLOAT16", "FLOAT16"),
    ("webgpu", "int4"): ("FLOAT16", "FLOAT16"),
    ("trt-rtx", "fp16"): ("FLOAT16", "FLOAT16"),
    ("trt-rtx", "bf16"): ("BFLOAT16", "FLOAT"),
}

# Contrib operators (domain com.microsoft, plus ORT's SimplifiedLayerNormalization
# in the ONNX domain) that the CUDA and DirectML execution providers implement,
# with the element types they accept. Source: onnxruntime docs/OperatorKernels.md
# at commit 001d12d2623f, which the script gen_opkernel_doc.py generates from the
# registered kernels. Standard ONNX operators are not listed here: both providers
# implement every one the builder emits (Gather, MatMul, Mul, Sigmoid, Cast, ...).
_CUDA_FLOATS = ("BFLOAT16", "FLOAT", "FLOAT16")
_DML_FLOATS = ("FLOAT", "FLOAT16")
PROVIDER_KERNELS: dict[str, dict[str, tuple[str, ...]]] = {
    "cuda": {
        "com.microsoft.Attention": _CUDA_FLOATS,
        "com.microsoft.BiasAdd": ("FLOAT", "FLOAT16"),
        "com.microsoft.BiasGelu": _CUDA_FLOATS,
        "com.microsoft.FastGelu": _CUDA_FLOATS,
        "com.microsoft.GatherBlockQuantized": _CUDA_FLOATS,
        "com.microsoft.Gelu": _CUDA_FLOATS,
        "com.microsoft.GroupQueryAttention": ("BFLOAT16", "FLOAT16"),
        "com.microsoft.MatMulNBits": _CUDA_FLOATS,
        "com.microsoft.MultiHeadAttention": _CUDA_FLOATS,
        "com.microsoft.QuickGelu": _CUDA_FLOATS,
        "com.microsoft.RotaryEmbedding": _CUDA_FLOATS,
        "com.microsoft.SkipLayerNormalization": _CUDA_FLOATS,
        "com.microsoft.SkipSimplifiedLayerNormalization": _CUDA_FLOATS,
    },
    "dml": {
        "com.microsoft.Attention": _DML_FLOATS,
        "com.microsoft.BiasAdd": _DML_FLOATS,
        "com.microsoft.BiasGelu": _DML_FLOATS,
        "com.microsoft.FastGelu": _DML_FLOATS,
        "com.microsoft.Gelu": _DML_FLOATS,
        "com.microsoft.GroupQueryAttention": _DML_FLOATS,
        "com.microsoft.MatMulNBits": _DML_FLOATS,
        "com.microsoft.MultiHeadAttention": _DML_FLOATS,
        "com.microsoft.QuickGelu": _DML_FLOATS,
        "com.microsoft.RotaryEmbedding": _DML_FLOATS,
        "com.microsoft.SkipLayerNormalization": _DML_FLOATS,
        "com.microsoft.SkipSimplifiedLayerNormalization": _DML_FLOATS,
        "ai.onnx.SimplifiedLayerNormalization": _DML_FLOATS,
    },
}

# The provider names genai_config.json uses in session_options.provider_options.
CONFIG_PROVIDER_NAMES = {"cpu": None, "cuda": "cuda", "dml": "dml", "webgpu": "webgpu", "trt-rtx": "NvTensorRtRtx"}


def check_structure(report: ValidationReport, described: dict, variant, context, source_facts: dict) -> None:
    """Check a variant's files and graph against the request and the source."""
    error = described["checker_error"]
    report.add("graph passes the ONNX checker", error is None, "onnx.checker.check_model accepts model.onnx and its data file" if error is None else error)
    _check_files(report, described, context)
    _check_provider(report, described, variant)
    _check_quantization(report, described, variant)
    _check_embeddings(report, described, source_facts)
    _check_eos_config(report, described, context.reference)


def _check_files(report: ValidationReport, described: dict, context) -> None:
    files = described["files"]
    needed = ["model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json", "tokenizer_config.json"]
    missing = [name for name in needed if name not in files]
    report.add(
        "folder is self-contained",
        not missing,
        "model, weights data, genai_config.json and tokenizer files are present" if not missing else f"missing {', '.join(missing)}",
    )
    template = chat_template_of(context.source.path)
    stored = described.get("chat_template")
    if template is None:
        report.add("chat template", stored is None, "the source has no chat template" if stored is None else "the folder has a chat template the source lacks")
    else:
        report.add(
            "chat template",
            stored == template,
            "chat_template.jinja is identical to the source's chat template" if stored == template else "chat_template.jinja is missing or differs from the source's chat template",
        )


def _check_provider(report: ValidationReport, described: dict, variant) -> None:
    config_name = CONFIG_PROVIDER_NAMES[variant.provider]
    providers = described["genai_config"]["providers"]
    if config_name is None:
        report.add("genai_config.json provider", not providers, "no provider options, so onnxruntime-genai runs it on the CPU" if not providers else f"names providers {providers} for a CPU variant")
    else:
        report.add(
            "genai_config.json provider",
            providers == [config_name],
            f"session options select {config_name}" if providers == [config_name] else f"session options select {providers or 'no provider'}, expected {config_name}",
        )

    expected_cache, expected_logits = EXPECTED_IO[(variant.provider, variant.precision)]
    cache = described["inputs"].get("past_key_values.0.key")
    logits = described["outputs"].get("logits")
    ok = cache == expected_cache and logits == expected_logits
    report.add(
        "input and output types",
        ok,
        f"key/value cache {cache}, logits {logits}" + ("" if ok else f"; expected {expected_cache} and {expected_logits}"),
    )

    kernels = PROVIDER_KERNELS.get(variant.provider)
    if kernels is None:
        if variant.provider != "cpu":
            # The CPU variants run here, which checks their operators for real.
            report.skip(
                f"operators implemented by the {variant.provider_label} execution provider",
                "ONNX Runtime's kernel list (docs/OperatorKernels.md) does not cover this provider, so its operators were not checked",
            )
        return
    unsupported = []
    for entry in described["node_types"]:
        key = f"{entry['domain']}.{entry['op']}"
        if entry["domain"] == "ai.onnx" and key not in kernels:
            continue
        accepted = kernels.get(key)
        if accepted is None:
            unsupported.append(key)
        elif entry["type"] and entry["type"] not in accepted:
            unsupported.append(f"{key} ({entry['type']})")
    report.add(
        f"operators implemented by the {variant.provider_label} execution provider",
        not unsupported,
        "every contrib operator and type is in ONNX Runtime's kernel list for this provider" if not unsupported else f"not in the provider's kernel list: {', '.join(sorted(unsupported))}",
    )


def _check_quantization(report: ValidationReport, described: dict, variant) -> None:
    nodes = [node for node in described["quantized_nodes"] if node["op"] == "MatMulNBits"]
    if not variant.quantized:
        float_type = FLOAT_TYPES[variant.precision]
        types = described["initializer_types"]
        other = sorted(name for name in types if name not in (float_type, "INT64", "INT32", "BOOL"))
        ok = not nodes and not other
        report.add(
            "weights in the requested precision",
            ok,
            f"no quantized operators, float weights are {float_type}" if ok else f"found {len(nodes)} MatMulNBits nodes and weights of type {other}",
        )
        return

    bits = 4 if variant.precision == "int4" else 8
    # The builder's k_quant writes zero points even when is_symmetric is true
    # (measured with onnxruntime-genai 0.18.0), so its graphs are asymmetric.
    symmetric = variant.symmetric and variant.algorithm != "kquant"
    problems = []
    if not nodes:
        problems.append("no MatMulNBits node")
    for node in nodes:
        expected_bits = 8 if (node["group"] == "lm_head" and variant.lm_head == "int8") else bits
        if node["bits"] != expected_bits:
            problems.append(f"{node['name']} has {node['bits']} bits")
        if node["block_size"] != variant.block_size:
            problems.append(f"{node['name']} has block size {node['block_size']}")
        if node["accuracy_level"] != variant.accuracy_level:
            problems.append(f"{node['name']} has accuracy level {node['accuracy_level']}")
        if node["symmetric"] != symmetric:
            problems.append(f"{node['name']} is {'symmetric' if node['symmetric'] else 'asymmetric'}")

    head = [node for node in nodes if node["group"] == "lm_head"]
    if variant.lm_head == "float" and head:
        problems.append("the LM head is quantized")
    if variant.quantize_embeddings and described["embedding"]["op"] != "GatherBlockQuantized":
        problems.append("the token embedding is not quantized")

    report.add(
        "quantization matches the request",
        not problems,
        f"{len(nodes)} MatMulNBits nodes with {bits} bits, block size {variant.block_size}, accuracy level {variant.accuracy_level}" if not problems else "; ".join(problems[:5]),
    )


def _check_embeddings(report: ValidationReport, described: dict, source_facts: dict) -> None:
    shared = described["shared_embeddings"]
    tied = source_facts["tie_word_embeddings"]
    if tied:
        report.add("embedding and LM head weights", True, "the source ties them" + (", and the graph shares one matrix" if shared else ", and the graph stores them separately"))
    else:
        report.add(
            "embedding and LM head weights",
            not shared,
            "stored separately, as in the source" if not shared else "the graph shares one matrix although the source has separate embedding and LM head weights",
        )


def _check_eos_config(report: ValidationReport, described: dict, reference: ReferenceOutputs | None) -> None:
    if reference is None or not reference.eos_ids:
        report.skip("genai_config.json EOS ids", "the source declares no EOS ids")
        return
    configured = set(described["genai_config"]["eos_token_id"])
    missing = sorted(set(reference.eos_ids) - configured)
    report.add(
        "genai_config.json EOS ids",
        not missing,
        f"lists every source EOS id {sorted(reference.eos_ids)}" if not missing else f"source EOS ids {missing} are missing from eos_token_id",
    )


def prompt_requests(reference: ReferenceOutputs, against: dict[str, str] | None) -> list[dict]:
    """Return the evaluate request's prompts, compared with `against` logits or the reference."""
    chats = {f"chat{index}": messages for index, messages in enumerate(CHAT_PROMPTS)}
    return [
        {
            "id": prompt.id,
            "text": prompt.text,
            "input_ids": prompt.input_ids,
            "reference_logits": (against or {}).get(prompt.id) if against is not None else prompt.logits_path,
            "messages": chats.get(prompt.id),
        }
        for prompt in reference.prompts
    ]


def check_runtime(report: ValidationReport, evaluation: dict, reference: ReferenceOutputs) -> None:
    """Check what onnxruntime-genai computed besides the logits: tokens, template, stops."""
    mismatched = [
        prompt.id
        for prompt, result in zip(reference.prompts, evaluation["prompts"])
        if result.get("tokens_from_text") != prompt.input_ids
    ]
    report.add(
        "tokenizer agrees with transformers",
        not mismatched,
        "onnxruntime-genai tokenizes every prompt to the same ids" if not mismatched else f"prompts {mismatched} tokenize differently in onnxruntime-genai",
    )
    rendered = [(prompt, result) for prompt, result in zip(reference.prompts, evaluation["prompts"]) if "chat_text" in result]
    if rendered:
        differing = [prompt.id for prompt, result in rendered if result["chat_text"] != prompt.text]
        report.add(
            "chat template renders as in transformers",
            not differing,
            "onnxruntime-genai's apply_chat_template gives the same prompt text" if not differing else f"prompts {differing} render differently",
        )
    if not reference.eos_ids:
        report.skip("generation stops at EOS", "the source declares no EOS ids")
        return
    running_on = [stop["id"] for stop in evaluation["stops"] if stop["chosen"] != stop["id"] or not stop["done"]]
    report.add(
        "generation stops at EOS",
        not running_on,
        "generation ends right after each forced EOS id" if not running_on else f"generation does not stop on EOS ids {running_on}",
    )


def check_against_source(report: ValidationReport, evaluation: dict, reference: ReferenceOutputs, logit_limit: float, top1_min: float) -> None:
    """Compare the fp32 variant with transformers: logits, top-1 and greedy tokens."""
    comparisons = [p["comparison"] for p in evaluation["prompts"]]
    check_logits_against_source(report, comparisons, logit_limit=logit_limit, top1_min=top1_min, subject="the variant")
    continuations = [result["continuation"]["tokens"] for result in evaluation["prompts"]]
    report.metrics["greedy_match"] = check_greedy_against_source(report, reference, continuations, logit_limit=logit_limit)


def check_against_fp32(report: ValidationReport, evaluation: dict, kl_limit: float, top1_min: float) -> None:
    """Compare a variant with the fp32 variant in onnxruntime-genai: KL and top-1."""
    comparisons = [p["comparison"] for p in evaluation["prompts"]]
    check_against_unquantized(
        report,
        comparisons,
        kl_limit=kl_limit,
        top1_min=top1_min,
        subject="the variant",
        against="the fp32 variant",
        record_max_abs_diff=True,
    )
