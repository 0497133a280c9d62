"""The Space's job queue: limits, per-user visibility, time limit, restarts, tokens.

A fake worker (fake_worker.py) speaks the worker protocol, so these tests check
the queue itself in seconds; the browser tests run real jobs.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from hubquant.space.config import SpaceConfig
from hubquant.space.jobs import (
    JOB_CANCELLED,
    JOB_DONE,
    JOB_FAILED,
    JOB_INTERRUPTED,
    JOB_QUEUED,
    JOB_RUNNING,
    JobManager,
    LimitExceeded,
)

FAKE_WORKER = [sys.executable, str(Path(__file__).with_name("fake_worker.py"))]
TOKEN = "hf_oauth_" + "A" * 34


@pytest.fixture
def config(tmp_path) -> SpaceConfig:
    return SpaceConfig(endpoint="http://127.0.0.1:9", state_dir=tmp_path / "state", max_running_jobs=1, max_jobs_per_user=1, max_queued_jobs=5)


@pytest.fixture
def make_manager(config):
    managers: list[JobManager] = []

    def make(**changes) -> JobManager:
        manager = JobManager(replace(config, **changes), worker_command=FAKE_WORKER)
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        manager.close()


def _submit(manager: JobManager, owner: str = "alice", source: str = "fake/ok", **options):
    defaults = {"token": TOKEN, "targets": ["gguf:Q8_0", "gguf:Q4_K_M"], "namespace": owner, "public": None}
    defaults.update(options)
    return manager.submit(owner=owner, source=source, **defaults)


def _wait(job, states=(JOB_DONE, JOB_FAILED, JOB_CANCELLED, JOB_INTERRUPTED), timeout=30.0):
    deadline = time.monotonic() + timeout
    while job.state not in states:
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job.id} stayed {job.state}; log: {job.log[-5:]}")
        time.sleep(0.05)
    return job


def test_job_runs_to_done(make_manager):
    job = _wait(_submit(make_manager()))
    assert job.state == JOB_DONE
    assert job.rows == {"gguf:Q8_0": {"state": "done", "reason": ""}, "gguf:Q4_K_M": {"state": "done", "reason": ""}}
    assert job.releases[0]["repo_id"] == "alice/fake-GGUF"
    assert job.progress["evaluate"] == [1, 2]


def test_token_dropped_and_never_saved(make_manager, config):
    job = _submit(make_manager(), source="fake/sleep")
    assert job.token == TOKEN
    record = config.state_dir / "jobs" / f"{job.id}.json"
    assert TOKEN not in record.read_text()
    finished = _wait(_submit(make_manager(), owner="bob"))
    assert finished.token is None
    assert TOKEN not in (config.state_dir / "jobs" / f"{finished.id}.json").read_text()


def test_failed_target_keeps_others(make_manager):
    job = _wait(_submit(make_manager(), source="fake/partial"))
    assert job.state == JOB_FAILED
    assert job.rows["gguf:Q8_0"]["state"] == "done"
    assert job.rows["gguf:Q4_K_M"] == {"state": "failed", "reason": "validation failed: made up for the test"}
    assert "1 of 2 target(s) failed" in job.message


def test_worker_error_fails_every_row(make_manager):
    job = _wait(_submit(make_manager(), source="fake/error"))
    assert job.state == JOB_FAILED
    assert job.message == "the source is broken"
    assert all(row == {"state": "failed", "reason": "the source is broken"} for row in job.rows.values())


def test_second_job_of_user_rejected(make_manager):
    manager = make_manager()
    running = _submit(manager, source="fake/sleep")
    with pytest.raises(LimitExceeded, match=f"wait until job {running.id} ends or cancel it"):
        _submit(manager)
    assert len(manager.jobs_for("alice")) == 1


def test_other_user_queued_behind(make_manager):
    manager = make_manager()
    first = _submit(manager, source="fake/sleep")
    _wait(first, states=(JOB_RUNNING,))
    second = _submit(manager, owner="bob")
    assert second.state == JOB_QUEUED
    manager.cancel(first.id, "alice")
    assert _wait(second).state == JOB_DONE


def test_full_queue_rejected(make_manager):
    manager = make_manager(max_queued_jobs=1)
    _submit(manager, source="fake/sleep")
    _submit(manager, owner="bob", source="fake/sleep")
    with pytest.raises(LimitExceeded, match=r"the queue is full \(1 jobs waiting, the limit is 1\)"):
        _submit(manager, owner="carol")


def test_large_source_rejected(make_manager):
    manager = make_manager(max_source_bytes=10**9)
    with pytest.raises(LimitExceeded, match="is 2 GB, over this Space's limit of 1 GB"):
        _submit(manager, source_bytes=lambda: 2 * 10**9)
    assert manager.jobs_for("alice") == []


def test_submit_without_token_rejected(make_manager):
    with pytest.raises(Exception, match="sign in with your Hugging Face account first"):
        _submit(make_manager(), token="")


def test_jobs_visible_only_to_owner(make_manager):
    manager = make_manager()
    job = _wait(_submit(manager))
    assert [item.id for item in manager.jobs_for("alice")] == [job.id]
    assert [item.id for item in manager.jobs_for("Alice")] == [job.id]
    assert manager.jobs_for("bob") == []
    assert manager.get(job.id, "bob") is None
    assert manager.get(job.id, "alice") is job


def test_cancel_by_other_user_ignored(make_manager):
    manager = make_manager()
    job = _submit(manager, source="fake/sleep")
    assert manager.cancel(job.id, "bob") is False
    assert job.active
    assert manager.cancel(job.id, "alice") is True
    assert _wait(job).state == JOB_CANCELLED


def test_job_past_time_limit_stopped(make_manager):
    manager = make_manager(job_timeout_s=1.0)
    started = time.monotonic()
    job = _wait(_submit(manager, source="fake/sleep"))
    assert time.monotonic() - started < 20
    assert job.state == JOB_FAILED
    assert "timed out: the job ran past this Space's limit of 0.0166667 minutes" in job.message
    assert all(row["state"] == "failed" for row in job.rows.values())


def test_restart_interrupts_running_job(make_manager, config):
    first = make_manager()
    job = _submit(first, source="fake/sleep")
    _wait(job, states=(JOB_RUNNING,))
    restarted = make_manager()
    seen = restarted.get(job.id, "alice")
    assert seen.state == JOB_INTERRUPTED
    assert "The Space restarted while this job was running" in seen.message
    assert "Start it again" in seen.message
    assert seen.token is None
    assert all(row["state"] == "failed" for row in seen.rows.values())


def test_worker_gets_only_user_token(make_manager, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_space_own_token_must_not_leak")
    monkeypatch.setenv("OAUTH_CLIENT_SECRET", "space-oauth-secret")
    job = _wait(_submit(make_manager(), source="fake/env"))
    text = "\n".join(job.log)
    assert "secret variables: none" in text
    assert "implicit token: 1" in text
    assert "HF_HOME inside cwd: True" in text
    assert f"token sha256: {hashlib.sha256(TOKEN.encode()).hexdigest()}" in text


def test_token_redacted_from_log(make_manager):
    job = _wait(_submit(make_manager(), source="fake/leak"))
    text = "\n".join(job.log)
    assert "oops, the token is" in text
    assert TOKEN not in text


ORPHAN_PARENT = """
import os, subprocess, sys
worker = subprocess.Popen(
    [sys.executable, "-m", "hubquant.space.worker", "--parent-pid", str(os.getpid())], stdin=int(sys.argv[1]),
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
)
open(sys.argv[2], "w").write(str(worker.pid))
"""


def test_worker_exits_when_space_dies(tmp_path):
    # The test keeps the worker's stdin open, so only the parent check can end it.
    read_end, write_end = os.pipe()
    pid_file = tmp_path / "worker.pid"
    try:
        subprocess.run(
            [sys.executable, "-c", ORPHAN_PARENT, str(read_end), str(pid_file)],
            pass_fds=(read_end,), timeout=60, check=True,
        )
        pid = int(pid_file.read_text())
        deadline = time.monotonic() + 20
        while _running(pid):
            assert time.monotonic() < deadline, f"worker {pid} still runs after its parent exited"
            time.sleep(0.2)
    finally:
        os.close(read_end)
        os.close(write_end)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child of init lingers as a zombie until reaped; that counts as ended.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"
