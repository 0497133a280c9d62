"""Backend toolchains: pinned virtual environments driven through subprocesses.

One environment cannot hold every backend (mlx-lm needs transformers>=5.7 while
optimum-intel needs <5.6), so each backend gets its own, created from the
requirement files in ``requirements/``.
"""

from __future__ import annotations

from hubquant.errors import UsageError
from hubquant.toolchains.runner import StepResult, run_step
from hubquant.toolchains import openvino_setup
from hubquant.toolchains.setup import (
    Toolchain,
    ToolchainSpec,
    ensure_toolchain,
    find_toolchain,
    setup_llama_cpp,
)

TOOLCHAINS: dict[str, ToolchainSpec] = {
    "reference": ToolchainSpec("reference", "reference.txt"),
    "onnx": ToolchainSpec("onnx", "onnx.txt"),
    "mlx": ToolchainSpec("mlx", "mlx.txt"),
    "gguf": ToolchainSpec(
        "gguf",
        "gguf.txt",
        extra_setup=setup_llama_cpp,
        settings={"llama-cpp-python": "0.3.36", "build": "cpu-portable"},
    ),
    "openvino": ToolchainSpec(
        "openvino",
        "openvino.txt",
        extra_setup=openvino_setup.setup_optimum_intel,
        settings=openvino_setup.SETTINGS,
    ),
}


def get_spec(name: str) -> ToolchainSpec:
    try:
        return TOOLCHAINS[name]
    except KeyError:
        known = ", ".join(sorted(TOOLCHAINS))
        raise UsageError(f"unknown toolchain {name!r}; known toolchains: {known}") from None


def ensure(name: str) -> Toolchain:
    """Return the named toolchain, installing it on first use."""
    return ensure_toolchain(get_spec(name))


__all__ = [
    "TOOLCHAINS",
    "StepResult",
    "Toolchain",
    "ToolchainSpec",
    "ensure",
    "find_toolchain",
    "get_spec",
    "run_step",
]
