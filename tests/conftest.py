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


def _free_loopback_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# A loopback endpoint, set before the client is imported: a call that forgets
# `endpoint=` reaches a test server port, never the real Hub, and the test Hub
# contract tests bind their server to this port.
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{_free_loopback_port()}"
os.environ.pop("HUGGING_FACE_HUB_TOKEN", None)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from huggingface_hub import HfApi  # noqa: E402

from hubquant import toolchains  # noqa: E402
from hubquant.testhub import HubServer  # noqa: E402
from hubquant.tinymodels import BuildCache  # noqa: E402


@pytest.fixture(scope="session")
def reference_toolchain() -> toolchains.Toolchain:
    """The transformers toolchain, used for reference logits and loading checks."""
    return toolchains.ensure("reference")


@pytest.fixture(scope="session")
def gguf_toolchain() -> toolchains.Toolchain:
    """The llama.cpp toolchain (converter, quantizer and runtime)."""
    return toolchains.ensure("gguf")


# A local Hub and tiny models, shared by the job tests of every backend.
@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    server = HubServer(tmp_path_factory.mktemp("hub")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def alice(hub) -> HfApi:
    return HfApi(endpoint=hub.url, token=hub.token_for("alice"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> BuildCache:
    """Every tiny model build of the run, each built once per (name, options).

    Call it as ``tiny_model(name, **options)`` for the folder, or pass it to
    ``publish_tiny_model(..., cache=tiny_model)``. Copy a folder before
    changing its files.
    """
    return BuildCache(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def hub_release(hub, alice, tmp_path_factory, tiny_model):
    """Publish the tiny Phi-3 to the local Hub as ``source``, run the main job
    on ``targets`` with --push, and return a fresh download of the release."""
    from huggingface_hub import snapshot_download

    from hubquant.pipeline import JobRequest, run_job
    from hubquant.tinymodels import publish_tiny_model

    def release(source: str, targets: list[str]) -> Path:
        publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id=source, cache=tiny_model)
        token = hub.token_for("alice")
        request = JobRequest(source=source, targets=targets, endpoint=hub.url, token=token, push=True,
                             work_dir=tmp_path_factory.mktemp("work"))  # fmt: skip
        result = run_job(request)
        assert result.ok, result.releases[0].failed
        assert result.releases[0].status == "published"
        repo_id = result.releases[0].repo_id
        folder = tmp_path_factory.mktemp("download") / repo_id.split("/")[1]
        return Path(snapshot_download(repo_id, endpoint=hub.url, token=token, local_dir=folder))

    return release
