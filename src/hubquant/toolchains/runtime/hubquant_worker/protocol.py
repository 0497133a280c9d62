"""The worker side of the JSON contract described in hubquant.toolchains.runner."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path


class StepError(Exception):
    """A failure whose message is meant for the user, without a traceback."""


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def info(message: str) -> None:
    emit("log", level="info", message=message)


def warning(message: str) -> None:
    emit("log", level="warning", message=message)


def progress(step: str, done: float, total: float) -> None:
    emit("progress", step=step, done=done, total=total)


def serve(handler: Callable[[dict], dict]) -> None:
    """Read the request file, call ``handler`` and write the result file."""
    request_path, result_path = Path(sys.argv[1]), Path(sys.argv[2])
    request = json.loads(request_path.read_text())
    try:
        result = handler(request)
        outcome = {"ok": True, "result": result}
        code = 0
    except StepError as error:
        outcome = {"ok": False, "error": {"type": "StepError", "message": str(error)}}
        code = 1
    except Exception as error:  # reported to the orchestrator, then exit 1
        traceback.print_exc()
        message = f"{type(error).__name__}: {error}"
        outcome = {"ok": False, "error": {"type": type(error).__name__, "message": message}}
        code = 1
    result_path.write_text(json.dumps(outcome))
    sys.exit(code)
