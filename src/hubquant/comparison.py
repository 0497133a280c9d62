"""Checks shared by every backend: an artifact's outputs against reference outputs.

A worker returns, per prompt, a ``comparison`` dict (``finite``, ``max_abs_diff``,
``kl_mean``, ``kl_max``, ``top1_agreement``) and its greedy tokens; these functions
turn them into named checks. ``subject`` names the artifact in failure details
("the file", "the variant", "the IR") and ``against`` the model it is compared
with, so each backend's check names stay its own.
"""

from __future__ import annotations

from hubquant.reference import ReferenceOutputs
from hubquant.validation import ValidationReport


def first_difference(expected: list[int], produced: list[int]) -> int | None:
    """Return the first step where ``produced`` departs from ``expected``, or None."""
    for step, token in enumerate(expected):
        if step >= len(produced) or produced[step] != token:
            return step
    return None


def _add_finite(report: ValidationReport, comparisons: list[dict], subject: str) -> bool:
    finite = all(comparison["finite"] for comparison in comparisons)
    detail = "all logits are finite" if finite else f"{subject} produces inf or NaN logits"
    report.add("finite logits", finite, detail)
    return finite


def check_logits_against_source(
    report: ValidationReport, comparisons: list[dict], *, logit_limit: float, top1_min: float, subject: str
) -> None:
    """Check finite logits, the max logit difference and top-1 agreement with transformers."""
    max_diff = max(comparison["max_abs_diff"] for comparison in comparisons)
    top1 = sum(comparison["top1_agreement"] for comparison in comparisons) / len(comparisons)
    report.metrics.update({"max_abs_diff": max_diff, "top1_agreement": top1, "prompts": len(comparisons)})

    finite = _add_finite(report, comparisons, subject)
    report.add(
        "logits match transformers",
        finite and max_diff <= logit_limit,
        f"max |logit difference| {max_diff:.4g} over {len(comparisons)} prompts (limit {logit_limit})",
    )
    report.add(
        "top-1 agreement with transformers",
        top1 >= top1_min,
        f"{100 * top1:.1f}% of positions (minimum {100 * top1_min:.0f}%)",
    )


def describe_long_prompt(measured: dict, tokens: int) -> str:
    """Return the measures of the prompt past a LongRoPE source's original context."""
    return (
        f"a {tokens}-token prompt: max logit difference {measured['max_abs_diff']:.3g}, "
        f"top-1 agreement {100 * measured['top1_agreement']:.0f}%"
    )


def check_long_prompt_against_source(report: ValidationReport, measured: dict, tokens: int, *, logit_limit: float, top1_min: float) -> None:
    """Check the prompt past a LongRoPE source's original context against transformers."""
    passed = measured["finite"] and measured["max_abs_diff"] <= logit_limit and measured["top1_agreement"] >= top1_min
    report.add(
        "past the original context",
        passed,
        f"{describe_long_prompt(measured, tokens)} (limit {logit_limit}, minimum {100 * top1_min:.0f}%)",
    )


def check_greedy_against_source(
    report: ValidationReport,
    reference: ReferenceOutputs,
    continuations: list[list[int]],
    *,
    logit_limit: float,
    name: str = "greedy continuation",
) -> bool:
    """Check greedy tokens against transformers'; return whether they all match.

    A difference passes only where the reference's top-2 logit gap at that step
    is within ``logit_limit``, so the two runs met a near tie.
    """
    mismatches = []
    near_ties = []
    for prompt, produced in zip(reference.prompts, continuations):
        step = first_difference(prompt.continuation, produced)
        if step is None:
            continue
        margins = prompt.continuation_margins
        if step < len(margins) and margins[step] <= logit_limit:
            near_ties.append(prompt.id)
        else:
            mismatches.append(prompt.id)

    detail = f"the same {reference.max_new_tokens} greedy tokens as transformers on every prompt"
    if near_ties:
        detail = (
            f"the same greedy tokens as transformers, except after a near tie (top-2 logit gap "
            f"within {logit_limit}) on {near_ties}"
        )
    if mismatches:
        detail = f"greedy tokens differ from transformers on {mismatches}"
    report.add(name, not mismatches, detail)
    return not mismatches


def check_against_unquantized(
    report: ValidationReport,
    comparisons: list[dict],
    *,
    kl_limit: float,
    top1_min: float,
    subject: str,
    against: str,
    record_max_abs_diff: bool = False,
) -> None:
    """Check KL divergence and top-1 agreement with the unquantized model in one runtime."""
    kl_mean = sum(comparison["kl_mean"] for comparison in comparisons) / len(comparisons)
    kl_max = max(comparison["kl_max"] for comparison in comparisons)
    top1 = sum(comparison["top1_agreement"] for comparison in comparisons) / len(comparisons)
    report.metrics.update({"kl_mean": kl_mean, "kl_max": kl_max, "top1_agreement": top1})
    if record_max_abs_diff:
        report.metrics["max_abs_diff"] = max(comparison["max_abs_diff"] for comparison in comparisons)
    report.metrics["prompts"] = len(comparisons)

    finite = _add_finite(report, comparisons, subject)
    report.add(
        f"KL divergence to {against}",
        finite and kl_mean <= kl_limit,
        f"mean {kl_mean:.4g}, max {kl_max:.4g} (limit on the mean {kl_limit})",
    )
    if top1_min <= 0:
        report.skip(
            f"top-1 agreement with {against}",
            f"{100 * top1:.1f}% of positions, with no minimum for this type: on untrained test models it is near zero",
        )
    else:
        report.add(
            f"top-1 agreement with {against}",
            top1 >= top1_min,
            f"{100 * top1:.1f}% of positions (minimum {100 * top1_min:.0f}%)",
        )


def summarize(target: str, bits_per_weight: float | None, comparisons: list[dict]) -> dict:
    """Return the KL and top-1 summary of a build measured only for comparison, such as a data-free twin."""
    return {
        "target": target,
        "bits_per_weight": bits_per_weight,
        "kl_mean": sum(comparison["kl_mean"] for comparison in comparisons) / len(comparisons),
        "kl_max": max(comparison["kl_max"] for comparison in comparisons),
        "top1_agreement": sum(comparison["top1_agreement"] for comparison in comparisons) / len(comparisons),
    }
