"""Settings of the Space, read from environment variables."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hubquant.errors import UsageError

DEFAULT_ENDPOINT = "https://huggingface.co"
# Mount point of a Space's persistent storage; job records go there by default.
PERSISTENT_STORAGE = Path("/data")


@dataclass(frozen=True)
class SpaceConfig:
    """Queue limits and folders of the Space.

    Each field has an environment variable, listed in `ENVIRONMENT`.
    """

    endpoint: str = DEFAULT_ENDPOINT
    # Jobs that run at the same time; the others wait in the queue.
    max_running_jobs: int = 1
    # Queued or running jobs of one user.
    max_jobs_per_user: int = 1
    # Queued jobs of all users together, running ones not counted.
    max_queued_jobs: int = 10
    # Sum of the source repo's file sizes at the pinned commit.
    max_source_bytes: int = 20 * 1000**3
    job_timeout_s: float = 2 * 60 * 60
    # Job records (without tokens) kept across restarts; /data/hubquant-space
    # by default when the Space has persistent storage.
    state_dir: Path = Path(tempfile.gettempdir()) / "hubquant-space"
    # Parent of each job's temporary folder (default: the system temp folder).
    work_dir: Path | None = None
    # CPU threads for quantizing and validation (0: all cores).
    threads: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SpaceConfig:
        """Read the settings; an invalid value raises UsageError naming its variable."""
        env = os.environ if environ is None else environ
        values: dict = {}
        for name, (field_name, kind) in ENVIRONMENT.items():
            text = env.get(name)
            if text is None or text.strip() == "":
                continue
            values[field_name] = _parse(name, text.strip(), kind)
        if "endpoint" in values:
            values["endpoint"] = values["endpoint"].rstrip("/")
        if "state_dir" not in values and PERSISTENT_STORAGE.is_dir():
            values["state_dir"] = PERSISTENT_STORAGE / "hubquant-space"
        return cls(**values)


# Variable name -> (field, unit). GB and minutes are converted to bytes and seconds.
ENVIRONMENT = {
    "HF_ENDPOINT": ("endpoint", "url"),
    "HUBQUANT_SPACE_MAX_RUNNING_JOBS": ("max_running_jobs", "count"),
    "HUBQUANT_SPACE_MAX_JOBS_PER_USER": ("max_jobs_per_user", "count"),
    "HUBQUANT_SPACE_MAX_QUEUED_JOBS": ("max_queued_jobs", "count"),
    "HUBQUANT_SPACE_MAX_SOURCE_GB": ("max_source_bytes", "gigabytes"),
    "HUBQUANT_SPACE_JOB_TIMEOUT_MINUTES": ("job_timeout_s", "minutes"),
    "HUBQUANT_SPACE_STATE_DIR": ("state_dir", "path"),
    "HUBQUANT_SPACE_WORK_DIR": ("work_dir", "path"),
    "HUBQUANT_SPACE_THREADS": ("threads", "threads"),
}


def _parse(name: str, text: str, kind: str):
    if kind == "url":
        if not text.startswith(("http://", "https://")):
            raise UsageError(f"invalid {name} {text!r}: give an http(s) URL such as {DEFAULT_ENDPOINT}")
        return text
    if kind == "path":
        return Path(text).expanduser()
    try:
        number = float(text) if kind in ("gigabytes", "minutes") else int(text)
    except ValueError:
        raise UsageError(f"invalid {name} {text!r}: expected a number") from None
    if kind == "threads":
        if number < 0:
            raise UsageError(f"invalid {name} {text!r}: expected 0 (all cores) or a positive count")
        return number
    if number <= 0:
        raise UsageError(f"invalid {name} {text!r}: expected a positive number")
    if kind == "gigabytes":
        return int(number * 1000**3)
    if kind == "minutes":
        return number * 60
    return number
