"""Fixtures of the Space tests: tiny sources on the local Hub, the app, browsers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from urllib.parse import urlparse

import pytest

from space_helpers import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    GATED_SOURCE,
    LARGE_SOURCE,
    MAX_SOURCE_GB,
    OVERFLOW_SOURCE,
    PRIVATE_SOURCE,
    REPO_ROOT,
    free_port,
    plant_f16_overflow,
    screenshot,
    wait_for_http,
)

@pytest.fixture(scope="session")
def space_sources(hub, alice, tiny_model, tmp_path_factory) -> dict[str, str]:
    """The Space tests' sources on the local Hub; returns repo id -> commit sha."""
    root = tmp_path_factory.mktemp("space-sources")
    shas = {}
    for repo_id, options, private, patch in (
        (PRIVATE_SOURCE, {}, True, None),
        (OVERFLOW_SOURCE, {}, False, plant_f16_overflow),
        (LARGE_SOURCE, {"hidden_size": 512, "intermediate_size": 1536}, False, None),
    ):
        folder = tiny_model("phi-3-mini-4k-instruct", **options)
        if patch is not None:
            folder = shutil.copytree(folder, root / repo_id.split("/")[1])
            patch(folder)
        alice.create_repo(repo_id, private=private, exist_ok=True)
        shas[repo_id] = alice.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="Add tiny test source").oid
    alice.create_repo(GATED_SOURCE, exist_ok=True)
    alice.update_repo_settings(GATED_SOURCE, gated="manual")
    shas[GATED_SOURCE] = alice.upload_folder(repo_id=GATED_SOURCE, folder_path=tiny_model("phi-3-mini-4k-instruct"),
                                             commit_message="Add tiny gated test source").oid
    hub.grant_gated_access(GATED_SOURCE, "bob")
    return shas


@pytest.fixture(scope="module")
def space_app(hub, space_sources, tmp_path_factory):
    """The Space started as on a Hub Space, signed in through the local Hub's OAuth."""
    from importlib import util

    spec = util.spec_from_file_location("space_app", REPO_ROOT / "space" / "app.py")
    entry = util.module_from_spec(spec)
    spec.loader.exec_module(entry)

    port = free_port()
    client = hub.register_oauth_app("hubquant test Space", [f"http://127.0.0.1:{port}/login/callback"], entry.OAUTH_SCOPES)
    state = tmp_path_factory.mktemp("space-state")
    env = {name: value for name, value in os.environ.items() if not name.startswith(("HF_TOKEN", "OAUTH_", "SPACE_"))}
    env.update(
        {
            "SYSTEM": "spaces",
            "SPACE_ID": "hubquant/test-space",
            "OPENID_PROVIDER_URL": hub.url,
            "OAUTH_CLIENT_ID": client.client_id,
            "OAUTH_CLIENT_SECRET": client.client_secret,
            "OAUTH_SCOPES": client.scope_string,
            "HF_ENDPOINT": hub.url,
            # The Space's own token: carol's. No job may ever use it.
            "HF_TOKEN": hub.token_for("carol"),
            "HUBQUANT_SPACE_STATE_DIR": str(state),
            "HUBQUANT_SPACE_MAX_SOURCE_GB": MAX_SOURCE_GB,
            "HUBQUANT_SPACE_MAX_RUNNING_JOBS": "2",
            "HUBQUANT_SPACE_MAX_JOBS_PER_USER": "1",
            "HUBQUANT_SPACE_JOB_TIMEOUT_MINUTES": "15",
        }
    )
    log_path = state / "space.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "space" / "app.py"), "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=state,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url, process, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "space.log").write_text(log_path.read_text())


@pytest.fixture(scope="module")
def playwright_driver():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Keeps each phase's report on the test item, so fixtures can tell a failure.
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def browser(playwright_driver, request):
    """Open a fresh Chromium profile per call; requests off loopback are aborted.

    When the test fails, every page still open is saved as a screenshot.
    """
    contexts = []

    def open_browser():
        profile = tempfile.mkdtemp(prefix="hubquant-chromium-")
        context = playwright_driver.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
        )
        # gradio's page requests web fonts and the Space's info from hosts on the
        # internet. Nothing may leave this machine, so those requests fail at once.
        context.route("**/*", _loopback_only)
        context.set_default_timeout(30_000)
        contexts.append(context)
        return context

    yield open_browser
    report = getattr(request.node, "report_call", None)
    for number, context in enumerate(contexts):
        if report is not None and report.failed:
            for page_number, page in enumerate(context.pages):
                screenshot(page, f"failed-{request.node.name}-{number}-{page_number}")
        context.close()


def _loopback_only(route) -> None:
    if urlparse(route.request.url).hostname in ("127.0.0.1", "localhost"):
        route.continue_()
    else:
        route.abort()
