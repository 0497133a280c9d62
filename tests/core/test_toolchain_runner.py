"""The JSON contract between the orchestrator and toolchain workers."""

from __future__ import annotations

import socket
import threading

import pytest

from hubquant.errors import ToolchainError
from hubquant.toolchains import run_step


def test_runner_returns_result(reference_toolchain):
    events = []
    result = run_step(
        reference_toolchain, "selftest", {"action": "echo", "payload": [1, "a"]}, on_event=events.append
    )
    assert result.data == {"echo": [1, "a"]}
    assert any(event.get("event") == "progress" for event in events)


def test_runner_reports_worker_message(reference_toolchain):
    with pytest.raises(ToolchainError, match="disk quota of the test"):
        run_step(reference_toolchain, "selftest", {"action": "fail", "message": "disk quota of the test"})


def test_runner_reports_unexpected_exception(reference_toolchain):
    with pytest.raises(ToolchainError, match="RuntimeError: unexpected crash"):
        run_step(reference_toolchain, "selftest", {"action": "crash"})


def test_runner_names_sigkill_as_out_of_memory(reference_toolchain):
    with pytest.raises(ToolchainError, match="killed by the operating system, probably out of memory"):
        run_step(reference_toolchain, "selftest", {"action": "sigkill"})


def test_runner_timeout_kills_worker(reference_toolchain):
    with pytest.raises(ToolchainError, match="timed out after 2 s"):
        run_step(reference_toolchain, "selftest", {"action": "sleep", "seconds": 60}, timeout=2)


def test_worker_environment_has_no_token(reference_toolchain, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalueforthetest1234567890")
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "hf_secretvalueforthetest1234567890")
    environment = run_step(reference_toolchain, "selftest", {"action": "environment"}).data["environment"]
    assert "HF_TOKEN" not in environment
    assert "HUGGING_FACE_HUB_TOKEN" not in environment
    assert "hf_secretvalueforthetest1234567890" not in str(environment)
    assert environment["HF_HUB_OFFLINE"] == "1"


def test_worker_has_no_network(reference_toolchain):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepter = threading.Thread(target=lambda: server.accept(), daemon=True)
    accepter.start()
    try:
        network = run_step(reference_toolchain, "selftest", {"action": "environment", "port": port}).data["network"]
    finally:
        server.close()
    assert network is False
