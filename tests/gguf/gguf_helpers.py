"""Helpers shared by the GGUF job tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hubquant.testhub import HubServer

ALICE = "hf_alice_write"


def run_cli(args: list[str], *, hub: HubServer, token: str | None = ALICE, cwd: Path, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the hubquant CLI as a user would, with the token in HF_TOKEN."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_TOKEN")}
    env["HF_ENDPOINT"] = hub.url
    env["HF_HUB_DISABLE_XET"] = "1"
    if token:
        env["HF_TOKEN"] = token
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-m", "hubquant.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=1200,
    )
