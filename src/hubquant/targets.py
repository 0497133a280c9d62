"""Targets: ``BACKEND:PRECISION`` strings such as ``gguf:Q4_K_M`` or ``onnx:int4``."""

from __future__ import annotations

from dataclasses import dataclass

from hubquant.errors import UsageError


@dataclass(frozen=True, order=True)
class Target:
    """One requested output: a backend name and a precision that backend knows."""

    backend: str
    precision: str

    def __str__(self) -> str:
        return f"{self.backend}:{self.precision}"


def parse_target(text: str) -> Target:
    """Parse ``BACKEND:PRECISION`` and check both parts against the backend registry."""
    from hubquant.backends import get_backend

    backend_name, separator, precision = text.strip().partition(":")
    if not separator or not backend_name or not precision:
        raise UsageError(
            f"invalid target {text!r}: write BACKEND:PRECISION, for example gguf:Q4_K_M"
        )
    backend = get_backend(backend_name.lower())
    return Target(backend.name, backend.normalize_precision(precision))


def parse_targets(texts: list[str]) -> list[Target]:
    """Parse targets, keeping the first occurrence of each."""
    targets: list[Target] = []
    for text in texts:
        target = parse_target(text)
        if target not in targets:
            targets.append(target)
    return targets
