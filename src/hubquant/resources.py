"""Disk and memory checks made before any heavy work."""

from __future__ import annotations

import shutil
from pathlib import Path

from hubquant.errors import ResourceError
from hubquant.targets import Target


def available_memory() -> int | None:
    """Return MemAvailable from /proc/meminfo in bytes, or None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


# Memory a build step takes beside the model's weights (interpreter, libraries,
# activations), in bytes. The backends' estimates stay below the peaks measured
# on the 420M-parameter model of benchmarks/backend_overhead.py: ONNX builder
# 5.16 GB, optimum-cli int4 export 2.05 GB, mlx_lm convert 0.97 GB.
MEMORY_BASE = 300_000_000


def check_memory(parameters: int | None, targets: list[Target], available: int | None) -> None:
    """Raise ResourceError for a target whose build cannot fit in ``available`` bytes.

    The estimates are lower bounds (the weights as the tool loads them, plus
    MEMORY_BASE where measured peaks leave room), so the error means the build
    would fail, not that it is tight.
    """
    from hubquant.backends import get_backend
    from hubquant.cards import human_size

    if not parameters or available is None:
        return
    for target in targets:
        needed, reason = get_backend(target.backend).build_memory(parameters, target)
        if needed > available:
            raise ResourceError(
                f"not enough memory for {target}: {reason}, which takes at least {human_size(needed)}, "
                f"and {human_size(available)} are free; free memory, run on a machine with more, "
                "or choose gguf: targets, which convert memory-mapped"
            )


def estimate_job_bytes(source_bytes: int, parameters: int | None, targets: list[Target]) -> int:
    """Estimate peak disk use: source + one intermediate + the largest output.

    Validated files are uploaded and removed one by one, so only one output is on
    disk at a time. The intermediate keeps the source precision, so its size is
    about the source's weight size.
    """
    from hubquant.backends import get_backend

    weights = source_bytes or (parameters or 0) * 2
    largest = 0
    for target in targets:
        backend = get_backend(target.backend)
        largest = max(largest, backend.estimate_bytes(parameters or weights // 2, target))
    return source_bytes + weights + largest


def check_disk(work_dir: Path, *, source_bytes: int, parameters: int | None, targets: list[Target]) -> int:
    needed = estimate_job_bytes(source_bytes, parameters, targets)
    free = shutil.disk_usage(work_dir).free
    if needed > free:
        raise ResourceError(
            f"not enough free disk in {work_dir}: the job needs about "
            f"{needed / 1e9:.1f} GB and {free / 1e9:.1f} GB are free; free space or "
            "pass --work-dir on a larger disk"
        )
    return needed
