"""Progress reporting shared by the CLI, the Space and the bot.

The pipeline reports step changes per target and byte/step progress through a
Reporter. The CLI prints plain lines (and a progress bar on a TTY); the Space and
the bot record the same events for their status tables.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass, field

log = logging.getLogger("hubquant")

QUEUED = "queued"
DOWNLOADING = "downloading"
CONVERTING = "converting"
CALIBRATING = "calibrating"  # computing an importance matrix from calibration text
QUANTIZING = "quantizing"
VALIDATING = "validating"
PUBLISHING = "publishing"
DONE = "done"
FAILED = "failed"


@dataclass
class Reporter:
    """Receives step and progress events; subclasses render them."""

    states: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def step(self, key: str, state: str, reason: str = "") -> None:
        with self._lock:
            self.states[key] = state
            if reason:
                self.reasons[key] = reason
        self.on_step(key, state, reason)

    def progress(self, label: str, done: float, total: float | None) -> None:
        self.on_progress(label, done, total)

    def message(self, text: str) -> None:
        self.on_message(text)

    # Hooks for subclasses.
    def on_step(self, key: str, state: str, reason: str) -> None:
        detail = f" ({reason})" if reason else ""
        log.info("%s: %s%s", key, state, detail)

    def on_progress(self, label: str, done: float, total: float | None) -> None:
        pass

    def on_message(self, text: str) -> None:
        log.info("%s", text)


class ConsoleReporter(Reporter):
    """Plain lines for logs and pipes; a one-line bar on a TTY unless quiet."""

    def __init__(self, *, quiet: bool = False, stream=None) -> None:
        super().__init__()
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self._last_label = ""

    @property
    def _interactive(self) -> bool:
        return not self.quiet and getattr(self.stream, "isatty", lambda: False)()

    def on_step(self, key: str, state: str, reason: str) -> None:
        self._end_bar()
        if self.quiet and state not in (DONE, FAILED):
            return
        detail = f": {reason}" if reason else ""
        print(f"[{state}] {key}{detail}", file=self.stream, flush=True)

    def on_progress(self, label: str, done: float, total: float | None) -> None:
        if not self._interactive or not total:
            return
        width = 30
        filled = int(width * min(done / total, 1.0))
        bar = "#" * filled + "-" * (width - filled)
        print(f"\r{label} [{bar}] {100 * done / total:5.1f}%", end="", file=self.stream)
        self._last_label = label
        if done >= total:
            self._end_bar()

    def on_message(self, text: str) -> None:
        self._end_bar()
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def _end_bar(self) -> None:
        if self._last_label:
            print(file=self.stream)
            self._last_label = ""
