"""Injected failures: a status code, a 429 with Retry-After, or a dropped connection."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass


@dataclass
class Fault:
    """A failure served to the next `remaining` requests that match."""

    pattern: re.Pattern[str]
    method: str | None
    status: int | None
    retry_after: int | None
    drop_connection: bool
    remaining: int

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return self.pattern.search(path) is not None


class FaultPlan:
    """Thread-safe list of faults; the first matching fault with requests left wins."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(
        self,
        path_regex: str,
        *,
        method: str | None,
        status: int | None,
        retry_after: int | None,
        drop_connection: bool,
        times: int,
    ) -> None:
        if times < 1:
            raise ValueError(f"times must be at least 1, got {times}.")
        if drop_connection and (status is not None or retry_after is not None):
            raise ValueError(
                "A dropped connection sends no response, so do not set status or"
                " retry_after."
            )
        if not drop_connection:
            if status is None:
                # A Retry-After alone means rate limiting.
                status = 429 if retry_after is not None else 500
            if not 400 <= status <= 599:
                raise ValueError(
                    f"An injected status must be 4xx or 5xx, got {status}."
                )
        fault = Fault(
            pattern=re.compile(path_regex),
            method=method.upper() if method else None,
            status=status,
            retry_after=retry_after,
            drop_connection=drop_connection,
            remaining=times,
        )
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, method: str, path: str) -> Fault | None:
        """Return the fault to serve for this request and count it, or None."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None
