"""Fixtures for the test Hub contract tests: one server per module, tokens, API clients.

The client reads HF_HUB_DISABLE_XET, HF_HOME and HF_ENDPOINT when it is first
imported, so they are set here, before any test module imports it. HF_ENDPOINT
points at a loopback port that each module's server binds in turn, so a call
that omits `endpoint=` still reaches a test server and never the real Hub.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from urllib.parse import urlparse

os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
_HF_HOME = tempfile.mkdtemp(prefix="testhub-hf-home-")
os.environ["HF_HOME"] = _HF_HOME
os.environ.pop("HF_TOKEN", None)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if "huggingface_hub" not in sys.modules:
    os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{_free_port()}"

import huggingface_hub  # noqa: E402
import pytest  # noqa: E402
from huggingface_hub import HfApi, constants  # noqa: E402

from hubquant.testhub import HubServer  # noqa: E402

# Small pages and parts, so every module exercises pagination and multipart uploads.
PAGE_SIZE = 3
LFS_CHUNK_SIZE = 256 * 1024


def pytest_configure(config):
    # huggingface_hub 2.4.0 passes file objects as `data=` to httpx2 for LFS uploads,
    # which httpx2 deprecates; the warning is the client's, not the server's.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning",
    )


@pytest.fixture(scope="session", autouse=True)
def client_environment():
    """Fail early when the client was imported before this file could configure it."""
    if not constants.HF_HUB_DISABLE_XET:
        pytest.fail(
            "huggingface_hub was imported before HF_HUB_DISABLE_XET=1 was set, so it"
            " would upload through Xet, which the test Hub does not serve. Set the"
            " variable before importing huggingface_hub."
        )
    yield
    shutil.rmtree(_HF_HOME, ignore_errors=True)


def _session_port() -> int:
    """Return the port of a loopback HF_ENDPOINT, else 0 (any free port)."""
    endpoint = urlparse(constants.ENDPOINT)
    if endpoint.hostname == "127.0.0.1" and endpoint.port:
        return endpoint.port
    return 0


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> HubServer:
    """A running test Hub with the default accounts, shared by one module's tests."""
    state = tmp_path_factory.mktemp("hub-state")
    server = HubServer(
        state, port=_session_port(), page_size=PAGE_SIZE, lfs_chunk_size=LFS_CHUNK_SIZE
    )
    try:
        server.start()
    except OSError:
        # The HF_ENDPOINT port is taken by something else: any port works, because
        # every test passes the endpoint explicitly.
        server = HubServer(
            state, page_size=PAGE_SIZE, lfs_chunk_size=LFS_CHUNK_SIZE
        ).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def reset_faults(request):
    """Clear faults a test injected, so they cannot leak into the next test."""
    yield
    if "hub" in request.fixturenames:
        request.getfixturevalue("hub").clear_faults()


@pytest.fixture
def make_api(hub):
    """Return a factory of `HfApi` clients for a user (or anonymous with user=None)."""

    def build(user: str | None = "alice", *, write: bool = True) -> HfApi:
        token = hub.token_for(user, write=write) if user is not None else False
        return HfApi(endpoint=hub.url, token=token)

    return build


@pytest.fixture
def alice(make_api) -> HfApi:
    return make_api("alice")


_repo_counter = itertools.count()


@pytest.fixture
def repo_name(request) -> str:
    """A repo name unique in the session, derived from the test name."""
    stem = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:60]
    return f"{stem}-{next(_repo_counter)}"


@pytest.fixture
def repo_id(alice, repo_name) -> str:
    """A new model repo of alice, containing only the initial `.gitattributes`."""
    repo_id = f"alice/{repo_name}"
    alice.create_repo(repo_id)
    return repo_id


class RecordedSleeps:
    """Stand-in for `time` in the client's retry loops: records sleeps, never waits."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.calls.append(seconds)

    def __getattr__(self, name: str):
        return getattr(time, name)


@pytest.fixture
def fast_retries(monkeypatch) -> RecordedSleeps:
    """Make the client's retry back-off instant and record each wait it requested."""
    sleeps = RecordedSleeps()
    monkeypatch.setattr(huggingface_hub.utils._http, "time", sleeps)
    monkeypatch.setattr(huggingface_hub.file_download, "time", sleeps)
    return sleeps
