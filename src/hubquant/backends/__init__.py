"""Backend registry. A backend turns a downloaded source into validated artifacts."""

from __future__ import annotations

from hubquant.backends.base import Artifact, Backend, BuildContext, Release
from hubquant.errors import UsageError


def _registry() -> dict[str, Backend]:
    from hubquant.backends.gguf import GgufBackend
    from hubquant.backends.onnx import OnnxBackend
    from hubquant.backends.openvino import OpenvinoBackend
    from hubquant.backends.mlx import MlxBackend

    backends: list[Backend] = [GgufBackend()]
    backends.append(OnnxBackend())
    backends.append(MlxBackend())
    backends.append(OpenvinoBackend())
    return {backend.name: backend for backend in backends}


def get_backend(name: str) -> Backend:
    registry = _registry()
    try:
        return registry[name]
    except KeyError:
        known = ", ".join(sorted(registry))
        raise UsageError(f"unknown backend {name!r}; known backends: {known}") from None


def backend_names() -> list[str]:
    return sorted(_registry())


__all__ = ["Artifact", "Backend", "BuildContext", "Release", "backend_names", "get_backend"]
