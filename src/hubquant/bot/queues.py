"""The job queue interface and the factory that opens one from a URL.

Two implementations exist:

- ``sqlite:///PATH``: the embedded default for one machine. The job table is the
  queue. Workers claim jobs in a transaction and renew a lease while they run.
  A job whose lease ran out (its worker died) is claimed again by any worker,
  and the bot and every worker reconcile the table when they start.
- ``redis://HOST:PORT/DB``: workers on many machines, through Dramatiq's Redis
  broker. Dramatiq acknowledges a message only after the actor returns, and
  requeues the unacknowledged messages of a worker whose heartbeat stopped.
  Job records (for deduplication and the status page) are kept in Redis too.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

from hubquant.bot.jobs import JobRecord, JobSpec
from hubquant.errors import UsageError


@dataclass
class QueueSettings:
    """Timing of failure detection; the defaults suit jobs of minutes to hours."""

    # SQLite: a running job whose worker has not renewed its lease for this long is claimed again.
    lease_seconds: float = 60.0
    # Redis: a worker without a heartbeat for this long is dead, and its messages are requeued.
    heartbeat_timeout_seconds: float = 60.0
    # Redis: the share of broker commands that also run Dramatiq's maintenance (requeueing
    # the messages of dead workers), out of 1.0. Dramatiq 2.2.1 defaults to 0.001.
    maintenance_chance: float = 0.01
    # Redis: key prefix of the job records and of Dramatiq's queues.
    namespace: str = "hubquant-bot"


class JobHeld(Exception):
    """A worker got a message for a job that another live worker is running."""

    def __init__(self, job_id: str, worker: str) -> None:
        super().__init__(f"job {job_id} is running on worker {worker}")
        self.job_id = job_id
        self.worker = worker


class JobQueue(abc.ABC):
    """Stores job records and hands jobs to workers. Thread-safe."""

    kind: str = ""

    @abc.abstractmethod
    def submit(self, spec: JobSpec) -> tuple[JobRecord, bool]:
        """Queue `spec` unless a job with the same id exists; return the record and whether it is new."""

    @abc.abstractmethod
    def get(self, job_id: str) -> JobRecord | None: ...

    @abc.abstractmethod
    def list_jobs(self, limit: int = 500) -> list[JobRecord]:
        """Return the newest `limit` jobs, newest first."""

    @abc.abstractmethod
    def update_running(self, job_id: str, worker: str, change: Callable[[JobRecord], None]) -> JobRecord | None:
        """Apply `change` to a job that `worker` is running; return None when it no longer runs it."""

    @abc.abstractmethod
    def start(self, job_id: str, worker: str) -> JobRecord | None:
        """Mark a queued job as running on `worker` and return it, or None when the job is finished or unknown.

        Raises JobHeld when another worker runs the job and renewed its heartbeat recently.
        """

    @abc.abstractmethod
    def heartbeat(self, job_ids: list[str], worker: str) -> None:
        """Record that `worker` is still running `job_ids`."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raise when the queue's storage cannot be reached."""

    def close(self) -> None:
        """Release connections; the queue may not be used afterwards."""


def open_queue(url: str, settings: QueueSettings | None = None) -> JobQueue:
    """Open the queue at `url` (sqlite:///PATH or redis://HOST:PORT/DB)."""
    settings = settings or QueueSettings()
    if url.startswith("sqlite:///"):
        from hubquant.bot.queue_sqlite import SqliteQueue

        return SqliteQueue(url.removeprefix("sqlite:///"), settings)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from hubquant.bot.queue_redis import RedisQueue

        return RedisQueue(url, settings)
    raise UsageError(f"invalid queue URL {url!r}: use sqlite:///PATH or redis://HOST:PORT/DB")
