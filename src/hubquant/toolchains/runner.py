"""Run one backend step inside a toolchain, over a small JSON contract.

The orchestrator writes a request JSON file and starts
``python -m hubquant_worker.<worker> REQUEST RESULT`` with the toolchain's interpreter.
The worker prints JSON-lines events (``log``, ``progress``) on stdout, lets the
tool's own output go to stderr, and writes ``{"ok": true, "result": {...}}`` or
``{"ok": false, "error": {"type": ..., "message": ...}}`` to the result file.

Workers run without the user's token, offline, and in a new network namespace
where the kernel allows one, so a backend cannot reach the network at all.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import os
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hubquant.errors import ToolchainError
from hubquant.toolchains.setup import Toolchain

log = logging.getLogger(__name__)

RUNTIME_DIR = Path(__file__).parent / "runtime"
STDERR_TAIL_LINES = 40

# Variables copied into a worker's environment; everything else, tokens included,
# is dropped.
_PASSED_VARIABLES = ("PATH", "LANG", "LC_ALL", "TZ", "OMP_NUM_THREADS", "TMPDIR")
_OFFLINE_VARIABLES = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    # OpenVINO sends telemetry unless CI is set or the user opted out.
    "CI": "true",
}

Event = dict
EventHandler = Callable[[Event], None]


@dataclass
class StepResult:
    """The ``result`` object a worker returned, with the tail of its stderr."""

    data: dict
    stderr_tail: list[str]


@functools.cache
def _network_isolation_prefix() -> tuple[str, ...]:
    for prefix in (("unshare", "-n"), ("unshare", "-rn")):
        try:
            probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return prefix
    log.warning(
        "cannot create a network namespace here; toolchain steps run with "
        "offline settings only"
    )
    return ()


def worker_environment(home: Path) -> dict[str, str]:
    """Return the environment of a worker: no secrets, offline, HOME inside ``home``."""
    env = {name: os.environ[name] for name in _PASSED_VARIABLES if name in os.environ}
    env.update(_OFFLINE_VARIABLES)
    env["HOME"] = str(home)
    env["HF_HOME"] = str(home / "hf")
    env["XDG_CACHE_HOME"] = str(home / "cache")
    env["PYTHONPATH"] = str(RUNTIME_DIR)
    return env


def run_step(
    toolchain: Toolchain,
    worker: str,
    request: dict,
    *,
    on_event: EventHandler | None = None,
    timeout: float | None = None,
    isolate_network: bool = True,
) -> StepResult:
    """Run ``hubquant_worker.<worker>`` in ``toolchain`` and return its result.

    Raises ToolchainError with the worker's own message when it fails, and with
    "killed by the operating system, probably out of memory" when it gets SIGKILL.
    """
    with tempfile.TemporaryDirectory(prefix=f"hubquant-{worker}-") as scratch:
        scratch_dir = Path(scratch)
        request_file = scratch_dir / "request.json"
        result_file = scratch_dir / "result.json"
        request_file.write_text(json.dumps(request))
        home = scratch_dir / "home"
        home.mkdir()

        command = [
            str(toolchain.python),
            "-u",
            "-m",
            f"hubquant_worker.{worker}",
            str(request_file),
            str(result_file),
        ]
        if isolate_network:
            command = [*_network_isolation_prefix(), *command]
        log.debug("starting %s", " ".join(command))

        returncode, stderr_tail = _run_streaming(
            command, worker_environment(home), on_event, timeout
        )
        outcome = _read_result(result_file)

    step = f"{toolchain.name} step {worker!r}"
    if returncode == -signal.SIGKILL:
        raise ToolchainError(
            f"{step} was killed by the operating system, probably out of memory. "
            "Free memory or choose a smaller model or fewer targets."
        )
    if outcome is not None and not outcome.get("ok"):
        error = outcome.get("error", {})
        raise ToolchainError(
            f"{step} failed: {error.get('message', 'no message')}",
        )
    if returncode != 0 or outcome is None:
        tail = "\n".join(stderr_tail[-15:])
        raise ToolchainError(f"{step} exited with status {returncode}:\n{tail}")
    return StepResult(outcome.get("result", {}), stderr_tail)


def _read_result(result_file: Path) -> dict | None:
    if not result_file.is_file():
        return None
    try:
        return json.loads(result_file.read_text())
    except json.JSONDecodeError:
        return None


def _run_streaming(
    command: list[str],
    env: dict[str, str],
    on_event: EventHandler | None,
    timeout: float | None,
) -> tuple[int, list[str]]:
    stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
        errors="replace",
    )

    def pump_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            line = line.rstrip("\n")
            stderr_tail.append(line)
            log.debug("[worker] %s", line)

    reader = threading.Thread(target=pump_stderr, daemon=True)
    reader.start()
    timed_out = threading.Event()

    def kill_on_timeout() -> None:
        timed_out.set()
        process.kill()

    timer = threading.Timer(timeout, kill_on_timeout) if timeout else None
    if timer is not None:
        timer.start()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            _dispatch_stdout(line.rstrip("\n"), on_event)
        process.wait()
    finally:
        if timer is not None:
            timer.cancel()
    if timed_out.is_set():
        raise ToolchainError(
            f"{command[-3]} timed out after {timeout:.0f} s; raise the time limit "
            "or choose a smaller model"
        )
    reader.join(timeout=5)
    return process.returncode, list(stderr_tail)


def _dispatch_stdout(line: str, on_event: EventHandler | None) -> None:
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        log.debug("[worker] %s", line)
        return
    if not isinstance(event, dict):
        log.debug("[worker] %s", line)
        return
    if event.get("event") == "log":
        level = getattr(logging, str(event.get("level", "info")).upper(), logging.INFO)
        log.log(level, "%s", event.get("message", ""))
    if on_event is not None:
        on_event(event)
