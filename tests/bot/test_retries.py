"""Which failures a worker retries, and how it defers a job that does not fit
next to the running ones (SQLite queue, worker in this process)."""

from __future__ import annotations

import threading
import time

import httpx
import httpx2
import pytest
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from hubquant.bot import worker as worker_module
from hubquant.bot.config import load_config
from hubquant.bot.jobs import FAILED, QUEUED, JobSpec
from hubquant.bot.queues import open_queue
from hubquant.bot.runner import transient_wait
from hubquant.bot.worker import BotWorker
from hubquant.errors import TransientError, UsageError
from hubquant.tinymodels import publish_tiny_model

from conftest import free_port, wait_until, write_config


def hub_error(status: int, headers: dict | None = None) -> HfHubHTTPError:
    request = httpx.Request("GET", "http://127.0.0.1:1/api/models/microsoft/Phi-x")
    response = httpx.Response(status, headers=headers or {}, request=request)
    return HfHubHTTPError(f"{status} from the Hub", response=response)


@pytest.mark.parametrize(
    ("error", "wait"),
    [
        (hub_error(503), 0.0),
        (hub_error(500), 0.0),
        (hub_error(429, {"Retry-After": "7"}), 7.0),
        (hub_error(429, {"Retry-After": "soon"}), 0.0),
        (hub_error(404), None),
        (hub_error(403), None),
        (httpx.ConnectError("connection refused"), 0.0),
        (httpx2.ConnectError("connection refused"), 0.0),
        (httpx2.RemoteProtocolError("peer closed connection"), 0.0),
        (httpx.ReadTimeout("read timed out"), 0.0),
        (ConnectionResetError("reset by peer"), 0.0),
        (TimeoutError("timed out"), 0.0),
        (TransientError("the Hub answered 502 twice"), 0.0),
        (UsageError("invalid target 'gguf:Q9'"), None),
        (ValueError("unsupported architecture"), None),
    ],
)
def test_transient_errors_classified(error, wait):
    assert transient_wait(error) == wait


def test_repository_not_found_is_permanent():
    error = RepositoryNotFoundError("404", response=hub_error(404).response)
    assert transient_wait(error) is None


def test_unreachable_hub_retried_then_given_up(tmp_path, monkeypatch):
    """A Hub that rejects connections has a network error: retried with backoff, then given up."""
    monkeypatch.setenv("HF_TOKEN", "hf_unused")
    dead = f"http://127.0.0.1:{free_port()}"
    config = load_config(write_config(tmp_path / "bot.yaml", hub_url=dead, queue_url="sqlite:///jobs.db",
                                      worker={"work_dir": "work", "max_attempts": 3, "backoff_seconds": 0.5,
                                              "max_backoff_seconds": 1}))
    queue = open_queue(config.queue_url, config.queue)
    record, _ = queue.submit(JobSpec("microsoft/Phi-unreachable", "e" * 40, ("gguf:Q8_0",), "hubquant-org"))
    process = BotWorker(config, queue)
    thread = threading.Thread(target=process.run, daemon=True)
    thread.start()
    seen_retry = []
    try:
        def finished():
            job = queue.get(record.id)
            if job.status == QUEUED and job.attempts:
                seen_retry.append(job.error)
            return job if job.status == FAILED else None

        final = wait_until(finished, 60, 0.05, "the job to give up")
    finally:
        process.stop_event.set()
        thread.join(timeout=30)
    assert final.attempts == 3
    assert "gave up after 3 attempts" in final.error
    assert any("retrying" in error for error in seen_retry)
    assert list(config.worker.work_dir.glob("job-*")) == []


def test_job_deferred_while_budget_taken(bot_hub, bot_alice, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", bot_hub.token_for("bob"))
    sha = publish_tiny_model(bot_alice, "phi-3-mini-4k-instruct", repo_id="microsoft/Phi-deferred", cache=tiny_model)
    config_file = write_config(tmp_path / "bot.yaml", hub_url=bot_hub.url, queue_url="sqlite:///jobs.db",
                               worker={"work_dir": "work", "max_disk_gb": 100})
    config = load_config(config_file)
    queue = open_queue(config.queue_url, config.queue)
    record, _ = queue.submit(JobSpec("microsoft/Phi-deferred", sha, ("gguf:Q8_0",), "hubquant-org"))
    process = BotWorker(config, queue, worker_id="worker-a")
    monkeypatch.setattr(worker_module, "DEFER_SECONDS", 1.0)
    assert process.runner.budget.reserve(config.worker.max_disk_bytes, 0)  # another job uses all the disk

    claimed = queue.claim("worker-a")
    assert claimed.attempts == 1
    assert process.run_record(claimed) is None
    deferred = queue.get(record.id)
    assert deferred.status == QUEUED
    assert deferred.attempts == 0
    assert deferred.runs == []
    assert deferred.started_at is None
    assert deferred.error.startswith("deferred: needs ")
    assert deferred.not_before > time.time()
    assert queue.claim("worker-a") is None  # not before the delay
    time.sleep(1.1)
    again = queue.claim("worker-a")
    assert again.id == record.id
    assert again.attempts == 1


def test_job_that_stops_its_workers_gives_up(tmp_path, monkeypatch):
    """A job whose workers all vanish mid-run (as an out-of-memory kill does) fails after max_attempts."""
    monkeypatch.setenv("HF_TOKEN", "hf_unused")
    config = load_config(write_config(tmp_path / "bot.yaml", hub_url=f"http://127.0.0.1:{free_port()}",
                                      queue_url="sqlite:///jobs.db", queue={"lease_seconds": 0.2},
                                      worker={"work_dir": "work", "max_attempts": 2}))
    queue = open_queue(config.queue_url, config.queue)
    record, _ = queue.submit(JobSpec("microsoft/Phi-heavy", "d" * 40, ("gguf:Q8_0",), "hubquant-org"))
    for ghost in ("ghost-1", "ghost-2"):
        assert queue.claim(ghost).attempts in (1, 2)
        time.sleep(0.3)  # the lease runs out: the worker is gone
    claimed = queue.claim("worker-a")
    assert claimed.attempts == 3
    outcome = BotWorker(config, queue, worker_id="worker-a").run_record(claimed)
    assert outcome.status == FAILED
    final = queue.get(record.id)
    assert final.status == FAILED
    assert final.error == "gave up after 2 attempts: the worker running it stopped each time"
    assert final.runs == ["ghost-1", "ghost-2", "worker-a"]
