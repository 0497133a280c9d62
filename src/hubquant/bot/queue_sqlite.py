"""The embedded queue: a job table in SQLite, shared by the processes of one machine.

Each change runs in a `BEGIN IMMEDIATE` transaction, so two workers never claim
the same job. A running job stores the claiming worker and a heartbeat time,
which the worker renews with `heartbeat`. `reclaim_stale` puts a job whose
heartbeat is older than the lease back in the queue. Claims call it first, and the bot
and workers call it when they start (reconciling the table after a crash or a
reboot). The file is in WAL mode, so readers (the status page) do not block
writers.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hubquant.bot.jobs import QUEUED, RUNNING, JobRecord, JobSpec, mark_running
from hubquant.bot.queues import JobQueue, QueueSettings

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    not_before REAL NOT NULL DEFAULT 0,
    heartbeat_at REAL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, not_before, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at);
"""


class SqliteQueue(JobQueue):
    kind = "sqlite"

    def __init__(self, path: str | Path, settings: QueueSettings) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self._local = threading.local()
        with self._transaction() as connection:
            # Not executescript: it commits the open transaction first.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)

    # -- connections -----------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
        return connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def check(self) -> None:
        self._connection().execute("SELECT 1 FROM jobs LIMIT 1").fetchall()

    # -- records ----------------------------------------------------------------

    @staticmethod
    def _write(connection: sqlite3.Connection, record: JobRecord) -> None:
        connection.execute(
            "UPDATE jobs SET status=?, not_before=?, heartbeat_at=?, record=? WHERE id=?",
            (record.status, record.not_before, record.heartbeat_at, json.dumps(record.to_dict()), record.id),
        )

    @staticmethod
    def _read(connection: sqlite3.Connection, job_id: str) -> JobRecord | None:
        row = connection.execute("SELECT record FROM jobs WHERE id=?", (job_id,)).fetchone()
        return JobRecord.from_dict(json.loads(row[0])) if row else None

    def submit(self, spec: JobSpec) -> tuple[JobRecord, bool]:
        record = JobRecord(spec)
        with self._transaction() as connection:
            cursor = connection.execute(
                "INSERT OR IGNORE INTO jobs (id, status, created_at, not_before, record) VALUES (?, ?, ?, 0, ?)",
                (record.id, record.status, record.created_at, json.dumps(record.to_dict())),
            )
            if cursor.rowcount == 1:
                return record, True
            existing = self._read(connection, spec.job_id)
        assert existing is not None
        return existing, False

    def get(self, job_id: str) -> JobRecord | None:
        return self._read(self._connection(), job_id)

    def list_jobs(self, limit: int = 500) -> list[JobRecord]:
        rows = self._connection().execute(
            "SELECT record FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,)
        ).fetchall()
        return [JobRecord.from_dict(json.loads(row[0])) for row in rows]

    def update_running(self, job_id: str, worker: str, change: Callable[[JobRecord], None]) -> JobRecord | None:
        with self._transaction() as connection:
            record = self._read(connection, job_id)
            if record is None or record.status != RUNNING or record.worker != worker:
                return None
            change(record)
            self._write(connection, record)
            return record

    # -- claiming -----------------------------------------------------------------

    def start(self, job_id: str, worker: str) -> JobRecord | None:
        with self._transaction() as connection:
            record = self._read(connection, job_id)
            if record is None or record.status != QUEUED:
                return None
            mark_running(record, worker)
            self._write(connection, record)
            return record

    def claim(self, worker: str) -> JobRecord | None:
        """Reclaim stale jobs, then mark the oldest due queued job as running on `worker`."""
        now = time.time()
        with self._transaction() as connection:
            self._reclaim(connection, now)
            row = connection.execute(
                "SELECT id FROM jobs WHERE status=? AND not_before<=? ORDER BY created_at LIMIT 1",
                (QUEUED, now),
            ).fetchone()
            if row is None:
                return None
            record = self._read(connection, row[0])
            assert record is not None
            mark_running(record, worker)
            self._write(connection, record)
            return record

    def heartbeat(self, job_ids: list[str], worker: str) -> None:
        if not job_ids:
            return
        now = time.time()
        with self._transaction() as connection:
            for job_id in job_ids:
                record = self._read(connection, job_id)
                if record is not None and record.status == RUNNING and record.worker == worker:
                    record.heartbeat_at = now
                    self._write(connection, record)

    def reclaim_stale(self) -> list[str]:
        """Requeue running jobs whose worker stopped renewing its lease; return their ids."""
        with self._transaction() as connection:
            return self._reclaim(connection, time.time())

    def _reclaim(self, connection: sqlite3.Connection, now: float) -> list[str]:
        rows = connection.execute(
            "SELECT id FROM jobs WHERE status=? AND (heartbeat_at IS NULL OR heartbeat_at<?)",
            (RUNNING, now - self.settings.lease_seconds),
        ).fetchall()
        reclaimed = []
        for (job_id,) in rows:
            record = self._read(connection, job_id)
            assert record is not None
            log.warning(
                "job %s: worker %s sent no heartbeat for %.0f s; requeueing the job (attempt %d was lost)",
                job_id, record.worker, now - (record.heartbeat_at or 0), record.attempts,
            )
            record.status = QUEUED
            record.error = f"worker {record.worker} stopped during attempt {record.attempts}"
            record.worker = ""
            record.not_before = 0.0
            self._write(connection, record)
            reclaimed.append(job_id)
        return reclaimed
