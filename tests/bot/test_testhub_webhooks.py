"""The local test Hub delivers webhooks as the Hub does."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from conftest import wait_until


class Recorder:
    """An HTTP endpoint that records deliveries and fails the first `failures` of them."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.received: list[tuple[dict, dict]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (name fixed by BaseHTTPRequestHandler)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                recorder.received.append((dict(self.headers), json.loads(body)))
                failed = recorder.failures > 0
                recorder.failures -= 1
                self.send_response(500 if failed else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def payloads(self, repo: str) -> list[dict]:
        return [payload for _, payload in self.received if payload["repo"]["name"] == repo]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder():
    endpoint = Recorder()
    yield endpoint
    endpoint.close()


def _upload(api: HfApi, repo_id: str, name: str, content: bytes) -> str:
    info = api.upload_file(path_or_fileobj=content, path_in_repo=name, repo_id=repo_id)
    return info.oid


def test_settings_api_with_real_client(bot_hub, bot_alice, recorder):
    hook = bot_alice.create_webhook(url=recorder.url, watched=[{"type": "org", "name": "microsoft"}],
                                    domains=["repo"], secret="s3cret")
    try:
        listed = [item.id for item in bot_alice.list_webhooks()]
        assert hook.id in listed
        fetched = bot_alice.get_webhook(hook.id)
        assert fetched.url == recorder.url
        assert fetched.secret == "s3cret"
        assert fetched.watched[0].name == "microsoft"
        assert bot_alice.disable_webhook(hook.id).disabled is True
        assert bot_alice.enable_webhook(hook.id).disabled is False
        bob = HfApi(endpoint=bot_hub.url, token=bot_hub.token_for("bob"))
        assert hook.id not in [item.id for item in bob.list_webhooks()]
        with pytest.raises(HfHubHTTPError):
            bob.get_webhook(hook.id)
        with pytest.raises(HfHubHTTPError):
            bot_alice.create_webhook(url="ftp://example.invalid", watched=[{"type": "org", "name": "microsoft"}])
    finally:
        bot_alice.delete_webhook(hook.id)
    assert hook.id not in [item.id for item in bot_alice.list_webhooks()]


def test_create_and_push_payloads(bot_hub, bot_alice, recorder):
    hook = bot_hub.webhooks.add("alice", recorder.url, [{"type": "org", "name": "microsoft"}], secret="s3cret")
    try:
        repo_id = "microsoft/Phi-webhook-payloads"
        bot_alice.create_repo(repo_id)
        first = bot_alice.list_repo_commits(repo_id)[0].commit_id
        sha = _upload(bot_alice, repo_id, "config.json", b"{}")
        assert bot_hub.webhooks.wait_idle()
        payloads = recorder.payloads(repo_id)
        headers = [headers for headers, payload in recorder.received if payload["repo"]["name"] == repo_id]
    finally:
        _remove(bot_hub, hook.id)

    assert [payload["event"] for payload in payloads] == [
        {"action": "create", "scope": "repo"},
        {"action": "update", "scope": "repo.content"},
    ]
    created, pushed = payloads
    assert created["webhook"] == {"id": hook.id, "version": 3}
    assert created["repo"]["type"] == "model"
    assert created["repo"]["private"] is False
    assert created["repo"]["headSha"] == first
    assert created["repo"]["url"]["api"] == f"{bot_hub.url}/api/models/{repo_id}"
    assert "updatedRefs" not in created
    assert pushed["repo"]["headSha"] == sha
    assert pushed["updatedRefs"] == [{"ref": "refs/heads/main", "oldSha": first, "newSha": sha}]
    assert all(item["X-Webhook-Secret"] == "s3cret" for item in headers)


def test_branch_and_tag_refs(bot_hub, bot_alice, recorder):
    hook = bot_hub.webhooks.add("alice", recorder.url, [{"type": "model", "name": "alice/refs-events"}])
    try:
        repo_id = "alice/refs-events"
        bot_alice.create_repo(repo_id)
        head = bot_alice.list_repo_commits(repo_id)[0].commit_id
        bot_alice.create_branch(repo_id, branch="dev")
        bot_alice.create_tag(repo_id, tag="v1")
        bot_alice.delete_branch(repo_id, branch="dev")
        assert bot_hub.webhooks.wait_idle()
        refs = [payload.get("updatedRefs") for payload in recorder.payloads(repo_id)]
    finally:
        _remove(bot_hub, hook.id)
    assert refs == [
        None,
        [{"ref": "refs/heads/dev", "oldSha": None, "newSha": head}],
        [{"ref": "refs/tags/v1", "oldSha": None, "newSha": head}],
        [{"ref": "refs/heads/dev", "oldSha": head, "newSha": None}],
    ]


def test_failed_delivery_is_retried(bot_hub, bot_alice):
    endpoint = Recorder(failures=2)
    hook = bot_hub.webhooks.add("alice", endpoint.url, [{"type": "model", "name": "alice/retried-delivery"}])
    try:
        bot_alice.create_repo("alice/retried-delivery")
        wait_until(lambda: len(endpoint.received) >= 3, 15, what="the third delivery attempt")
        assert bot_hub.webhooks.wait_idle()
        attempts = [record for record in bot_hub.webhooks.deliveries if record.webhook_id == hook.id]
    finally:
        _remove(bot_hub, hook.id)
        endpoint.close()
    assert [record.status for record in attempts] == [500, 500, 200]
    assert [record.attempt for record in attempts] == [1, 2, 3]
    assert len({json.dumps(payload, sort_keys=True) for _, payload in endpoint.received}) == 1


def test_unreachable_url_gives_up(bot_hub, bot_alice):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        unused_port = probe.getsockname()[1]
    hook = bot_hub.webhooks.add("alice", f"http://127.0.0.1:{unused_port}/gone", [{"type": "model", "name": "alice/no-receiver"}])
    try:
        bot_alice.create_repo("alice/no-receiver")
        assert bot_hub.webhooks.wait_idle(timeout=120)
        attempts = [record for record in bot_hub.webhooks.deliveries if record.webhook_id == hook.id]
    finally:
        _remove(bot_hub, hook.id)
    assert len(attempts) == len(bot_hub.webhooks.retry_delays) + 1
    assert all(record.status is None and record.error for record in attempts)


def test_watched_items_and_private_repos(bot_hub, bot_alice, recorder):
    # bob's webhook watches microsoft, whose private repos bob cannot read.
    bob_hook = bot_hub.webhooks.add("bob", recorder.url, [{"type": "org", "name": "microsoft"}], secret="bob")
    alice_hook = bot_hub.webhooks.add("alice", recorder.url, [{"type": "org", "name": "microsoft"}], secret="alice")
    try:
        bot_alice.create_repo("microsoft/Phi-private-source", private=True)
        bot_alice.create_repo("microsoft/Phi-public-source")
        bot_alice.create_repo("alice/unwatched-repo")
        assert bot_hub.webhooks.wait_idle()
    finally:
        _remove(bot_hub, bob_hook.id)
        _remove(bot_hub, alice_hook.id)

    def names(secret: str) -> set[str]:
        return {payload["repo"]["name"] for headers, payload in recorder.received if headers["X-Webhook-Secret"] == secret}

    assert names("bob") == {"microsoft/Phi-public-source"}
    assert names("alice") == {"microsoft/Phi-public-source", "microsoft/Phi-private-source"}
    private = [payload for _, payload in recorder.received if payload["repo"]["name"] == "microsoft/Phi-private-source"]
    assert private[0]["repo"]["private"] is True


def test_copies_deliver_each_event_twice(bot_hub, bot_alice, recorder):
    hook = bot_hub.webhooks.add("alice", recorder.url, [{"type": "model", "name": "alice/twice"}])
    bot_hub.webhooks.copies = 2
    try:
        bot_alice.create_repo("alice/twice")
        assert bot_hub.webhooks.wait_idle()
    finally:
        bot_hub.webhooks.copies = 1
        _remove(bot_hub, hook.id)
    assert len(recorder.payloads("alice/twice")) == 2


def _remove(hub, webhook_id: str) -> None:
    api = HfApi(endpoint=hub.url, token=hub.token_for(next(hook.owner for hook in hub.webhooks.all() if hook.id == webhook_id)))
    api.delete_webhook(webhook_id)
