"""Fixtures for the MLX tests: the toolchain, tiny Phi sources on the local Hub,
and releases built once per test run and checked by many tests."""

from __future__ import annotations

import shutil

import pytest
from huggingface_hub.errors import RepositoryNotFoundError

from hubquant import toolchains
from hubquant.pipeline import JobRequest, run_job
from hubquant.tinymodels import publish_tiny_model

from mlx_helpers import move_rope_keys, run_cli

PHI3 = "microsoft/Phi-3-mini-4k-instruct"
# A Phi-4-mini whose config.json has its RoPE keys only under rope_parameters,
# as transformers 5 saves it.
PHI4_MINI = "microsoft/Phi-4-mini-instruct-rope-parameters"


@pytest.fixture(scope="session")
def mlx_toolchain() -> toolchains.Toolchain:
    return toolchains.ensure("mlx")


@pytest.fixture(scope="session")
def phi3_mlx_source(hub, alice, tiny_model) -> str:
    """PHI3 on the local Hub; returns its commit sha.

    Another backend's tests may have published the same tiny model under this
    id in this session; its main commit is used then, so their releases stay
    up to date.
    """
    try:
        return alice.model_info(PHI3).sha
    except RepositoryNotFoundError:
        return publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id=PHI3, cache=tiny_model)


@pytest.fixture(scope="session")
def phi4_mini_mlx_source(hub, alice, tiny_model, tmp_path_factory) -> str:
    folder = shutil.copytree(tiny_model("phi-4-mini-instruct"), tmp_path_factory.mktemp("phi4-mini") / "model")
    move_rope_keys(folder)
    alice.create_repo(PHI4_MINI, exist_ok=True)
    return alice.upload_folder(repo_id=PHI4_MINI, folder_path=folder, commit_message="Tiny Phi-4-mini, rope_parameters").oid


@pytest.fixture(scope="session")
def phi3_mlx_release(hub, phi3_mlx_source, tmp_path_factory):
    """The main job through the CLI: mlx:4bit and mlx:bf16 of PHI3, pushed."""
    return run_cli(
        ["--log-level", "debug", "run", PHI3, "--target", "mlx:4bit", "--target", "mlx:bf16", "--push"],
        hub=hub,
        cwd=tmp_path_factory.mktemp("phi3-mlx-release"),
    )


@pytest.fixture(scope="session")
def phi4_mini_mlx_release(hub, phi4_mini_mlx_source):
    """The main job in process: mlx:bf16 of PHI4_MINI, pushed.

    bf16 is compared with transformers directly, so it shows whether mlx-lm
    applied the source's RoPE; mlx:4bit of the same code path is PHI3's.
    """
    request = JobRequest(source=PHI4_MINI, targets=["mlx:bf16"], endpoint=hub.url, token=hub.token_for("alice"), push=True)
    return run_job(request)
