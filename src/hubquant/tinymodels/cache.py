"""Build each tiny model once and hand out the same folder after that."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from .build import build_tiny_model


class BuildCache:
    """Tiny model builds under ``root``, one per (name, build options).

    Builds are byte-identical for the same arguments, so a test run needs
    each one only once. Callers must not change the returned folders, and a
    test that edits files copies one first. Safe to share between threads.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.builds = 0
        self._folders: dict[str, Path] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str, **build_options) -> Path:
        return self.folder(name, **build_options)

    def folder(self, name: str, **build_options) -> Path:
        """Return the folder of ``build_tiny_model(name, **build_options)``, building it on first use."""
        key = json.dumps([name, build_options], sort_keys=True)
        with self._lock:
            if key not in self._folders:
                # The folder's own name is the model's, as a user's local folder would be.
                folder = self.root / str(len(self._folders)) / name
                self._folders[key] = build_tiny_model(name, folder, **build_options)
                self.builds += 1
            return self._folders[key]
