"""Fixtures for the GGUF job tests: a local Hub with tiny Phi sources, and
releases built once per test run and checked by many tests."""

from __future__ import annotations

import pytest

from hubquant.tinymodels import publish_tiny_model

from gguf_helpers import run_cli


@pytest.fixture(scope="session")
def phi3_source(hub, alice, tiny_model) -> str:
    """microsoft/Phi-3-mini-4k-instruct on the local Hub; returns its commit sha."""
    return publish_tiny_model(
        alice, "phi-3-mini-4k-instruct", repo_id="microsoft/Phi-3-mini-4k-instruct", cache=tiny_model
    )


@pytest.fixture(scope="session")
def phi3_release(hub, phi3_source, tmp_path_factory):
    """The main job, run once through the CLI: Q8_0, Q4_K_M and F16, pushed."""
    workdir = tmp_path_factory.mktemp("phi3-release")
    result = run_cli(
        ["--log-level", "debug", "run", "microsoft/Phi-3-mini-4k-instruct", "--target", "gguf:Q8_0",
         "--target", "gguf:Q4_K_M", "--target", "gguf:F16", "--push"],
        hub=hub, cwd=workdir,
    )
    return result
