"""Text, Markdown and HTML that the Space shows, built from plain data.

Kept apart from the gradio layout so that tests can check what a user reads
without a browser.
"""

from __future__ import annotations

import html
import time

from hubquant.progress import DONE, FAILED
from hubquant.space.jobs import Job
from hubquant.space.picking import HardwareChoice
from hubquant.space.sources import SourceSummary

STATUS_HEADERS = ["Target", "State", "Reason"]
SIGN_IN_NEEDED = (
    "**Sign in to start a job.** The Space downloads the source and publishes the "
    "releases with your Hugging Face account, through the *Sign in with Hugging Face* "
    "button above. It asks for read access (for gated and private models you can "
    "open) and for write access to create repos in your namespace and organisations. "
    "Without signing in, nothing is started."
)

# The option syntax of each backend's targets, as `hubquant run --target` takes them.
TARGET_OPTIONS_HELP = """Options per backend (the same syntax as `hubquant run --target`):

- **gguf**: `gguf:TYPE[:imatrix,output=TYPE,embeddings=TYPE]`, for example `gguf:IQ3_M` or `gguf:Q4_K_M:imatrix,output=Q8_0`.
- **onnx**: `onnx:[PROVIDER-]PRECISION[-rtn|-kquant|-gptq][-block-N][-acc-level-N][-asym][-embeds-int4][-lm-head-int8|-lm-head-float]`, for example `onnx:int4-kquant-block-64` or `onnx:cuda-fp16`.
- **openvino**: `openvino:PRECISION[:group-size=N,ratio=R,sym=true,backup-precision=P,all-layers=true]`, for example `openvino:int4:group-size=64,ratio=0.8`.
- **mlx**: `mlx:Nbit[-gGROUP][-gptq]`, `mlx:mixed_L_H`, `mlx:mxfp4`, `mlx:bf16`, for example `mlx:4bit-g32`."""


def hardware_markdown(choices: list[HardwareChoice]) -> str:
    """Describe each kind of hardware in one line, for the help under the boxes."""
    return "\n".join(f"- **{html.escape(choice.label)}**: {html.escape(choice.description)}" for choice in choices)


def summary_markdown(summary: SourceSummary, *, skipped_targets: list[str] | None = None) -> str:
    """Describe a source and the planned releases before the run."""
    access = []
    if summary.private:
        access.append("private")
    if summary.gated:
        access.append("gated")
    lines = [
        f"### {summary.repo_id}" + (f" @ {summary.revision}" if summary.revision else ""),
        "",
        "| Fact | Value |",
        "|---|---|",
        f"| Commit | `{summary.sha[:12]}` |",
        f"| Architecture | {summary.architecture} |",
        f"| Parameters | {_count(summary.parameters)} |",
        f"| Source dtype | {summary.dtype} |",
        f"| License | {summary.license} |",
        f"| Access | {', '.join(access) if access else 'public'} |",
        f"| Source size | {_bytes(summary.source_bytes)} |",
        f"| Backends that convert it | {', '.join(summary.backends) or 'none of the installed backends'} |",
    ]
    if summary.unsupported_backends:
        lines.append(f"| Backends that do not | {', '.join(summary.unsupported_backends)} |")
    plan = summary.plan
    if plan:
        lines += [
            f"| Estimated peak disk | {_bytes(plan['estimated_disk_bytes'])} |",
            f"| Estimated peak memory | {_bytes(plan['estimated_memory_bytes'])} |",
            f"| Estimated time | {_duration(summary.estimated_seconds)} (a rough estimate) |",
            "",
            "**Releases**",
            "",
        ]
        for release in plan["releases"]:
            visibility = "private" if release["private"] else "public"
            existing = "existing repo, updated" if release["exists"] else "new repo"
            lines.append(f"- `{release['repo']}` ({existing}, {visibility})")
            for item in release["files"]:
                lines.append(f"  - `{item['name']}`: about {_bytes(item['estimated_bytes'])} ({item['target']})")
        lines += ["", f"Visibility: {_form_wording(plan['visibility'])}."]
    for note in summary.notes:
        lines += ["", f"Note: {note}."]
    if skipped_targets:
        lines += [
            "",
            f"Not built on this Space: {', '.join(skipped_targets)} (their backends are not installed here).",
        ]
    return "\n".join(lines)


# The plan's visibility notes name the command line's flags; the form has a checkbox.
_FLAG_WORDING = {
    "(pass --public to change)": "(tick Public releases to change)",
    "because --public was given": "because Public releases is ticked",
    "because --private was given": "because Public releases is not ticked",
}


def _form_wording(note: str) -> str:
    for flag, form in _FLAG_WORDING.items():
        note = note.replace(flag, form)
    return note


def visibility_warning(summary: SourceSummary | None, public: bool) -> str:
    """Warn when a private or gated source is about to get public releases."""
    if summary is None or not public:
        return ""
    if summary.private:
        return (
            "**Warning:** the source is private, but the releases will be **public**: anyone can "
            "download the quantized weights. Untick *Public releases* to keep them private."
        )
    if summary.gated:
        return (
            "**Warning:** the source is gated. The public releases will be gated too, so users "
            "must request access before they can download the weights."
        )
    return ""


def job_choices(jobs: list[Job]) -> list[tuple[str, str]]:
    """Return (label, job id) pairs for the job picker, newest first."""
    return [(job_label(job), job.id) for job in jobs]


def job_label(job: Job) -> str:
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(job.created_at))
    return f"{job.source} [{job.state}] {started} ({job.id})"


def status_rows(job: Job | None) -> list[list[str]]:
    """Return one [target, state, reason] row per target."""
    if job is None:
        return []
    return [[target, row["state"], row.get("reason", "")] for target, row in job.rows.items()]


def job_heading(job: Job | None) -> str:
    if job is None:
        return "No job selected."
    text = f"**Job {job.id}**: {html.escape(job.source)} → {html.escape(job.namespace)}, state **{job.state}**"
    if job.message:
        text += f". {html.escape(job.message)}"
    return text


def progress_html(job: Job | None) -> str:
    """Render the job's overall bar (targets finished) and one bar per reported step."""
    if job is None:
        return ""
    total = len(job.rows)
    finished = sum(1 for row in job.rows.values() if row["state"] in (DONE, FAILED))
    bars = [_bar("targets finished", finished, total)]
    for label, (done, step_total) in job.progress.items():
        if step_total:
            bars.append(_bar(label, done, step_total))
    return '<div class="hq-progress">' + "".join(bars) + "</div>"


def _bar(label: str, done: float, total: float) -> str:
    percent = 100.0 * min(done / total, 1.0) if total else 0.0
    return (
        f'<div class="hq-bar"><span>{html.escape(label)}: {done:g} of {total:g}</span>'
        f'<progress value="{done:g}" max="{total:g}" aria-label="{html.escape(label)}">{percent:.0f}%</progress></div>'
    )


def log_text(job: Job | None, lines: int = 200) -> str:
    if job is None:
        return ""
    return "\n".join(job.log[-lines:])


def results_markdown(job: Job | None) -> str:
    """Links to each release, what failed and the validation numbers per target."""
    if job is None or not job.releases:
        return ""
    parts = []
    for release in job.releases:
        status = release["status"]
        if release.get("url") and status != "failed":
            parts.append(f"### [{release['repo_id']}]({release['url']}) ({status})")
        else:
            parts.append(f"### {release['repo_id']} ({status}, nothing published)")
        if release.get("files"):
            parts.append("Files: " + ", ".join(f"`{name}`" for name in release["files"]))
        for target, reason in release.get("failed", {}).items():
            parts.append(f"- `{target}` failed and was not published: {html.escape(reason)}")
        table = _validation_table(release)
        if table:
            parts.append(table)
    return "\n\n".join(parts)


def _validation_table(release: dict) -> str:
    rows = []
    for artifact in release.get("artifacts", []):
        validation = artifact.get("validation", {})
        rows.append(
            "| {target} | {status} | {size} | {bpw} | {kl} | {top1} |".format(
                target=artifact["target"],
                status=validation.get("status", "?"),
                size=_bytes(artifact.get("size_bytes") or 0),
                bpw=_number(artifact.get("bits_per_weight"), 2),
                kl=_number(validation.get("kl_mean"), 4),
                top1=_number(validation.get("top1_agreement"), 3),
            )
        )
    reference = release.get("reference_validation") or {}
    if not rows and not reference:
        return ""
    lines = [
        "| Target | Validation | Size | Bits per weight | KL mean (nats) | Top-1 agreement |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    if reference:
        lines += [
            "",
            f"Unquantized conversion against transformers: {reference.get('status', '?')}, "
            f"max logit difference {_number(reference.get('max_abs_diff'), 4)}, "
            f"top-1 agreement {_number(reference.get('top1_agreement'), 3)}.",
        ]
    return "\n".join(lines)


def card_previews(job: Job | None) -> list[tuple[str, str]]:
    """Return (repo id, card Markdown without its YAML header) per release with a card."""
    if job is None:
        return []
    previews = []
    for release in job.releases:
        card = release.get("card") or ""
        if card.startswith("---"):
            _, _, rest = card[3:].partition("\n---")
            card = rest.lstrip("\n")
        if card:
            previews.append((release["repo_id"], card))
    return previews


def _count(parameters: int) -> str:
    if parameters >= 1e9:
        return f"{parameters / 1e9:.2f} B"
    if parameters >= 1e6:
        return f"{parameters / 1e6:.1f} M"
    return f"{parameters:,}"


def _bytes(size: float) -> str:
    if size >= 1e9:
        return f"{size / 1e9:.2f} GB"
    if size >= 1e6:
        return f"{size / 1e6:.1f} MB"
    return f"{size / 1e3:.0f} kB"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"about {seconds:.0f} s"
    if seconds < 5400:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"


def _number(value, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)
