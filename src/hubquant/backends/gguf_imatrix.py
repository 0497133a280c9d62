"""The importance matrix of a GGUF release: computed once per job, checked, published.

The matrix is computed from the unquantized conversion and the job's
calibration text in the GGUF toolchain (``hubquant_worker.gguf_imatrix``).
It is then read back from the file and checked for coverage before any type
uses it. A matrix with fewer chunks than the minimum, or without data for a
weight the quantizer will use it on, is rejected rather than published as if
complete.
"""

from __future__ import annotations

from pathlib import Path

from hubquant import toolchains
from hubquant.calibration import CalibrationOptions
from hubquant.errors import SourceError, UsageError


def matrix_weights(tensors: list[dict]) -> list[str]:
    """Return the weights an importance matrix must cover: the 2-D matrices of every block."""
    return sorted(
        tensor["name"]
        for tensor in tensors
        if tensor["name"].startswith("blk.") and tensor["name"].endswith(".weight") and len(tensor["shape"]) >= 2
    )


def check_coverage(summary: dict, tensors: list[dict], options: CalibrationOptions) -> None:
    """Raise SourceError unless the matrix covers enough chunks and every block weight."""
    chunks = summary.get("chunk_count") or 0
    chunk_size = summary.get("chunk_size") or 0
    if chunks < options.min_chunks:
        raise SourceError(
            f"the importance matrix covers {chunks} chunks of {chunk_size} tokens, below the minimum "
            f"of {options.min_chunks}; give more calibration text (--calibration or "
            "--calibration-dataset), a smaller --imatrix-chunk-size, or a lower --imatrix-min-chunks"
        )
    entries = summary.get("entries") or {}
    missing = [name for name in matrix_weights(tensors) if entries.get(name, 0) <= 0]
    if missing:
        listed = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise SourceError(
            f"the importance matrix has no data for {len(missing)} weights ({listed}); "
            "it is incomplete and was not used"
        )
    rows = min((entries[name] for name in matrix_weights(tensors)), default=0)
    if rows < chunks * chunk_size:
        raise SourceError(
            f"the importance matrix saw {rows:.0f} token rows for some weights, fewer than its "
            f"{chunks} chunks of {chunk_size} tokens; it is incomplete and was not used"
        )


def compute(context, toolchain, intermediate: dict, work: Path, model_name: str, on_event=None) -> dict:
    """Compute, read back and check the importance matrix; return its file and facts."""
    if context.calibration is None:
        raise UsageError("this run has no calibration text, which importance-matrix types need")
    calibration = context.calibration()
    options = context.calibration_options
    text_file = calibration.write(work / "calibration.txt")
    output = work / f"{model_name}.imatrix.gguf"
    computed = toolchains.run_step(
        toolchain,
        "gguf",
        {
            "op": "imatrix",
            "model": str(intermediate["path"]),
            "text_file": str(text_file),
            "dataset_name": calibration.name,
            "output": str(output),
            "chunk_size": options.chunk_size,
            "max_chunks": options.max_chunks,
            "threads": context.threads,
        },
        on_event=on_event,
    ).data
    text_file.unlink(missing_ok=True)
    summary = toolchains.run_step(toolchain, "gguf", {"op": "read_imatrix", "file": str(output)}).data
    try:
        check_coverage(summary, intermediate["tensors"], options)
    except SourceError:
        output.unlink(missing_ok=True)
        raise
    return {
        "path": output,
        "facts": {
            "file": output.name,
            "method": "importance matrix (llama-imatrix's method, run in llama.cpp)",
            "chunks": summary["chunk_count"],
            "chunk_size": summary["chunk_size"],
            "tokens": computed["tokens"],
            "tokens_used": computed["tokens_used"],
            "entries": len(summary["entries"]),
            "min_chunks": options.min_chunks,
            "calibration": calibration.card_facts(),
        },
    }
