"""One Space job in its own process: ``python -m hubquant.space.worker``.

The parent writes one JSON request, token included, to stdin and closes it, so
the token never appears in the command line, the environment or a file. The
worker writes JSON events, one per line, to stdout, and log lines to stderr.
Running each job in its own process group lets the Space stop a job that runs
past its time limit, toolchain processes included.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from hubquant.progress import Reporter

# Progress events of one label closer together than this are dropped, except the last.
PROGRESS_INTERVAL_S = 0.25
# How often the worker checks that the Space that started it is still running.
PARENT_CHECK_S = 1.0


class EventReporter(Reporter):
    """Writes every step, progress and message event as one JSON line."""

    def __init__(self, stream) -> None:
        super().__init__()
        self._stream = stream
        self._write_lock = threading.Lock()
        self._last_progress: dict[str, float] = {}

    def emit(self, event: dict) -> None:
        line = json.dumps(event)
        with self._write_lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def on_step(self, key: str, state: str, reason: str) -> None:
        self.emit({"event": "step", "key": key, "state": state, "reason": reason})

    def on_progress(self, label: str, done: float, total: float | None) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if not finished and now - self._last_progress.get(label, 0.0) < PROGRESS_INTERVAL_S:
            return
        self._last_progress[label] = now
        self.emit({"event": "progress", "label": label, "done": done, "total": total})

    def on_message(self, text: str) -> None:
        self.emit({"event": "message", "text": text})


def stop_when_orphaned(parent: int, interval: float = PARENT_CHECK_S) -> None:
    """Kill this worker's process group once `parent`, the Space's process, has exited.

    The worker runs in its own session so the Space can stop it with its
    toolchain processes. Without this check, a Space killed by a signal would
    leave its jobs running, unseen, next to the restarted Space. The Space
    passes its pid because it may already be gone when this function runs.
    """

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os.killpg(os.getpgrp(), signal.SIGKILL)
            time.sleep(interval)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one Space job read from stdin.")
    parser.add_argument("--parent-pid", type=int, help="Process id of the Space; the worker stops when that process exits.")
    args = parser.parse_args(argv)
    if args.parent_pid is not None:
        stop_when_orphaned(args.parent_pid)
    # Events go to the original stdout; anything else printed goes to stderr.
    events = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    reporter = EventReporter(events)

    payload = json.loads(sys.stdin.read())
    token = payload.pop("token")

    from hubquant.cli.logs import configure_logging, register_secret

    register_secret(token)
    configure_logging("info")
    # One line per Hub request would bury the job's own messages.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    try:
        result = _run(payload, token, reporter)
    except Exception as error:  # noqa: BLE001 - every failure is reported to the Space
        from hubquant.cli.logs import redact
        from hubquant.errors import HubquantError

        if not isinstance(error, HubquantError):
            logging.getLogger(__name__).exception("job failed")
        reporter.emit({"event": "error", "kind": type(error).__name__, "message": redact(str(error))})
        return 1
    reporter.emit({"event": "result", "result": result})
    return 0


def _run(payload: dict, token: str, reporter: EventReporter) -> dict:
    from huggingface_hub import HfApi

    from hubquant.pipeline import JobRequest, run_job

    request = JobRequest(
        source=payload["source"],
        targets=payload["targets"],
        endpoint=payload["endpoint"],
        token=token,
        push=True,
        namespace=payload["namespace"],
        public=payload["public"],
        repo_name=payload.get("repo_name") or None,
        work_dir=Path(payload["work_dir"]) if payload.get("work_dir") else None,
        threads=payload.get("threads", 0),
        max_file_bytes=payload["max_file_bytes"],
        command=payload.get("command", ""),
    )
    result = run_job(request, reporter)
    api = HfApi(endpoint=request.endpoint, token=token)
    releases = []
    for release in result.releases:
        releases.append(
            {
                "repo_id": release.repo_id,
                "url": release.url,
                "targets": release.targets,
                "files": release.files,
                "failed": release.failed,
                "status": release.status,
                "card": release.card,
                "reference_validation": release.validation,
                "artifacts": _published_artifacts(api, release),
            }
        )
    return {"source": result.source, "sha": result.sha, "visibility_note": result.visibility_note, "releases": releases}


def _published_artifacts(api, release) -> list[dict]:
    """Read each target's validation numbers from the release's hubquant.json."""
    if release.status not in ("published", "up to date"):
        return []
    from hubquant.publish import read_manifest

    manifest = read_manifest(api, release.repo_id) or {}
    return [
        {
            "target": entry["target"],
            "files": entry.get("files", []),
            "size_bytes": entry.get("size_bytes"),
            "bits_per_weight": entry.get("bits_per_weight"),
            "validation": entry.get("validation", {}),
        }
        for entry in manifest.get("artifacts", [])
    ]


if __name__ == "__main__":
    sys.exit(main())
