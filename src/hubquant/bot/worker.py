"""A worker process: takes jobs from the queue and runs them, `concurrent_jobs` at a time.

With the SQLite queue the worker claims jobs itself. With the Redis queue
Dramatiq delivers the jobs and keeps the worker's heartbeat; the worker also
sends the jobs whose receiver stopped before sending them. In both cases a
heartbeat thread renews the records of the running jobs, and a job that fails with a transient error
goes back to the queue with a delay. A job whose estimated disk or memory does
not fit next to the running jobs goes back without counting an attempt.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from hubquant.bot.config import BotConfig
from hubquant.bot.jobs import DONE, FAILED, QUEUED, JobRecord
from hubquant.bot.queues import JobHeld, JobQueue
from hubquant.bot.runner import Deferred, JobRunner, Outcome

log = logging.getLogger(__name__)

# Seconds before a job deferred for lack of budget is offered again.
DEFER_SECONDS = 30.0
# Seconds between two claims when the queue was empty.
IDLE_POLL_SECONDS = 1.0


class BotWorker:
    def __init__(self, config: BotConfig, queue: JobQueue, *, worker_id: str | None = None) -> None:
        self.config = config
        self.queue = queue
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.runner = JobRunner(config.worker, config.endpoint, config.token())
        self.stop_event = threading.Event()
        self._running: set[str] = set()
        self._lock = threading.Lock()

    # -- one job ----------------------------------------------------------------

    def run_record(self, record: JobRecord) -> Outcome | None:
        """Run a job this worker has started; return the outcome, or None when it was deferred."""
        limit = self.config.worker.max_attempts
        if record.attempts > limit:
            # Each earlier attempt ended with its worker gone (killed, out of memory, or
            # the machine restarted), which no retry rule saw, so the job stops here.
            outcome = Outcome(FAILED, error=f"gave up after {limit} attempts: the worker running it stopped each time")
            log.error("job %s: %s", record.id, outcome.error)
            self.queue.update_running(record.id, self.worker_id, lambda job: _finish(job, outcome))
            return outcome
        log.info("job %s: attempt %d of %s@%s (%s) on worker %s", record.id, record.attempts,
                 record.spec.source, record.spec.sha[:12], ", ".join(record.spec.targets), self.worker_id)
        with self._lock:
            self._running.add(record.id)
        try:
            outcome = self.runner.execute(record, lambda stage: self._set_stage(record.id, stage))
        except Deferred as deferred:
            reason = str(deferred)
            log.info("job %s: deferred for %.0f s: %s", record.id, DEFER_SECONDS, reason)
            self.queue.update_running(record.id, self.worker_id, lambda job: _undo_attempt(job, DEFER_SECONDS, reason))
            return None
        finally:
            with self._lock:
                self._running.discard(record.id)
        if outcome.retry_in is not None:
            self.queue.update_running(record.id, self.worker_id, lambda job: _retry_later(job, outcome))
        else:
            self.queue.update_running(record.id, self.worker_id, lambda job: _finish(job, outcome))
            log.info("job %s: %s%s", record.id, outcome.status, f": {outcome.error}" if outcome.error else "")
        return outcome

    def _set_stage(self, job_id: str, stage: str) -> None:
        def change(job: JobRecord) -> None:
            job.stage = stage
            job.heartbeat_at = time.time()

        self.queue.update_running(job_id, self.worker_id, change)

    # -- the SQLite loop --------------------------------------------------------

    def run(self) -> None:
        """Run until `stop_event` is set; jobs already running are finished first."""
        self.runner.clean_stale()
        log.info("worker %s started on the %s queue with %d concurrent job(s)",
                 self.worker_id, self.queue.kind, self.config.worker.concurrent_jobs)
        beat = threading.Thread(target=self._heartbeat_loop, name="bot-heartbeat", daemon=True)
        beat.start()
        try:
            if self.queue.kind == "redis":
                self.queue.run_worker(self._handle_message, self.config.worker.concurrent_jobs, self.stop_event)
            else:
                self._run_sqlite()
        finally:
            self.stop_event.set()
            beat.join()
        log.info("worker %s stopped", self.worker_id)

    def _run_sqlite(self) -> None:
        reclaimed = self.queue.reclaim_stale()
        if reclaimed:
            log.warning("requeued %d job(s) of stopped workers: %s", len(reclaimed), ", ".join(reclaimed))
        threads = [
            threading.Thread(target=self._claim_loop, name=f"bot-job-{index}", daemon=True)
            for index in range(self.config.worker.concurrent_jobs)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _claim_loop(self) -> None:
        while not self.stop_event.is_set():
            record = self.queue.claim(self.worker_id)
            if record is None:
                self.stop_event.wait(IDLE_POLL_SECONDS)
                continue
            self.run_record(record)

    def _heartbeat_loop(self) -> None:
        settings = self.queue.settings
        timeout = settings.heartbeat_timeout_seconds if self.queue.kind == "redis" else settings.lease_seconds
        interval = max(0.2, timeout / 4)
        while True:
            with self._lock:
                running = list(self._running)
            try:
                self.queue.heartbeat(running, self.worker_id)
                if self.queue.kind == "redis":
                    # A receiver that died before sending has had a whole timeout to send.
                    self.queue.resend_unsent(grace_seconds=timeout)
            except Exception:  # noqa: BLE001 - a missed beat is retried at the next interval
                log.exception("worker %s: renewing the lease of %s failed", self.worker_id, ", ".join(running))
            if self.stop_event.wait(interval):
                return

    # -- the Redis (Dramatiq) handler -------------------------------------------

    def _handle_message(self, job_id: str) -> None:
        import dramatiq

        try:
            record = self.queue.start(job_id, self.worker_id)
        except JobHeld as held:
            delay = self.queue.settings.heartbeat_timeout_seconds / 2
            log.info("job %s: %s, so retrying in %.0f s", job_id, held, delay)
            raise dramatiq.Retry(str(held), delay=int(delay * 1000)) from None
        if record is None:
            log.info("job %s: already finished or unknown; acknowledging its message", job_id)
            return
        try:
            outcome = self.run_record(record)
        except BaseException as error:
            # Dramatiq's time limit interrupts the thread with an exception of its own.
            failure = Outcome(FAILED, error=f"interrupted: {error!r}")
            self.queue.update_running(job_id, self.worker_id, lambda job: _finish(job, failure))
            raise
        if outcome is None:
            raise dramatiq.Retry("deferred: not enough budget", delay=int(DEFER_SECONDS * 1000))
        if outcome.retry_in is not None:
            raise dramatiq.Retry(outcome.error, delay=int(outcome.retry_in * 1000))


def _finish(job: JobRecord, outcome: Outcome) -> None:
    job.status = outcome.status
    job.finished_at = time.time()
    job.result = outcome.result
    job.error = outcome.error
    job.stage = DONE if outcome.status == DONE else outcome.status


def _retry_later(job: JobRecord, outcome: Outcome) -> None:
    job.status = QUEUED
    job.worker = ""
    job.error = f"attempt {job.attempts}: {outcome.error}; retrying"
    job.not_before = time.time() + (outcome.retry_in or 0.0)
    job.finished_at = time.time()


def _undo_attempt(job: JobRecord, delay: float, reason: str) -> None:
    job.status = QUEUED
    job.worker = ""
    job.attempts -= 1
    if job.runs:
        job.runs.pop()
    job.started_at = None
    job.not_before = time.time() + delay
    job.error = f"deferred: {reason}"
