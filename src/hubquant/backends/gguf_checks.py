"""The checks every GGUF artifact must pass before it is published."""

from __future__ import annotations

import math

from hubquant import toolchains
from hubquant.comparison import check_against_unquantized, check_greedy_against_source, check_logits_against_source
from hubquant.reference import ReferenceOutputs
from hubquant.source import chat_template_of
from hubquant.validation import ValidationReport

STOP_PROMPT = "Hello"


def _rope_scaling(config: dict) -> dict | None:
    scaling = config.get("rope_scaling") or config.get("rope_parameters")
    if isinstance(scaling, dict) and scaling.get("long_factor"):
        return scaling
    return None


def check_metadata(report: ValidationReport, described: dict, context, *, evaluation: dict | None = None) -> None:
    """Check that the file keeps what the source defines: rope factors, template, EOS."""
    source = context.source
    toolchain = toolchains.ensure("gguf")
    scaling = _rope_scaling(source.config)
    if scaling is not None:
        for kind in ("long", "short"):
            expected = [float(value) for value in scaling[f"{kind}_factor"]]
            values = toolchains.run_step(
                toolchain,
                "gguf",
                {"op": "read_tensor", "file": str(described["path"]), "name": f"rope_factors_{kind}.weight"},
            ).data["values"]
            if values is None:
                report.add(f"rope {kind} factors", False, f"rope_factors_{kind}.weight is missing")
            elif len(values) != len(expected) or not all(
                math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6) for a, b in zip(values, expected)
            ):
                report.add(f"rope {kind} factors", False, f"rope_factors_{kind}.weight differs from config.json's {kind}_factor")
            else:
                report.add(f"rope {kind} factors", True, f"{len(values)} factors equal to config.json")

    template = chat_template_of(source.path)
    stored = described["metadata"].get("tokenizer.chat_template")
    if template is None:
        report.add("chat template", stored is None, "the source has no chat template" if stored is None else "the file has a chat template the source lacks")
    else:
        report.add(
            "chat template",
            stored == template,
            "identical to the source's chat template" if stored == template else "tokenizer.chat_template differs from the source's chat template",
        )

    if evaluation is None:
        return
    not_eog = [entry["id"] for entry in evaluation["eos"] if not entry["is_eog"]]
    report.add(
        "every EOS id ends generation",
        not not_eog,
        f"EOS ids {sorted(e['id'] for e in evaluation['eos'])} are end-of-generation tokens" if not not_eog else f"EOS ids {not_eog} are not end-of-generation tokens in llama.cpp",
    )
    reference = context.reference
    mismatched = [
        prompt.id
        for prompt, result in zip(reference.prompts, evaluation["prompts"])
        if result.get("tokens_from_text") is not None and result["tokens_from_text"] != _without_bos(prompt.input_ids, reference, result)
    ]
    report.add(
        "tokenizer agrees with transformers",
        not mismatched,
        "llama.cpp tokenizes every prompt to the same ids" if not mismatched else f"prompts {mismatched} tokenize differently in llama.cpp",
    )


def _without_bos(ids: list[int], reference: ReferenceOutputs, result: dict) -> list[int]:
    # transformers may add a BOS to plain-text prompts; llama.cpp tokenization is
    # asked without one, so compare the text's own tokens.
    tokens = result["tokens_from_text"]
    if len(ids) == len(tokens) + 1 and ids[1:] == tokens:
        return ids[1:]
    return ids


def check_runtime_against_source(report: ValidationReport, evaluation: dict, reference: ReferenceOutputs, logit_limit: float, top1_min: float) -> None:
    comparisons = [p["comparison"] for p in evaluation["prompts"]]
    check_logits_against_source(report, comparisons, logit_limit=logit_limit, top1_min=top1_min, subject="the file")
    continuations = [result["continuation"]["tokens"] for result in evaluation["prompts"]]
    report.metrics["greedy_match"] = check_greedy_against_source(report, reference, continuations, logit_limit=logit_limit)


def check_quantized(report: ValidationReport, evaluation: dict, kl_limit: float, top1_min: float) -> None:
    comparisons = [p["comparison"] for p in evaluation["prompts"]]
    check_against_unquantized(
        report, comparisons, kl_limit=kl_limit, top1_min=top1_min, subject="the file", against="the unquantized conversion"
    )


def check_stops(report: ValidationReport, toolchain, path, context) -> None:
    """Force each EOS id with a logit bias; generation must end right there."""
    from hubquant.cards_context import config_eos_ids

    eos_ids = sorted(set(config_eos_ids(context.source)))
    if not eos_ids:
        report.skip("generation stops at EOS", "the source declares no EOS ids")
        return
    outcomes = toolchains.run_step(
        toolchain,
        "gguf",
        {"op": "forced_stop", "file": str(path), "eos_ids": eos_ids, "prompt": STOP_PROMPT},
    ).data["outcomes"]
    running_on = [o["id"] for o in outcomes if o["finish_reason"] != "stop" or o["generated_tokens"] > 1]
    report.add(
        "generation stops at EOS",
        not running_on,
        "a short generation ends on each EOS id" if not running_on else f"generation does not stop on EOS ids {running_on}",
    )
