"""Helpers shared by the OpenVINO tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hubquant.pipeline import JobRequest, run_job
from hubquant.testhub import HubServer

ALICE = "hf_alice_write"


def run_cli(args: list[str], *, hub: HubServer, cwd: Path, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the hubquant CLI as a user would, with alice's token in HF_TOKEN."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_TOKEN")}
    env["HF_ENDPOINT"] = hub.url
    env["HF_HUB_DISABLE_XET"] = "1"
    env["HF_TOKEN"] = ALICE
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "hubquant.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=1800,
    )


def local_job(folder: Path, targets: list[str], out_dir: Path, **options):
    """Run the main job on a local folder, staging releases under ``out_dir``."""
    return run_job(JobRequest(source=str(folder), targets=targets, output_dir=out_dir, **options))


def staged_manifest(release) -> dict:
    return json.loads((Path(release.url) / "hubquant.json").read_text())


def check_statuses(validation: dict) -> dict[str, str]:
    return {check["name"]: check["status"] for check in validation["checks"]}
