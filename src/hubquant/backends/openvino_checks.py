"""The checks every OpenVINO artifact must pass before it is published."""

from __future__ import annotations

import math
from pathlib import Path

from hubquant import comparison
from hubquant.comparison import check_greedy_against_source, check_logits_against_source, first_difference
from hubquant.source import chat_template_of
from hubquant.validation import ValidationReport

# Keys of the IR's runtime info (``nncf.weight_compression.*``) that must
# match the requested setting, by option name.
_RT_INFO_KEYS = {
    "group-size": "group_size",
    "ratio": "ratio",
    "backup-precision": "backup_mode",
    "all-layers": "all_layers",
    "awq": "awq",
}
# Data-aware keys, checked when the target turns them on.
_DATA_AWARE_RT_INFO_KEYS = {"scale-estimation": "scale_estimation", "gptq": "gptq"}

# Modules that NNCF keeps at the backup precision unless all-layers is set:
# the token embedding and the output layer.
_EDGE_MODULES = ("embed_tokens", "lm_head", "embd", "wte")


def validate_unquantized(context, precision, folder: Path, described: dict, evaluation: dict | None, compression) -> ValidationReport:
    """Check an fp16 or fp32 IR against the source run in transformers."""
    report = ValidationReport()
    check_files(report, context, folder)
    check_weight_formats(report, described, compression)
    check_compression_info(report, described, compression)
    check_rope_factors(report, context, described)
    if evaluation is None:
        report.skip("logits against transformers", "the reference run was skipped")
        return report
    check_against_source(report, evaluation, context.reference, precision.logit_limit, precision.top1_min, precision.long_logit_limit)
    check_runtime_behaviour(report, context, evaluation)
    return report


def validate_quantized(context, precision, folder: Path, described: dict, evaluation: dict | None, compression) -> ValidationReport:
    """Check an int8 or int4 IR against the unquantized IR in OpenVINO."""
    report = ValidationReport()
    check_files(report, context, folder)
    check_weight_formats(report, described, compression)
    check_compression_info(report, described, compression)
    check_rope_factors(report, context, described)
    if evaluation is None:
        report.skip("runtime comparison", "the reference run was skipped")
        return report
    check_against_unquantized(report, evaluation, precision.kl_mean_limit, precision.top1_min)
    check_runtime_behaviour(report, context, evaluation)
    return report


# --- checks on the files and the IR --------------------------------------------


def check_files(report: ValidationReport, context, folder: Path) -> None:
    from hubquant.backends.openvino import REQUIRED_FILES

    required = list(REQUIRED_FILES)
    if chat_template_of(context.source.path) is not None:
        required.append("chat_template.jinja")
    missing = [name for name in required if not (folder / name).is_file()]
    report.add(
        "release files",
        not missing,
        "the IR, the HF tokenizer files, the OpenVINO tokenizer and detokenizer, config and generation config are present"
        if not missing else f"missing: {', '.join(missing)}",
    )  # fmt: skip


def check_weight_formats(report: ValidationReport, described: dict, compression) -> None:
    """Every weight must be stored in a format the requested precision allows.

    This catches optimum-intel's size rule, which compresses models of 1e9 or
    more parameters to int8 when no weight format is given.
    """
    expected = compression.expected_modes()
    modes = described["modes"]
    if not modes:
        report.add("weight format", False, "no weight constants were found in openvino_model.xml")
        return
    unexpected = {mode: count for mode, count in modes.items() if mode not in expected}
    stored = ", ".join(f"{count} {mode}" for mode, count in sorted(modes.items()))
    if unexpected:
        report.add("weight format", False, f"{compression.precision} was requested, but the IR stores {stored} weights")
        return
    if compression.precision == "int4" and not any(mode.startswith("int4") for mode in modes):
        report.add("weight format", False, f"int4 was requested, but no weight is stored as int4 ({stored})")
        return
    report.add("weight format", True, f"weights stored as {stored}")


def check_compression_info(report: ValidationReport, described: dict, compression) -> None:
    """Compare the IR's runtime info with the requested compression settings."""
    rt_info = described["rt_info"]
    prefix = "nncf.weight_compression."
    recorded = {key[len(prefix):]: value for key, value in rt_info.items() if key.startswith(prefix)}
    if not compression.quantized:
        report.add(
            "compression settings in the IR",
            not recorded,
            "no weight compression recorded, as requested" if not recorded
            else f"the IR records weight compression ({recorded.get('mode')}) that was not requested",
        )  # fmt: skip
        return
    expected = {"mode": _expected_mode(compression)}
    if compression.precision == "int8":
        expected["group_size"] = "-1"
    else:
        for option, key in _RT_INFO_KEYS.items():
            expected[key] = _rt_info_text(compression.options[option])
        expected["backup_mode"] = compression.options["backup-precision"]
        for option, key in _DATA_AWARE_RT_INFO_KEYS.items():
            if compression.options.get(option):
                expected[key] = _rt_info_text(True)
        if compression.options.get("sensitivity-metric"):
            expected["sensitivity_metric"] = compression.options["sensitivity-metric"]
    differing = [
        f"{key} is {recorded.get(key, 'missing')}, expected {value}"
        for key, value in expected.items()
        if not _same_setting(recorded.get(key), value)
    ]
    report.add(
        "compression settings in the IR",
        not differing,
        "nncf.weight_compression records " + ", ".join(f"{key} {value}" for key, value in expected.items())
        if not differing else "; ".join(differing),
    )  # fmt: skip


def _expected_mode(compression) -> str:
    bits = compression.precision[-1]
    return f"int{bits}_{'sym' if compression.options['sym'] else 'asym'}"


def _rt_info_text(value) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def _same_setting(recorded: str | None, expected: str) -> bool:
    if recorded is None:
        return False
    try:
        return math.isclose(float(recorded), float(expected), rel_tol=1e-9)
    except ValueError:
        return recorded == expected


def _rope_factors(config: dict) -> dict | None:
    scaling = config.get("rope_scaling") or config.get("rope_parameters")
    if isinstance(scaling, dict) and scaling.get("long_factor"):
        return scaling
    return None


def check_rope_factors(report: ValidationReport, context, described: dict) -> None:
    """LongRoPE models must carry both factor lists of config.json in the IR.

    Short prompts only exercise the short factors, and the long ones apply past
    ``original_max_position_embeddings`` tokens, so they are looked up by value.
    """
    scaling = _rope_factors(context.source.config)
    if scaling is None:
        return
    vectors = described.get("float_vectors", [])
    for kind in ("long", "short"):
        expected = [float(value) for value in scaling[f"{kind}_factor"]]
        found = any(
            len(vector) == len(expected)
            and all(math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-6) for a, b in zip(vector, expected))
            for vector in vectors
        )
        report.add(
            f"rope {kind} factors",
            found,
            f"the IR holds the {len(expected)} {kind} factors of config.json" if found
            else f"no constant in the IR equals config.json's {kind}_factor",
        )  # fmt: skip


# --- checks on what the IR computes --------------------------------------------


def check_against_source(report: ValidationReport, evaluation: dict, reference, logit_limit: float, top1_min: float, long_logit_limit: float | None = None) -> None:
    comparisons = [prompt["comparison"] for prompt in evaluation["prompts"]]
    check_logits_against_source(report, comparisons, logit_limit=logit_limit, top1_min=top1_min, subject="the IR")
    long_prompt = evaluation.get("long_prompt")
    if long_prompt is not None:
        measured = long_prompt["comparison"]
        report.metrics["long_prompt_max_abs_diff"] = measured["max_abs_diff"]
        comparison.check_long_prompt_against_source(
            report, measured, len(reference.long_prompt.input_ids),
            logit_limit=long_logit_limit if long_logit_limit is not None else logit_limit, top1_min=top1_min,
        )  # fmt: skip
    for runtime, key in (("optimum-intel", "continuation"), ("openvino-genai", "genai_continuation")):
        continuations = [result[key] for result in evaluation["prompts"]]
        matched = check_greedy_against_source(
            report, reference, continuations, logit_limit=logit_limit, name=f"greedy continuation in {runtime}"
        )
        if runtime == "optimum-intel":
            report.metrics["greedy_match"] = matched


def check_against_unquantized(report: ValidationReport, evaluation: dict, kl_limit: float, top1_min: float) -> None:
    comparisons = [prompt["comparison"] for prompt in evaluation["prompts"]]
    comparison.check_against_unquantized(
        report,
        comparisons,
        kl_limit=kl_limit,
        top1_min=top1_min,
        subject="the IR",
        against="the unquantized IR",
        record_max_abs_diff=True,
    )
    long_prompt = evaluation.get("long_prompt")
    if long_prompt is not None:
        measured = long_prompt["comparison"]
        report.metrics["long_prompt_kl_mean"] = measured["kl_mean"]
        report.add(
            "past the original context",
            measured["finite"] and measured["kl_mean"] <= kl_limit,
            f"KL divergence to the unquantized IR on a prompt past the original context (long rope factors): "
            f"mean {measured['kl_mean']:.4g} (limit {kl_limit})",
        )


def check_runtime_behaviour(report: ValidationReport, context, evaluation: dict) -> None:
    """Check precision, tokenizers, chat template, EOS handling and the two runtimes' agreement."""
    from hubquant.backends.openvino import RUNTIME_TIE_MARGIN, VALIDATION_RUNTIME_CONFIG

    reference = context.reference
    precision = evaluation["inference_precision"]
    expected = VALIDATION_RUNTIME_CONFIG["INFERENCE_PRECISION_HINT"]
    report.add(
        "inference precision",
        precision == expected,
        f"the compiled model infers in {precision}" + ("" if precision == expected else f", not {expected}"),
    )
    prompts = list(zip(reference.prompts, evaluation["prompts"]))
    wrong_genai = [prompt.id for prompt, result in prompts if result.get("genai_tokens") != prompt.input_ids]
    wrong_hf = [prompt.id for prompt, result in prompts if result.get("hf_tokens") != prompt.input_ids]
    report.add(
        "OpenVINO tokenizer agrees with transformers",
        not wrong_genai,
        "openvino_tokenizer.xml encodes every prompt to the source tokenizer's ids" if not wrong_genai
        else f"openvino_tokenizer.xml encodes prompts {wrong_genai} differently",
    )  # fmt: skip
    report.add(
        "HF tokenizer files agree with the source",
        not wrong_hf,
        "the release's tokenizer encodes every prompt to the source tokenizer's ids" if not wrong_hf
        else f"the release's tokenizer encodes prompts {wrong_hf} differently",
    )  # fmt: skip

    template = chat_template_of(context.source.path)
    for label, stored in (("HF tokenizer", evaluation["hf_chat_template"]), ("OpenVINO tokenizer", evaluation["genai_chat_template"])):
        if template is None:
            report.add(f"chat template ({label})", not stored, "the source has no chat template" if not stored else "the release has a chat template the source lacks")
        else:
            report.add(
                f"chat template ({label})",
                stored == template,
                "identical to the source's chat template" if stored == template else "differs from the source's chat template",
            )

    eos_ids = reference.eos_ids
    if not eos_ids:
        report.skip("generation stops at EOS", "the source declares no EOS ids")
    else:
        running_on = [outcome["id"] for outcome in evaluation["forced_stops"] if outcome["generated"] != [outcome["id"]]]
        report.add(
            "generation stops at EOS (optimum-intel)",
            not running_on,
            f"with the release's generation_config.json, generation ends on each of {eos_ids}" if not running_on
            else f"generation does not stop on EOS ids {running_on}",
        )  # fmt: skip
        stops = set(evaluation["genai_stop_token_ids"]) | {evaluation["genai_eos_token_id"]}
        missing = [token for token in eos_ids if token not in stops]
        report.add(
            "generation stops at EOS (openvino-genai)",
            not missing,
            f"LLMPipeline stops on {sorted(stops)}" if not missing
            else f"LLMPipeline does not stop on EOS ids {missing} (it stops on {sorted(stops)})",
        )  # fmt: skip

    long_prompt = evaluation.get("long_prompt")
    if long_prompt is not None:
        agrees = long_prompt["genai_first_token"] == long_prompt["argmax"] or long_prompt["margin"] <= RUNTIME_TIE_MARGIN
        report.add(
            "openvino-genai past the original context",
            agrees,
            "LLMPipeline's first greedy token on the long prompt is the IR's top token" if agrees
            else f"LLMPipeline generates token {long_prompt['genai_first_token']} on the long prompt, "
            f"the IR's top token is {long_prompt['argmax']}",
        )  # fmt: skip

    disagreements = []
    for prompt, result in prompts:
        step = first_difference(result["continuation"], result["genai_continuation"])
        if step is None:
            continue
        margins = result.get("continuation_margins", [])
        if step < len(margins) and margins[step] <= RUNTIME_TIE_MARGIN:
            continue
        disagreements.append(prompt.id)
    report.add(
        "openvino-genai agrees with optimum-intel",
        not disagreements,
        "LLMPipeline and OVModelForCausalLM generate the same greedy tokens (near ties aside)" if not disagreements
        else f"LLMPipeline generates other greedy tokens than OVModelForCausalLM on {disagreements}",
    )  # fmt: skip


# --- facts for the card ----------------------------------------------------------


# NNCF 3.4's "adjust" fallback uses no group smaller than this.
MIN_ADJUSTED_GROUP_SIZE = 32


def _largest_power_of_two_divisor(width: int) -> int:
    return width & -width


def group_size_fallbacks(described: dict, compression) -> list[dict]:
    """List the weights that could not use the requested int4 group size.

    optimum-cli runs with ``--group-size-fallback adjust``: NNCF 3.4 then
    uses the largest power of two dividing the width, if it is at least 32,
    and otherwise stores the weight at the backup precision. With a ratio
    below 1, NNCF also puts some layers at the backup precision by choice, so
    a backup layer is listed only when no group size of 32 or more fits it.
    """
    if compression.precision != "int4":
        return []
    group_size = compression.options["group-size"]
    if group_size == -1:
        return []
    backup_is_fallback = compression.options["ratio"] >= 1.0
    fallbacks = []
    for weight in described["weights"]:
        width = weight["width"]
        if weight["mode"].startswith("int4"):
            if weight["group_size"] != group_size:
                fallbacks.append({"module": weight["module"], "width": width, "group_size": weight["group_size"], "stored_as": weight["mode"]})
            continue
        if width % group_size == 0:
            continue
        if not backup_is_fallback and _largest_power_of_two_divisor(width) >= MIN_ADJUSTED_GROUP_SIZE:
            continue
        if not compression.options["all-layers"] and weight["module"].endswith(_EDGE_MODULES):
            continue
        fallbacks.append({"module": weight["module"], "width": width, "group_size": weight["group_size"], "stored_as": weight["mode"]})
    return fallbacks


def compression_facts_from_ir(described: dict, compression) -> dict:
    """Collect the card's facts about one IR from its XML, not from openvino_config.json."""
    rt_info = described["rt_info"]
    prefix = "nncf.weight_compression."
    recorded = {key[len(prefix):]: value for key, value in rt_info.items() if key.startswith(prefix) and key != f"{prefix}advanced_parameters"}
    versions = {
        "OpenVINO (export)": rt_info.get("Runtime_version") or rt_info.get("OpenVINO Runtime"),
        "NNCF": rt_info.get("nncf.version"),
        "optimum-intel": rt_info.get("optimum.optimum_intel_version"),
        "optimum": rt_info.get("optimum.optimum_version"),
        "transformers": rt_info.get("optimum.transformers_version"),
        "torch": rt_info.get("optimum.pytorch_version"),
    }
    return {
        "weight_compression": recorded,
        "ir_versions": {name: value for name, value in versions.items() if value},
        "weight_formats": dict(described["modes"]),
        "float_parameters": described["float_parameters"],
        "weight_elements": described["weight_elements"],
        "group_size_fallbacks": group_size_fallbacks(described, compression),
    }
