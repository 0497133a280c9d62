"""A worker that exercises the JSON contract itself (used by ``hubquant setup`` checks
and the test suite): it echoes, fails, kills itself, or reports its environment."""

from __future__ import annotations

import os
import signal
import socket
import time

from hubquant_worker.protocol import StepError, info, progress, serve


def handle(request: dict) -> dict:
    action = request.get("action")
    if action == "echo":
        info("echo step running")
        progress("echo", 1, 1)
        return {"echo": request.get("payload")}
    if action == "fail":
        raise StepError(request.get("message", "requested failure"))
    if action == "crash":
        raise RuntimeError("unexpected crash")
    if action == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "sleep":
        time.sleep(float(request.get("seconds", 10)))
        return {}
    if action == "environment":
        return {"environment": dict(os.environ), "network": _can_connect(request.get("port"))}
    raise StepError(f"unknown selftest action {action!r}")


def _can_connect(port) -> bool:
    if not port:
        return False
    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=2):
            return True
    except OSError:
        return False


if __name__ == "__main__":
    serve(handle)
