"""Fixtures for the OpenVINO tests: the toolchain and a Hub of their own.

The tests publish tiny models under the real Microsoft repo ids, so they use
their own local Hub: a second copy of a source in the shared Hub would change
its commit under the other backends' tests.
"""

from __future__ import annotations

import pytest
from huggingface_hub import HfApi

from hubquant import toolchains
from hubquant.testhub import HubServer


@pytest.fixture(scope="session")
def openvino_toolchain() -> toolchains.Toolchain:
    """optimum-intel, NNCF, OpenVINO and openvino-genai."""
    return toolchains.ensure("openvino")


@pytest.fixture(scope="session")
def ov_hub(tmp_path_factory):
    server = HubServer(tmp_path_factory.mktemp("openvino-hub")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ov_alice(ov_hub) -> HfApi:
    return HfApi(endpoint=ov_hub.url, token=ov_hub.token_for("alice"))
