"""Fixtures for the bot tests: a local Hub of their own, Redis, config files and processes.

The bot tests use their own test Hub (not the suite-wide `hub`), because the
webhooks they register would otherwise see the repos other test folders create.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi

from hubquant.testhub import HubServer

SECRET = "test-webhook-secret"
OPERATOR_TOKEN = "test-operator-token"
REDIS_URL_ENV = "HUBQUANT_TEST_REDIS_URL"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll `condition` until it returns a true value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="session")
def bot_hub(tmp_path_factory):
    server = HubServer(tmp_path_factory.mktemp("bot-hub")).start()
    server.webhooks.retry_delays = (0.2, 0.5, 1.0)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def bot_alice(bot_hub) -> HfApi:
    return HfApi(endpoint=bot_hub.url, token=bot_hub.token_for("alice"))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real Redis server: the one CI started ($HUBQUANT_TEST_REDIS_URL) or one started here."""
    import redis

    url = os.environ.get(REDIS_URL_ENV)
    process = None
    if not url:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed; install Debian's redis-server package (.ci/run does)")
        port = free_port()
        folder = tmp_path_factory.mktemp("redis")
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        wait_until(lambda: _pings(client), 15, what="redis-server to accept connections")
    yield url
    if process is not None:
        process.terminate()
        process.wait(timeout=10)


def _pings(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture
def redis_namespace(redis_url, request) -> str:
    """A key prefix of this test's own, with its keys removed afterwards."""
    import redis

    namespace = f"hubquant-test-{request.node.name}-{os.getpid()}"
    yield namespace
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{namespace}*"):
        client.delete(key)


def default_rule(**changes) -> dict:
    rule = {
        "name": "microsoft-phi",
        "owner": "microsoft",
        "repo_name": ["Phi-*", "phi-*"],
        "targets": ["gguf:Q8_0"],
        "namespace": "hubquant-org",
    }
    rule.update(changes)
    return rule


def write_config(path: Path, *, hub_url: str, queue_url: str, rules: list[dict] | None = None,
                 queue: dict | None = None, worker: dict | None = None, watch: dict | None = None) -> Path:
    data = {
        "hub": {"endpoint": hub_url},
        "queue": {"url": queue_url, **(queue or {})},
        "worker": {"backoff_seconds": 1, "max_backoff_seconds": 5, "threads": 2, **(worker or {})},
        "rules": rules or [default_rule()],
    }
    if watch:
        data["watch"] = watch
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def bot_environment(hub: HubServer, user: str = "bob") -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "HF_TOKEN": hub.token_for(user),
        "HUBQUANT_WEBHOOK_SECRET": SECRET,
        "HUBQUANT_BOT_OPERATOR_TOKEN": OPERATOR_TOKEN,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONUNBUFFERED": "1",
    })
    return env


class Processes:
    """Bot processes started by a test; each is ended by its own pid at teardown."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = self.folder / f"{name}.log"
        command = [sys.executable, "-m", "hubquant", "--log-level", "info", *args]
        process = subprocess.Popen(command, env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                   cwd=self.folder)
        self.started.append((process, log))
        return process

    def log_of(self, process: subprocess.Popen) -> str:
        for started, log in self.started:
            if started is process:
                return log.read_text()
        raise KeyError(process.pid)

    def stop_all(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                process.terminate()
        for process, _ in self.started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def processes(bot_hub, tmp_path):
    started = Processes(tmp_path, bot_environment(bot_hub))
    yield started
    started.stop_all()


def start_receiver(processes: Processes, config: Path) -> str:
    """Start `hubquant bot serve` and return its URL once /healthz responds."""
    import httpx

    port = free_port()
    process = processes.start(f"serve-{port}", "bot", "serve", "--config", str(config), "--port", str(port))
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if process.poll() is not None:
            pytest.fail(f"bot serve exited with {process.returncode}:\n{processes.log_of(process)}")
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, 60, what="the receiver's /healthz")
    return url
