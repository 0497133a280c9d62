"""Helpers shared by the ONNX tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hubquant.pipeline import JobRequest, run_job
from hubquant.testhub import HubServer

ALICE = "hf_alice_write"
PHI3 = "microsoft/Phi-3-mini-4k-instruct"
RELEASE_TARGETS = ["onnx:int4", "onnx:fp32", "onnx:cuda-fp16"]
RELEASE_REPO = "alice/Phi-3-mini-4k-instruct-onnx"


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
        timeout=1500,
    )


def local_job(folder: Path, targets: list[str], out_dir: Path, **options):
    """Run the main job on a local folder, staging the release under `out_dir`."""
    return run_job(JobRequest(source=str(folder), targets=targets, output_dir=out_dir, **options))


def staged_manifest(result) -> dict:
    return json.loads((Path(result.releases[0].url) / "hubquant.json").read_text())


def checks_of(validation: dict) -> dict[str, str]:
    """Map each check name of a validation record to its status."""
    return {check["name"]: check["status"] for check in validation["checks"]}
