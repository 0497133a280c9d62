"""The distributed queue: Dramatiq's Redis broker, with job records in Redis.

Why Dramatiq: its Redis broker acknowledges a message only when the actor
returns. Every broker process sends a heartbeat with each command, and the
delay-queue consumer polls about once a second even while all worker threads
are busy (read in dramatiq 2.2.1's worker and Redis broker). When a worker is
killed, its heartbeat stops. Once it is older than `heartbeat_timeout`,
Dramatiq's maintenance moves the messages that worker had not acknowledged
back to the queue. A job of any length therefore
stays with a live worker, and only a dead worker's job is run again. Celery's
Redis transport redelivers any message not acknowledged within its visibility
timeout, so a job longer than that timeout runs twice while the first run is
still alive. Huey does not acknowledge messages, so a killed worker's job is lost.

Each job record is one field of the hash `<namespace>:jobs`, and a sorted set
`<namespace>:jobs:created` orders them. A job is sent to Dramatiq only when
`HSETNX` created its record, which is what deduplicates deliveries.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

from hubquant.bot.jobs import FINISHED, RUNNING, JobRecord, JobSpec, mark_running
from hubquant.bot.queues import JobQueue, QueueSettings
from hubquant.errors import UsageError

log = logging.getLogger(__name__)

QUEUE_NAME = "jobs"
ACTOR_NAME = "hubquant_bot_job"
# Dramatiq interrupts an actor after this long (TimeLimit middleware; its default is 10 minutes).
JOB_TIME_LIMIT_MS = 24 * 3600 * 1000


def _import_dramatiq():
    try:
        import dramatiq
        import redis
        from dramatiq.brokers.redis import RedisBroker
    except ImportError as error:
        raise UsageError(
            f"the Redis queue needs the bot extra ({error.name} is missing); "
            "install it with: pip install 'hubquant[bot]'"
        ) from None
    return dramatiq, redis, RedisBroker


class RedisQueue(JobQueue):
    kind = "redis"

    def __init__(self, url: str, settings: QueueSettings) -> None:
        dramatiq, redis, RedisBroker = _import_dramatiq()
        from dramatiq.middleware import Retries, ShutdownNotifications, TimeLimit

        self.url = url
        self.settings = settings
        self.redis = redis.Redis.from_url(url)
        self._jobs_key = f"{settings.namespace}:jobs"
        self._created_key = f"{settings.namespace}:jobs:created"
        self.broker = RedisBroker(
            url=url,
            namespace=f"{settings.namespace}:dramatiq",
            heartbeat_timeout=int(settings.heartbeat_timeout_seconds * 1000),
            maintenance_chance=max(1, int(settings.maintenance_chance * 1_000_000)),
            middleware=[
                TimeLimit(time_limit=JOB_TIME_LIMIT_MS),
                ShutdownNotifications(),
                # The runner decides about retries and requests one by raising dramatiq.Retry.
                Retries(max_retries=None, retry_when=lambda retries, error: isinstance(error, dramatiq.Retry)),
            ],
        )
        self._handler: Callable[[str], None] | None = None
        self.actor = dramatiq.Actor(
            self._perform,
            broker=self.broker,
            actor_name=ACTOR_NAME,
            queue_name=QUEUE_NAME,
            priority=0,
            options={"time_limit": JOB_TIME_LIMIT_MS},
        )

    def _perform(self, job_id: str) -> None:
        if self._handler is None:
            raise RuntimeError("this process runs no bot worker; start one with 'hubquant bot worker'")
        self._handler(job_id)

    # -- records ----------------------------------------------------------------

    def submit(self, spec: JobSpec) -> tuple[JobRecord, bool]:
        record = JobRecord(spec)
        # One round trip: ZADD NX keeps the first score, so it is harmless for a duplicate.
        pipe = self.redis.pipeline(transaction=False)
        pipe.hsetnx(self._jobs_key, record.id, json.dumps(record.to_dict()))
        pipe.zadd(self._created_key, {record.id: record.created_at}, nx=True)
        created, _ = pipe.execute()
        if not created:
            existing = self.get(record.id)
            assert existing is not None
            return existing, False
        # NOTE: a crash between HSETNX and send leaves a queued record without a message;
        # nothing requeues it yet.
        self.actor.send(record.id)
        return record, True

    def get(self, job_id: str) -> JobRecord | None:
        raw = self.redis.hget(self._jobs_key, job_id)
        return JobRecord.from_dict(json.loads(raw)) if raw else None

    def list_jobs(self, limit: int = 500) -> list[JobRecord]:
        ids = self.redis.zrevrange(self._created_key, 0, limit - 1)
        if not ids:
            return []
        raws = self.redis.hmget(self._jobs_key, ids)
        return [JobRecord.from_dict(json.loads(raw)) for raw in raws if raw]

    def _change(self, job_id: str, change: Callable[[JobRecord], bool]) -> JobRecord | None:
        """Apply `change` atomically (WATCH/MULTI); it returns False to leave the record as it was."""
        result: list[JobRecord | None] = [None]

        def transaction(pipe) -> None:
            raw = pipe.hget(self._jobs_key, job_id)
            result[0] = None
            if not raw:
                return
            record = JobRecord.from_dict(json.loads(raw))
            if not change(record):
                return
            pipe.multi()
            pipe.hset(self._jobs_key, job_id, json.dumps(record.to_dict()))
            result[0] = record

        self.redis.transaction(transaction, self._jobs_key)
        return result[0]

    def update_running(self, job_id: str, worker: str, change: Callable[[JobRecord], None]) -> JobRecord | None:
        def guarded(record: JobRecord) -> bool:
            if record.status != RUNNING or record.worker != worker:
                return False
            change(record)
            return True

        return self._change(job_id, guarded)

    def start(self, job_id: str, worker: str) -> JobRecord | None:
        def begin(record: JobRecord) -> bool:
            if record.status in FINISHED:
                return False
            if record.status == RUNNING:
                # Dramatiq redelivers a message only when its worker's heartbeat stopped.
                log.warning("job %s: taking over from worker %s, which stopped during attempt %d",
                            job_id, record.worker, record.attempts)
            mark_running(record, worker)
            return True

        return self._change(job_id, begin)

    def check(self) -> None:
        self.redis.ping()

    # -- workers ----------------------------------------------------------------

    def run_worker(self, handler: Callable[[str], None], concurrency: int, stop: threading.Event) -> None:
        """Consume jobs with `concurrency` threads until `stop` is set."""
        from dramatiq import Worker

        self._handler = handler
        worker = Worker(self.broker, queues={QUEUE_NAME}, worker_threads=concurrency, worker_timeout=1000)
        # Dramatiq prefetches twice the thread count by default; a prefetched job waits
        # behind a running one while another worker may be idle.
        worker.queue_prefetch = concurrency
        worker.start()
        try:
            stop.wait()
        finally:
            # Running jobs get a minute to finish; after that their messages stay
            # unacknowledged and another worker runs them again.
            worker.stop(timeout=60_000)

    def close(self) -> None:
        self.broker.close()
        self.redis.close()
