"""The Redis queue's recovery paths against a real redis-server: a receiver
that stopped between storing a job and sending it, and a second message for a
job that a live worker is running."""

from __future__ import annotations

import time

import pytest

from hubquant.bot.config import load_config
from hubquant.bot.jobs import QUEUED, SKIPPED, JobSpec
from hubquant.bot.queues import JobHeld, QueueSettings, open_queue

from conftest import wait_until, write_config

SPEC = JobSpec("microsoft/Phi-recovery", "a" * 40, ("gguf:Q8_0",), "hubquant-org")


@pytest.fixture
def queue(redis_url, redis_namespace):
    opened = open_queue(redis_url, QueueSettings(namespace=redis_namespace, heartbeat_timeout_seconds=1.0))
    yield opened
    opened.close()


def test_unsent_record_is_sent_once_after_grace(queue):
    record = queue._create_record(SPEC)  # what a receiver stored before it died
    assert record is not None
    # A later delivery of the same commit is a duplicate and sends nothing either.
    existing, created = queue.submit(SPEC)
    assert not created
    assert existing.id == record.id
    assert queue.broker.do_qsize("jobs") == 0

    assert queue.resend_unsent(grace_seconds=60) == []
    assert queue.broker.do_qsize("jobs") == 0
    assert queue.resend_unsent(grace_seconds=0) == [record.id]
    assert queue.broker.do_qsize("jobs") == 1
    assert queue.resend_unsent(grace_seconds=0) == []
    assert queue.broker.do_qsize("jobs") == 1


def test_submitted_job_is_not_marked_unsent(queue):
    record, created = queue.submit(SPEC)
    assert created
    assert queue.resend_unsent(grace_seconds=0) == []
    assert queue.broker.do_qsize("jobs") == 1


def test_started_job_is_not_resent(queue):
    record = queue._create_record(SPEC)
    queue.start(record.id, "worker-a")
    assert queue.resend_unsent(grace_seconds=0) == []
    assert queue.broker.do_qsize("jobs") == 0


def test_live_worker_keeps_its_job(queue):
    record, _ = queue.submit(SPEC)
    assert queue.start(record.id, "worker-a").runs == ["worker-a"]
    with pytest.raises(JobHeld, match="running on worker worker-a"):
        queue.start(record.id, "worker-b")
    # Renewed heartbeats keep the job with worker-a past the 1 s timeout.
    for _ in range(3):
        time.sleep(0.5)
        queue.heartbeat([record.id], "worker-a")
        queue.heartbeat([record.id], "worker-b")  # not its job: changes nothing
        with pytest.raises(JobHeld):
            queue.start(record.id, "worker-b")
    assert queue.get(record.id).worker == "worker-a"


def test_silent_worker_loses_its_job(queue):
    record, _ = queue.submit(SPEC)
    queue.start(record.id, "worker-a")
    time.sleep(1.2)
    started = queue.start(record.id, "worker-b")
    assert started.runs == ["worker-a", "worker-b"]
    assert started.attempts == 2


def test_held_job_message_goes_back_with_delay(bot_hub, redis_url, redis_namespace, tmp_path):
    import dramatiq

    from hubquant.bot.worker import BotWorker

    config = load_config(write_config(tmp_path / "bot.yaml", hub_url=bot_hub.url, queue_url=redis_url,
                                      queue={"namespace": redis_namespace, "heartbeat_timeout_seconds": 8}))
    queue = open_queue(config.queue_url, config.queue)
    try:
        record, _ = queue.submit(SPEC)
        queue.start(record.id, "worker-a")
        worker = BotWorker(config, queue, worker_id="worker-b")
        with pytest.raises(dramatiq.Retry) as retry:
            worker._handle_message(record.id)
        assert retry.value.delay == 4000
        assert queue.get(record.id).runs == ["worker-a"]
    finally:
        queue.close()


def test_worker_sends_job_its_receiver_left(bot_hub, bot_alice, redis_url, redis_namespace, processes, tmp_path):
    bot_alice.create_repo("microsoft/Phi-left-behind", exist_ok=True)
    sha = bot_alice.list_repo_commits("microsoft/Phi-left-behind")[0].commit_id
    config = write_config(tmp_path / "bot.yaml", hub_url=bot_hub.url, queue_url=redis_url,
                          queue={"namespace": redis_namespace, "heartbeat_timeout_seconds": 2},
                          worker={"work_dir": "work"})
    loaded = load_config(config)
    queue = open_queue(loaded.queue_url, loaded.queue)
    try:
        record = queue._create_record(JobSpec("microsoft/Phi-left-behind", sha, ("gguf:Q8_0",), "hubquant-org"))
        assert queue.get(record.id).status == QUEUED
        worker = processes.start("worker", "bot", "worker", "--config", str(config))
        done = wait_until(lambda: (job := queue.get(record.id)).status == SKIPPED and job, 90, 0.5,
                          "the left-behind job to run")
        assert done.attempts == 1
        assert "never sent" in processes.log_of(worker)
        assert queue.resend_unsent(grace_seconds=0) == []
    finally:
        queue.close()
