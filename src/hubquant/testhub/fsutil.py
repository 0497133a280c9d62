"""Atomic file writes for the test Hub's state folder."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file, so no reader gets half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: object) -> None:
    """Write `data` as JSON to `path` atomically."""
    text = json.dumps(data, indent=1, sort_keys=True)
    write_bytes_atomic(path, text.encode("utf-8"))


def read_json(path: Path) -> object:
    return json.loads(path.read_text(encoding="utf-8"))
