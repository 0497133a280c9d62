"""Fixtures shared by the whole suite.

Toolchains are real pinned environments built once per machine under
``HUBQUANT_HOME`` (CI sets it; locally it defaults to ~/.cache/hubquant).
"""

from __future__ import annotations

import os

# The client reads these at import time: plain LFS uploads, never Xet, and no
# telemetry. Tests point every HfApi at a local server explicitly.
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402

from hubquant import toolchains  # noqa: E402


@pytest.fixture(scope="session")
def reference_toolchain() -> toolchains.Toolchain:
    """The transformers toolchain, used for reference logits and loading checks."""
    return toolchains.ensure("reference")


@pytest.fixture(scope="session")
def gguf_toolchain() -> toolchains.Toolchain:
    """The llama.cpp toolchain (converter, quantizer and runtime)."""
    return toolchains.ensure("gguf")
