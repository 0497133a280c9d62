"""`serve_main`: the foreground server that `hubquant hub serve` runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi

SRC = Path(__file__).resolve().parents[2] / "src"


def start_cli(state: Path, *extra: str) -> subprocess.Popen:
    code = (
        "import sys; from hubquant.testhub.cli import serve_main;"
        " sys.exit(serve_main(sys.argv[1:]))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    return subprocess.Popen(
        [sys.executable, "-c", code, "--state", str(state), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def read_url(process: subprocess.Popen) -> tuple[str, list[str]]:
    lines = []
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("Press Ctrl-C"):
            break
    url = lines[0].split(" at ")[1]
    return url, lines


@pytest.fixture
def cli_process(tmp_path):
    process = start_cli(tmp_path / "state")
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_serve_prints_url_and_tokens(cli_process):
    url, lines = read_url(cli_process)
    assert url.startswith("http://127.0.0.1:")
    assert "  alice: hf_alice_write (write)" in lines
    assert HfApi(endpoint=url, token="hf_alice_write").whoami()["name"] == "alice"


def test_serve_stops_on_sigterm(cli_process):
    read_url(cli_process)
    cli_process.send_signal(signal.SIGTERM)
    assert cli_process.wait(timeout=10) == 0


def test_serve_accounts_file(tmp_path):
    accounts = tmp_path / "accounts.json"
    accounts.write_text(
        json.dumps([{"name": "frank", "tokens": {"hf_frank": "write"}}])
    )
    process = start_cli(tmp_path / "state", "--accounts", str(accounts))
    try:
        url, lines = read_url(process)
        assert "  frank: hf_frank (write)" in lines
        assert not any(line.startswith("  alice:") for line in lines)
        assert HfApi(endpoint=url, token="hf_frank").whoami()["name"] == "frank"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
