"""A new tiny Phi model on the local Hub triggers, through real webhook deliveries,
a validated release published back to it, with the SQLite queue and two worker
processes, one of which is killed in the middle of the job."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import pytest
from huggingface_hub import HfApi

from hubquant.bot.config import load_config
from hubquant.bot.jobs import DONE, RUNNING, SKIPPED, JobSpec
from hubquant.bot.queues import open_queue
from hubquant.bot.worker import BotWorker
from hubquant.tinymodels import publish_tiny_model

from conftest import SECRET, Processes, bot_environment, start_receiver, wait_until, write_config

SOURCE = "microsoft/Phi-3-mini-4k-instruct"
RELEASE = "hubquant-org/Phi-3-mini-4k-instruct-GGUF"
BUILD_STAGES = ("converting", "quantizing", "validating", "publishing")


def worker_pid(worker_id: str) -> int:
    return int(worker_id.split(":")[1])


def release_files(api: HfApi) -> list[str] | None:
    if not api.repo_exists(RELEASE):
        return None
    return api.list_repo_files(RELEASE)


@pytest.fixture(scope="module")
def webhook_release(bot_hub, bot_alice, tiny_model, tmp_path_factory, gguf_toolchain, reference_toolchain):
    folder = tmp_path_factory.mktemp("end-to-end")
    config = write_config(folder / "bot.yaml", hub_url=bot_hub.url, queue_url="sqlite:///jobs.db",
                          queue={"lease_seconds": 3}, worker={"work_dir": "work"})
    processes = Processes(folder, bot_environment(bot_hub))
    queue = open_queue(load_config(config).queue_url, load_config(config).queue)
    bob = HfApi(endpoint=bot_hub.url, token=bot_hub.token_for("bob"))
    try:
        url = start_receiver(processes, config)
        hook = bot_alice.create_webhook(url=f"{url}/webhook", watched=[{"type": "org", "name": "microsoft"}],
                                        domains=["repo"], secret=SECRET)
        bot_hub.webhooks.copies = 2  # every event arrives twice, as the Hub may deliver it
        workers = [processes.start(f"worker-{index}", "bot", "worker", "--config", str(config)) for index in range(2)]

        sha = publish_tiny_model(bot_alice, "phi-3-mini-4k-instruct", repo_id=SOURCE, cache=tiny_model)
        assert bot_hub.webhooks.wait_idle()
        deliveries = [record for record in bot_hub.webhooks.deliveries if record.webhook_id == hook.id]

        def running_build():
            for record in queue.list_jobs():
                if record.spec.sha == sha and record.status == RUNNING and record.stage in BUILD_STAGES:
                    return record
            return None

        first = wait_until(running_build, 300, 0.1, "the job to reach a build stage")
        killed = next(process for process in workers if process.pid == worker_pid(first.worker))
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        files_after_kill = release_files(bob)
        survivor = next(process for process in workers if process is not killed)

        def finished():
            record = queue.get(first.id)
            return record if record.status not in (RUNNING, "queued") else None

        final = wait_until(finished, 400, 0.5, "the job to finish on the other worker")
        jobs = [record for record in queue.list_jobs() if record.spec.source == SOURCE]
        status_page = httpx.get(f"{url}/").text
        survivor_log = processes.log_of(survivor)
        # Only the killed worker's folder may remain; the next worker to start removes it.
        leftover = list((folder / "work").glob("job-*"))
        yield {
            "sha": sha, "deliveries": deliveries, "first": first, "killed_pid": killed.pid,
            "survivor_pid": survivor.pid, "files_after_kill": files_after_kill, "final": final, "jobs": jobs,
            "page": status_page, "survivor_log": survivor_log, "config": config, "leftover": leftover,
        }
    finally:
        bot_hub.webhooks.copies = 1
        processes.stop_all()
        for hook_info in bot_alice.list_webhooks():
            bot_alice.delete_webhook(hook_info.id)


def test_deliveries_were_real_and_duplicated(webhook_release):
    deliveries = webhook_release["deliveries"]
    events = [(record.scope, record.action) for record in deliveries if record.repo == SOURCE]
    assert events.count(("repo", "create")) == 2
    assert events.count(("repo.content", "update")) == 2
    assert all(record.status in (200, 202) for record in deliveries)


def test_one_job_per_commit(webhook_release):
    jobs = webhook_release["jobs"]
    by_sha = {}
    for record in jobs:
        by_sha.setdefault(record.spec.sha, []).append(record)
    assert all(len(records) == 1 for records in by_sha.values())
    assert webhook_release["sha"] in by_sha
    # The repo creation points at the empty first commit: that job finds no config.json.
    created = [record for record in jobs if record.spec.event == "repo.create"]
    assert len(created) == 1
    assert created[0].status == SKIPPED
    assert "no config.json" in created[0].error


def test_killed_worker_left_no_release(webhook_release):
    files = webhook_release["files_after_kill"]
    assert files is None or not any(name.endswith(".gguf") for name in files)


def test_other_worker_completed_job(webhook_release):
    final = webhook_release["final"]
    assert final.status == DONE
    assert final.attempts == 2
    assert [worker_pid(worker) for worker in final.runs] == [webhook_release["killed_pid"], webhook_release["survivor_pid"]]
    releases = final.result["releases"]
    assert [release["status"] for release in releases] == ["published"]
    assert releases[0]["repo_id"] == RELEASE
    assert "sent no heartbeat" in webhook_release["survivor_log"]


def test_finished_job_left_no_files(webhook_release):
    assert len(webhook_release["leftover"]) <= 1


def test_release_published_once_and_whole(webhook_release, bot_hub):
    api = HfApi(endpoint=bot_hub.url, token=bot_hub.token_for("bob"))
    commits = api.list_repo_commits(RELEASE)
    release_commits = [commit for commit in commits if commit.title.startswith("Release ")]
    assert len(release_commits) == 1
    files = api.list_repo_files(RELEASE)
    assert "Phi-3-mini-4k-instruct-Q8_0.gguf" in files
    assert "README.md" in files
    manifest = json.loads(open(api.hf_hub_download(RELEASE, "hubquant.json")).read())
    assert manifest["source"]["sha"] == webhook_release["sha"]
    assert manifest["targets"] == ["gguf:Q8_0"]
    assert manifest["artifacts"][0]["validation"]["status"] == "passed"


def test_status_page_links_release(webhook_release, bot_hub):
    page = webhook_release["page"]
    assert f"{bot_hub.url}/{RELEASE}" in page
    assert webhook_release["sha"][:12] in page


def test_hub_faults_retried_then_succeed(webhook_release, bot_hub, tmp_path, monkeypatch):
    # Same job in a fresh queue: the release exists, so after the retries it is up to date.
    monkeypatch.setenv("HF_TOKEN", bot_hub.token_for("bob"))
    config = load_config(write_config(tmp_path / "bot.yaml", hub_url=bot_hub.url, queue_url="sqlite:///jobs.db",
                                      worker={"backoff_seconds": 0.2, "max_attempts": 4}))
    queue = open_queue(config.queue_url, config.queue)
    record, _ = queue.submit(JobSpec(SOURCE, webhook_release["sha"], ("gguf:Q8_0",), "hubquant-org"))
    path = rf"^/api/models/{SOURCE}/revision/"
    bot_hub.inject_fault(path, status=503)
    bot_hub.inject_fault(path, retry_after=1)
    worker = BotWorker(config, queue)
    thread = threading.Thread(target=worker.run, daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        final = wait_until(lambda: (job := queue.get(record.id)).status == DONE and job, 120, 0.2, "the job to succeed")
    finally:
        worker.stop_event.set()
        thread.join(timeout=30)
        bot_hub.clear_faults()
    assert final.attempts == 3
    assert final.result["releases"][0]["status"] == "up to date"
    statuses = [status for method, request_path, status in bot_hub.requests_log if request_path.startswith(f"/api/models/{SOURCE}/revision/")]
    assert 503 in statuses
    assert 429 in statuses
    # The 429 asked for one second; backoff alone would have waited 0.4 s.
    assert time.monotonic() - started >= 1.0
