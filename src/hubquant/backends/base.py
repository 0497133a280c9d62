"""What every backend provides, and the objects it hands to the publisher."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hubquant.calibration import CalibrationOptions, CalibrationText
from hubquant.progress import Reporter
from hubquant.reference import ReferenceOutputs
from hubquant.source import LocalSource
from hubquant.targets import Target
from hubquant.validation import ValidationReport


@dataclass
class Artifact:
    """A built and validated output: one target's files inside a release repo."""

    target: Target
    files: list[Path]
    size_bytes: int
    bits_per_weight: float
    validation: ValidationReport
    facts: dict = field(default_factory=dict)
    # Files are published at their path relative to ``root`` (for per-variant
    # folders such as ONNX's ``cpu-int4-.../``), or at the repo root when None.
    root: Path | None = None

    def path_in_repo(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix() if self.root else path.name

    @property
    def published_names(self) -> list[str]:
        return [self.path_in_repo(path) for path in self.files]


@dataclass
class Release:
    """One Hub repo's worth of artifacts from one backend."""

    backend: str
    repo_name: str
    targets: list[Target]
    artifacts: list[Artifact] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    facts: dict = field(default_factory=dict)
    # Files the repo contains beside the artifacts' own (a GGUF importance matrix).
    shared_files: list[Path] = field(default_factory=list)


@dataclass
class BuildContext:
    """Everything a backend needs for one job."""

    source: LocalSource
    reference: ReferenceOutputs | None
    work_dir: Path
    reporter: Reporter
    max_file_bytes: int
    force: bool = False
    on_artifact: Callable[[Release, Artifact], None] | None = None
    threads: int = 0
    validate: bool = True
    # Loads the job's calibration text on first use; None where the job has none.
    calibration: Callable[[], CalibrationText] | None = None
    calibration_options: CalibrationOptions = field(default_factory=CalibrationOptions)


class Backend(Protocol):
    name: str
    toolchain: str
    library_name: str

    def normalize_precision(self, precision: str) -> str: ...

    def supported_architectures(self) -> frozenset[str]: ...

    def rejection_reason(self, architecture: str, target: Target) -> str | None:
        """Return why ``target`` cannot be built here for a source of ``architecture``, or None.

        The job calls it before any download, after the architecture check.
        """
        ...

    def release_name(self, model_name: str, target: Target) -> str: ...

    def estimate_bytes(self, parameters: int, target: Target) -> int: ...

    def build_memory(self, parameters: int, target: Target) -> tuple[int, str]:
        """Return the minimum memory that building ``target`` takes, and the reason (for the error)."""
        ...

    def build(self, context: BuildContext, release: Release) -> None: ...

    def card_context(self, **facts) -> dict:
        """Build the template context from the release facts (see cards_context)."""
        ...

    def render_card(self, release: Release, context: dict) -> str: ...
