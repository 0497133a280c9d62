"""Fixtures shared by the whole suite.

Toolchains are real pinned environments built once per machine under
``HUBQUANT_HOME`` (CI sets it; locally it defaults to ~/.cache/hubquant).
"""

from __future__ import annotations

import os
import tempfile

# The client reads these at import time: plain LFS uploads, never Xet, no
# telemetry, a private cache, and no token of the person running the tests.
# Tests point every HfApi at a local server explicitly.
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="hubquant-tests-hf-home-"))
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HUGGING_FACE_HUB_TOKEN", None)

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
