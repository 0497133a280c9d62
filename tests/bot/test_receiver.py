"""The receiver's HTTP contract, status endpoints and status page (in process)."""

from __future__ import annotations

import copy
import json
import logging

import pytest
from starlette.testclient import TestClient

from hubquant.bot.config import parse_config
from hubquant.bot.queues import QueueSettings, open_queue
from hubquant.bot.receiver import create_app

from conftest import OPERATOR_TOKEN, SECRET, default_rule, free_port
from test_payload_rules import SHA_B, content_update


@pytest.fixture
def receiver(tmp_path, monkeypatch):
    monkeypatch.setenv("HUBQUANT_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("HUBQUANT_BOT_OPERATOR_TOKEN", OPERATOR_TOKEN)
    config = parse_config({
        "receiver": {"max_body_bytes": 4096},
        "rules": [default_rule(), default_rule(name="private-phi", allow_private=True, owner="alice")],
    })
    queue = open_queue(f"sqlite:///{tmp_path / 'jobs.db'}")
    with TestClient(create_app(config, queue)) as client:
        yield client, queue


def post(client, payload, secret: str | None = SECRET, body: bytes | None = None):
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Webhook-Secret"] = secret
    return client.post("/webhook", content=body if body is not None else json.dumps(payload), headers=headers)


def test_secret_checked(receiver):
    client, queue = receiver
    assert post(client, content_update(), secret=None).status_code == 401
    assert post(client, content_update(), secret="wrong").status_code == 403
    assert post(client, content_update(), secret=SECRET[:-1]).status_code == 403
    assert queue.list_jobs() == []


def test_matching_delivery_queues_once(receiver):
    client, queue = receiver
    first = post(client, content_update())
    assert first.status_code == 202
    assert first.json()["status"] == "queued"
    again = post(client, content_update())
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    jobs = queue.list_jobs()
    assert len(jobs) == 1
    assert jobs[0].spec.source == "microsoft/Phi-5-mini"
    assert jobs[0].spec.sha == SHA_B
    assert jobs[0].id == first.json()["jobs"][0]["id"]


def test_unmatched_delivery_acknowledged(receiver, caplog):
    client, queue = receiver
    caplog.set_level(logging.INFO, logger="hubquant.bot.receiver")
    response = post(client, content_update("microsoft/Orca-2"))
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    assert queue.list_jobs() == []
    assert "matched no rule" in caplog.text
    assert "65a14fd933eca76f4639fc84" in caplog.text


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"webhook": {"id": "badjson1", "version": 3}, "repo": {', 400),
        (json.dumps({**content_update(), "webhook": {"id": "oldversion", "version": 2}}).encode(), 422),
        (json.dumps({k: v for k, v in content_update().items() if k != "event"}).encode(), 422),
        (json.dumps({**content_update(), "padding": "x" * 5000}).encode(), 413),
    ],
)
def test_bad_delivery_rejected_and_logged(receiver, caplog, body, status):
    client, queue = receiver
    caplog.set_level(logging.WARNING, logger="hubquant.bot.receiver")
    response = post(client, None, body=body)
    assert response.status_code == status
    assert queue.list_jobs() == []
    assert "rejected delivery (webhook id" in caplog.text
    webhook_id = {"badjson1", "oldversion", "65a14fd933eca76f4639fc84"}
    assert any(item in caplog.text for item in webhook_id)


def test_oversized_body_without_length_rejected(receiver, caplog):
    client, queue = receiver
    caplog.set_level(logging.WARNING, logger="hubquant.bot.receiver")
    # The padding comes first, so the webhook id is only in the last bytes.
    body = json.dumps({"padding": "x" * 5000, **content_update()}).encode()

    def chunks():
        for start in range(0, len(body), 1000):
            yield body[start:start + 1000]

    # A generator body goes out chunked, with no Content-Length header.
    response = client.post("/webhook", content=chunks(),
                           headers={"X-Webhook-Secret": SECRET, "Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.request.headers.get("content-length") is None
    assert queue.list_jobs() == []
    assert "webhook id 65a14fd933eca76f4639fc84" in caplog.text


def test_far_oversized_body_rejected_unread(receiver, caplog):
    client, queue = receiver
    caplog.set_level(logging.WARNING, logger="hubquant.bot.receiver")
    response = post(client, None, body=b"{" + b" " * 1_000_000 + b"}")
    assert response.status_code == 413
    assert "1000002 bytes exceeds the limit" in response.json()["error"]
    assert queue.list_jobs() == []


def test_private_jobs_need_operator_token(receiver):
    client, queue = receiver
    assert post(client, content_update()).status_code == 202
    assert post(client, content_update("alice/Phi-secret", private=True)).status_code == 202

    public_view = client.get("/api/jobs").json()
    assert [job["spec"]["source"] for job in public_view["jobs"]] == ["microsoft/Phi-5-mini"]
    operator_view = client.get("/api/jobs", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}).json()
    assert sorted(job["spec"]["source"] for job in operator_view["jobs"]) == ["alice/Phi-secret", "microsoft/Phi-5-mini"]
    wrong = client.get("/api/jobs", headers={"Authorization": "Bearer nope"}).json()
    assert len(wrong["jobs"]) == 1

    private_id = next(job["id"] for job in operator_view["jobs"] if job["spec"]["private_source"])
    assert client.get(f"/api/jobs/{private_id}").status_code == 404
    assert client.get(f"/api/jobs/{private_id}", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}).status_code == 200

    page = client.get("/")
    assert page.status_code == 200
    assert "microsoft/Phi-5-mini" in page.text
    assert "alice/Phi-secret" not in page.text
    assert client.get("/?operator=1").status_code == 401
    signed_in = client.get("/?operator=1", auth=("operator", OPERATOR_TOKEN))
    assert "alice/Phi-secret" in signed_in.text


def test_status_page_shows_results(receiver):
    client, queue = receiver
    post(client, content_update())
    record = queue.list_jobs()[0]
    claimed = queue.claim("worker-a")
    assert claimed.id == record.id

    def finish(job) -> None:
        job.status = "done"
        job.finished_at = job.started_at + 75
        job.result = {"releases": [{"repo_id": "hubquant-org/Phi-5-mini-GGUF", "url": "http://hub/hubquant-org/Phi-5-mini-GGUF", "status": "published"}]}

    queue.update_running(record.id, "worker-a", finish)
    page = client.get("/").text
    assert 'href="http://hub/hubquant-org/Phi-5-mini-GGUF"' in page
    assert "1 min 15 s" in page
    assert "gguf:Q8_0" in page
    data = client.get(f"/api/jobs/{record.id}").json()
    assert data["duration"] == pytest.approx(75)
    assert data["status"] == "done"


def test_health_reports_queue(receiver, monkeypatch):
    client, _ = receiver
    assert client.get("/healthz").json() == {"status": "ok", "queue": "sqlite"}
    config = parse_config({"rules": [default_rule()]})
    broken = open_queue(f"redis://127.0.0.1:{free_port()}/0", QueueSettings())
    with TestClient(create_app(config, broken)) as other:
        response = other.get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


def test_missing_secret_refuses_to_start(tmp_path, monkeypatch):
    from hubquant.errors import UsageError

    monkeypatch.delenv("HUBQUANT_WEBHOOK_SECRET", raising=False)
    config = parse_config({"rules": [default_rule()]})
    with pytest.raises(UsageError, match="HUBQUANT_WEBHOOK_SECRET"):
        create_app(config, open_queue(f"sqlite:///{tmp_path / 'jobs.db'}"))


def test_same_commit_from_two_events(receiver):
    client, queue = receiver
    create = copy.deepcopy(content_update())
    create["event"] = {"action": "create", "scope": "repo"}
    del create["updatedRefs"]
    assert post(client, create).status_code == 202
    assert post(client, content_update()).status_code == 200
    assert len(queue.list_jobs()) == 1
