"""Helpers shared by the MLX tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hubquant.backends.base import BuildContext, Release
from hubquant.backends.mlx import MlxBackend
from hubquant.progress import Reporter
from hubquant.reference import ReferenceOutputs, compute_reference
from hubquant.source import chat_template_of, inspect_folder
from hubquant.targets import Target
from hubquant.testhub import HubServer

ALICE = "hf_alice_write"


def run_cli(args: list[str], *, hub: HubServer, cwd: Path, token: str | None = ALICE) -> subprocess.CompletedProcess:
    """Run the hubquant CLI as a user would, with the token in HF_TOKEN."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_TOKEN")}
    env["HF_ENDPOINT"] = hub.url
    env["HF_HUB_DISABLE_XET"] = "1"
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "hubquant.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=1200,
    )


def move_rope_keys(folder: Path) -> None:
    """Rewrite config.json with its RoPE keys under rope_parameters, as transformers 5 saves them.

    transformers 5.25's save_pretrained keeps some keys at the top level as
    well; this moves all of them, so mlx-lm finds none where it looks.
    """
    path = folder / "config.json"
    config = json.loads(path.read_text())
    scaling = config.pop("rope_scaling", None)
    rope = dict(scaling) if scaling else {}
    rope["rope_type"] = rope.get("type", "default")
    for key in ("rope_theta", "partial_rotary_factor", "original_max_position_embeddings"):
        if key in config:
            rope[key] = config.pop(key)
    config["rope_parameters"] = rope
    path.write_text(json.dumps(config, indent=2))


def reference_for(folder: Path, work: Path) -> ReferenceOutputs:
    return compute_reference(folder, work / "reference", has_chat_template=chat_template_of(folder) is not None)


def build_direct(folder: Path, precisions: list[str], work: Path, reference: ReferenceOutputs | None, **options) -> Release:
    """Run MlxBackend.build on a local folder with a given reference, without publishing.

    Building several targets in one Release shares one reference and one
    mlx-lm run of the source between them, which keeps the tests short.
    """
    source = inspect_folder(folder)
    context = BuildContext(
        source=source,
        reference=reference,
        work_dir=work,
        reporter=Reporter(),
        max_file_bytes=options.pop("max_file_bytes", 50 * 1000**3),
        **options,
    )
    backend = MlxBackend()
    release = Release("mlx", f"{folder.name}-mlx", [Target("mlx", backend.normalize_precision(p)) for p in precisions])
    backend.build(context, release)
    return release


def checks_of(report: dict) -> dict[str, str]:
    return {check["name"]: check["status"] for check in report["checks"]}
