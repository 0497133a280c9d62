"""``hubquant run`` and ``hubquant plan``."""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path

import click

from hubquant.calibration import CalibrationOptions
from hubquant.cli.logs import register_secret
from hubquant.hardware import HARDWARE

DEFAULT_ENDPOINT = "https://huggingface.co"


def _common_options(function):
    options = [
        click.argument("source"),
        click.option("--target", "targets", multiple=True, metavar="BACKEND:PRECISION",
                     help="Output to build, e.g. gguf:Q4_K_M. Repeat for several."),
        click.option("--for", "hardware", multiple=True, type=click.Choice(list(HARDWARE)), metavar="HARDWARE",
                     help=f"Pick targets for this hardware, one of: {', '.join(HARDWARE)}. "
                     "Repeatable; the Space's hardware boxes pick the same targets."),
        click.option("--push", is_flag=True, help="Publish the releases to the Hub instead of staging them locally."),
        click.option("--namespace", help="User or organisation to publish under (default: the token's user)."),
        click.option("--output-dir", type=click.Path(path_type=Path), default=Path("hubquant-out"), show_default=True,
                     help="Folder for staged releases when --push is not given, one folder per repo."),
        click.option("--public/--private", "public", default=None,
                     help="Visibility of the releases (default: follow the source; a local folder gives private)."),
        click.option("--repo-name", help="Base name of the release repos instead of the source's name."),
        click.option("--update-existing", is_flag=True, help="Replace the release in an existing repo that hubquant did not create for this source."),
        click.option("--force", is_flag=True, help="Publish artifacts that failed validation (the card says so)."),
        click.option("--allow-pickle", is_flag=True, help="Accept .bin/.pt weights, loaded with torch's weights-only loader."),
        click.option("--base-model", help="Hub id a local source folder derives from (goes into the card)."),
        click.option("--max-file-size", type=float, default=50.0, show_default=True,
                     help="Largest single file in GB; bigger GGUF files are split (the Hub's limit is 50)."),
        click.option("--work-dir", type=click.Path(path_type=Path, file_okay=False), help="Folder for temporary files (default: the system temp folder)."),
        click.option("--skip-memory-check", is_flag=True,
                     help="Build ONNX, OpenVINO and MLX targets even where the free memory looks too small for them."),
        click.option("--threads", type=int, default=0, help="CPU threads for quantizing and validation (0: all cores)."),
        click.option("--calibration", "calibration_file", type=click.Path(path_type=Path, dir_okay=False),
                     help="Calibration text for importance matrices: a .txt file, or .jsonl lines with a \"text\" "
                     "string or a \"messages\" list (default: hubquant's own public-domain corpus)."),
        click.option("--calibration-dataset", metavar="ID[@REVISION]",
                     help="Hub dataset whose .txt and .jsonl files are the calibration text."),
        click.option("--imatrix-chunk-size", type=int, default=CalibrationOptions.chunk_size, show_default=True,
                     help="Tokens per chunk of calibration text: the importance matrix's chunks and GPTQ's prompts."),
        click.option("--imatrix-min-chunks", type=int, default=CalibrationOptions.min_chunks, show_default=True,
                     help="Reject an importance matrix computed over fewer chunks than this."),
        click.option("--imatrix-max-chunks", type=int,
                     help="Stop the importance matrix after this many chunks (default: all the text)."),
        click.option("--token", envvar="HF_TOKEN", help="Hub token (default: $HF_TOKEN). Never printed or stored."),
        click.option("--endpoint", envvar="HF_ENDPOINT", default=DEFAULT_ENDPOINT, show_default=True, help="Hub endpoint URL."),
        click.option("--quiet", is_flag=True, help="Print only results and errors."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _targets(targets: tuple[str, ...], hardware: tuple[str, ...]) -> list[str]:
    from hubquant.backends import backend_names
    from hubquant.errors import UsageError
    from hubquant.hardware import targets_for

    chosen = list(targets)
    if hardware:
        chosen += targets_for(list(hardware), backends=backend_names())
    if not chosen:
        raise UsageError("give at least one --target BACKEND:PRECISION (e.g. gguf:Q4_K_M) or --for HARDWARE")
    return chosen


def _request(**options):
    from hubquant.pipeline import JobRequest

    token = options["token"]
    register_secret(token)
    return JobRequest(
        source=options["source"],
        targets=_targets(options["targets"], options["hardware"]),
        endpoint=options["endpoint"].rstrip("/"),
        token=token,
        push=options["push"],
        namespace=options["namespace"],
        output_dir=options["output_dir"],
        public=options["public"],
        repo_name=options["repo_name"],
        update_existing=options["update_existing"],
        force=options["force"],
        allow_pickle=options["allow_pickle"],
        base_model=options["base_model"],
        max_file_bytes=int(options["max_file_size"] * 1000**3),
        work_dir=options["work_dir"],
        threads=options["threads"],
        check_memory=not options["skip_memory_check"],
        command=_command_line(),
        calibration_file=options["calibration_file"],
        calibration_dataset=options["calibration_dataset"],
        calibration_options=CalibrationOptions(
            chunk_size=options["imatrix_chunk_size"],
            min_chunks=options["imatrix_min_chunks"],
            max_chunks=options["imatrix_max_chunks"],
        ),
    )


def _command_line() -> str:
    # Recorded in the card; the token never appears because it comes from $HF_TOKEN
    # or --token, which is dropped here.
    words = []
    skip = False
    for word in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if word == "--token":
            skip = True
            continue
        if word.startswith("--token="):
            continue
        words.append(word)
    return shlex.join(["hubquant", *words])


def _quiet_logs() -> None:
    """Keep warnings and errors only, so --quiet also silences the tools' own log lines."""
    root = logging.getLogger()
    root.setLevel(max(root.level, logging.WARNING))


@click.command()
@_common_options
def run(**options) -> None:
    """Quantize SOURCE (a Hub id[@revision], Hub URL or local folder) to each target."""
    from hubquant.pipeline import run_job
    from hubquant.progress import ConsoleReporter

    request = _request(**options)
    if options["quiet"]:
        _quiet_logs()
    if options["quiet"] or not sys.stderr.isatty():
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    reporter = ConsoleReporter(quiet=options["quiet"])
    result = run_job(request, reporter)
    for release in result.releases:
        line = f"{release.status}: {release.url or release.repo_id}"
        if release.files:
            line += f" ({', '.join(release.files)})"
        click.echo(line)
        for target, reason in release.failed.items():
            click.echo(f"failed: {target}: {reason}")
    if not result.ok:
        raise SystemExit(1)


@click.command()
@_common_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(as_json: bool, **options) -> None:
    """Print what 'hubquant run' would create, without running anything heavy."""
    from hubquant.planning import make_plan

    request = _request(**options)
    result = make_plan(request)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"source: {result['source']}" + (f" at {result['sha']}" if result.get("sha") else ""))
    click.echo(f"visibility: {result['visibility']}")
    for release in result["releases"]:
        click.echo(f"repo {release['repo']}{' (exists)' if release.get('exists') else ''}:")
        for item in release["files"]:
            click.echo(f"  {item['name']}  ~{item['estimated_bytes'] / 1e6:,.0f} MB  ({item['target']})")
    click.echo(f"estimated peak disk: {result['estimated_disk_bytes'] / 1e9:.2f} GB; "
               f"estimated peak memory: {result['estimated_memory_bytes'] / 1e9:.2f} GB")


__all__ = ["plan", "run"]
