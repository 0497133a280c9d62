"""The SQLite-backed bot: restarts keep the queue, worker limits, and cleanup."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import threading
import time

import httpx
import pytest
from huggingface_hub import HfApi

from hubquant.bot.config import load_config
from hubquant.bot.jobs import FAILED, QUEUED, JobSpec
from hubquant.bot.queues import open_queue
from hubquant.bot.runner import Budget
from hubquant.bot.config import WorkerSettings
from hubquant.bot.worker import BotWorker
from hubquant.tinymodels import publish_tiny_model

from conftest import OPERATOR_TOKEN, SECRET, start_receiver, wait_until, write_config
from test_redis import delivery


def test_restart_keeps_queue(bot_hub, processes, tmp_path):
    config = write_config(tmp_path / "bot.yaml", hub_url=bot_hub.url, queue_url="sqlite:///state/jobs.db",
                          queue={"lease_seconds": 1})
    url = start_receiver(processes, config)
    shas = [f"{index:040x}" for index in range(1, 4)]
    for index, sha in enumerate(shas):
        response = httpx.post(f"{url}/webhook", content=json.dumps(delivery(f"microsoft/Phi-restart-{index}", sha)),
                              headers={"X-Webhook-Secret": SECRET})
        assert response.status_code == 202
    serve = processes.started[0][0]
    os.kill(serve.pid, signal.SIGKILL)
    serve.wait()

    # A worker claims one job and dies without a trace: its lease runs out.
    loaded = load_config(config)
    queue = open_queue(loaded.queue_url, loaded.queue)
    claimed = queue.claim("dead-worker")
    assert claimed is not None
    time.sleep(1.5)

    url = start_receiver(processes, config)
    jobs = httpx.get(f"{url}/api/jobs", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}).json()["jobs"]
    assert sorted(job["spec"]["sha"] for job in jobs) == shas
    assert all(job["status"] == QUEUED for job in jobs)
    requeued = next(job for job in jobs if job["id"] == claimed.id)
    assert requeued["attempts"] == 1
    assert "dead-worker stopped" in requeued["error"]
    assert "requeued 1 job(s)" in processes.log_of(processes.started[1][0])


@pytest.fixture(scope="module")
def limits_source(bot_alice, tiny_model) -> str:
    return publish_tiny_model(bot_alice, "phi-3-mini-4k-instruct", repo_id="microsoft/Phi-3-limits", cache=tiny_model)


def run_one(bot_hub, tmp_path, monkeypatch, spec: JobSpec, worker: dict):
    monkeypatch.setenv("HF_TOKEN", bot_hub.token_for("bob"))
    config = load_config(write_config(tmp_path / "bot.yaml", hub_url=bot_hub.url, queue_url="sqlite:///jobs.db",
                                      worker={"work_dir": "work", **worker}))
    queue = open_queue(config.queue_url, config.queue)
    record, _ = queue.submit(spec)
    process = BotWorker(config, queue)
    thread = threading.Thread(target=process.run, daemon=True)
    thread.start()
    try:
        final = wait_until(lambda: (job := queue.get(record.id)).status not in (QUEUED, "running") and job, 120, 0.2,
                           "the job to finish")
    finally:
        process.stop_event.set()
        thread.join(timeout=30)
    return final, config.worker.work_dir


@pytest.mark.parametrize(
    ("worker", "fragment"),
    [({"max_disk_gb": 0.001}, "worker.max_disk_gb"), ({"max_memory_gb": 0.5}, "worker.max_memory_gb")],
)
def test_limit_fails_job_with_reason(bot_hub, limits_source, tmp_path, monkeypatch, worker, fragment):
    spec = JobSpec("microsoft/Phi-3-limits", limits_source, ("gguf:Q8_0",), "hubquant-org")
    final, work_dir = run_one(bot_hub, tmp_path, monkeypatch, spec, worker)
    assert final.status == FAILED
    assert final.attempts == 1
    assert fragment in final.error
    assert list(work_dir.glob("job-*")) == []


def test_missing_source_fails_once(bot_hub, tmp_path, monkeypatch):
    spec = JobSpec("microsoft/Phi-does-not-exist", "f" * 40, ("gguf:Q8_0",), "hubquant-org")
    final, work_dir = run_one(bot_hub, tmp_path, monkeypatch, spec, {})
    assert final.status == FAILED
    assert final.attempts == 1
    assert "RepositoryNotFoundError" in final.error
    assert list(work_dir.glob("job-*")) == []


def test_budget_counts_running_jobs():
    budget = Budget(WorkerSettings(max_disk_bytes=10, max_memory_bytes=100))
    assert budget.reserve(6, 50)
    assert not budget.reserve(6, 10)
    assert not budget.reserve(1, 60)
    budget.free(6, 50)
    assert budget.reserve(10, 100)


def test_worker_start_removes_stale_folders(bot_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", bot_hub.token_for("bob"))
    config = load_config(write_config(tmp_path / "bot.yaml", hub_url=bot_hub.url, queue_url="sqlite:///jobs.db",
                                      worker={"work_dir": "work"}))
    work = config.worker.work_dir
    stale = work / "job-stale"
    (stale / "source").mkdir(parents=True)
    (stale / ".lock").touch()
    busy = work / "job-busy"
    busy.mkdir()
    with (busy / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        process = BotWorker(config, open_queue(config.queue_url, config.queue))
        removed = process.runner.clean_stale()
    assert removed == [stale]
    assert not stale.exists()
    assert busy.exists()


def test_one_concurrent_job_at_a_time(bot_hub, bot_alice, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", bot_hub.token_for("bob"))
    config = load_config(write_config(tmp_path / "bot.yaml", hub_url=bot_hub.url, queue_url="sqlite:///jobs.db",
                                      worker={"concurrent_jobs": 1}))
    queue = open_queue(config.queue_url, config.queue)
    records = []
    for index in range(4):
        repo = f"microsoft/Phi-concurrency-{index}"
        bot_alice.create_repo(repo, exist_ok=True)
        sha = bot_alice.list_repo_commits(repo)[0].commit_id
        records.append(queue.submit(JobSpec(repo, sha, ("gguf:Q8_0",), "hubquant-org"))[0])
    process = BotWorker(config, queue)
    thread = threading.Thread(target=process.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: all(queue.get(record.id).status == "skipped" for record in records), 60, 0.2,
                   "the four jobs to finish")
    finally:
        process.stop_event.set()
        thread.join(timeout=30)
    spans = sorted((job.started_at, job.finished_at) for job in (queue.get(record.id) for record in records))
    for (_, previous_end), (next_start, _) in zip(spans, spans[1:]):
        assert next_start >= previous_end


def test_retry_publishes_into_repo_left_empty(bot_hub, bot_alice, tiny_model, tmp_path, monkeypatch):
    """A worker killed after creating the release repo, before its commit, leaves it empty; the retry uses it."""
    source = "microsoft/Phi-3-leftover"
    sha = publish_tiny_model(bot_alice, "phi-3-mini-4k-instruct", repo_id=source, cache=tiny_model)
    bob = HfApi(endpoint=bot_hub.url, token=bot_hub.token_for("bob"))
    bob.create_repo("hubquant-org/Phi-3-leftover-GGUF")  # what the killed attempt left
    monkeypatch.setenv("HF_TOKEN", bot_hub.token_for("bob"))
    config = load_config(write_config(tmp_path / "bot.yaml", hub_url=bot_hub.url, queue_url="sqlite:///jobs.db",
                                      queue={"lease_seconds": 0.2}, worker={"work_dir": "work"}))
    queue = open_queue(config.queue_url, config.queue)
    record, _ = queue.submit(JobSpec(source, sha, ("gguf:Q8_0",), "hubquant-org"))
    queue.claim("killed-worker")
    time.sleep(0.3)
    claimed = queue.claim("worker-a")
    assert claimed.attempts == 2
    outcome = BotWorker(config, queue, worker_id="worker-a").run_record(claimed)
    assert outcome.status == "done", outcome.error
    assert "Phi-3-leftover-Q8_0.gguf" in bob.list_repo_files("hubquant-org/Phi-3-leftover-GGUF")
