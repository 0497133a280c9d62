"""Fixtures for the ONNX tests: the toolchain, tiny Phi sources on the local Hub,
and releases built once per test run and checked by many tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError

from hubquant import toolchains
from hubquant.tinymodels import publish_tiny_model

from onnx_helpers import PHI3, RELEASE_REPO, RELEASE_TARGETS, run_cli



@pytest.fixture(scope="session")
def onnx_toolchain() -> toolchains.Toolchain:
    return toolchains.ensure("onnx")


@pytest.fixture(scope="session")
def phi3_onnx_source(hub, alice, tiny_model) -> str:
    """PHI3 on the local Hub; returns its commit sha.

    Another backend's tests may have published the same tiny model under this
    id in this session. Its main commit is used then, so their releases stay
    up to date.
    """
    try:
        return alice.model_info(PHI3).sha
    except RepositoryNotFoundError:
        return publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id=PHI3, cache=tiny_model)


@pytest.fixture(scope="session")
def phi3_onnx_release(hub, phi3_onnx_source, tmp_path_factory):
    """The main job through the CLI: int4 and fp32 for the CPU and fp16 for CUDA, pushed."""
    arguments = ["--log-level", "debug", "run", PHI3]
    for target in RELEASE_TARGETS:
        arguments += ["--target", target]
    return run_cli([*arguments, "--push"], hub=hub, cwd=tmp_path_factory.mktemp("phi3-onnx-release"))


@pytest.fixture(scope="session")
def phi3_onnx_download(phi3_onnx_release, hub, tmp_path_factory) -> Path:
    """A fresh snapshot_download of the release."""
    assert phi3_onnx_release.returncode == 0, phi3_onnx_release.stderr[-3000:]
    return Path(snapshot_download(RELEASE_REPO, endpoint=hub.url, token=hub.token_for("alice"), local_dir=tmp_path_factory.mktemp("dl")))
