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

A record and its entry in `<namespace>:jobs:unsent` are created in one script,
and the entry is removed once Dramatiq has the message. A receiver that dies
in between leaves the entry, and a worker sends it after a grace period
(`resend_unsent`): so a job whose record exists always gets its message, even
though later deliveries of the same commit count as duplicates.

A second message for one job (a slow receiver and a worker both sending it)
is harmless: `start` rejects a job that another worker is running with a fresh
heartbeat (`JobHeld`), and the worker sends that message back with a delay.
Workers renew `heartbeat_at` of their running jobs (`heartbeat`), so a job
that runs for hours keeps its worker while that worker lives.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

from hubquant.bot.jobs import FINISHED, QUEUED, RUNNING, JobRecord, JobSpec, mark_running
from hubquant.bot.queues import JobHeld, JobQueue, QueueSettings
from hubquant.errors import UsageError

log = logging.getLogger(__name__)

QUEUE_NAME = "jobs"
ACTOR_NAME = "hubquant_bot_job"
# Dramatiq interrupts an actor after this long (TimeLimit middleware; its default is 10 minutes).
JOB_TIME_LIMIT_MS = 24 * 3600 * 1000

# KEYS: jobs hash, created zset, unsent zset. ARGV: job id, record JSON, created time.
# Returns 1 when it created the record, 0 when the job existed.
_CREATE_SCRIPT = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return 1
"""


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
        self._unsent_key = f"{settings.namespace}:jobs:unsent"
        self._create = self.redis.register_script(_CREATE_SCRIPT)
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
        record = self._create_record(spec)
        if record is None:
            existing = self.get(spec.job_id)
            assert existing is not None
            return existing, False
        self.actor.send(record.id)
        self.redis.zrem(self._unsent_key, record.id)
        return record, True

    def _create_record(self, spec: JobSpec) -> JobRecord | None:
        """Store a new queued record marked unsent, or return None when the job exists."""
        record = JobRecord(spec)
        keys = [self._jobs_key, self._created_key, self._unsent_key]
        created = self._create(keys=keys, args=[record.id, json.dumps(record.to_dict()), record.created_at])
        return record if created else None

    def resend_unsent(self, grace_seconds: float) -> list[str]:
        """Send the jobs still marked unsent after `grace_seconds` and return their ids.

        Such a job's receiver stopped before sending it. Removing the mark decides
        which caller sends, so each job is sent once.
        """
        sent = []
        cutoff = time.time() - grace_seconds
        for raw_id in self.redis.zrangebyscore(self._unsent_key, "-inf", cutoff):
            if not self.redis.zrem(self._unsent_key, raw_id):
                continue
            job_id = raw_id.decode()
            record = self.get(job_id)
            if record is None or record.status != QUEUED:
                continue
            log.warning("job %s: its message was never sent because the receiver stopped, so sending it now", job_id)
            self.actor.send(job_id)
            sent.append(job_id)
        return sent

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
        held_by: list[str] = []

        def begin(record: JobRecord) -> bool:
            held_by.clear()
            if record.status in FINISHED:
                return False
            if record.status == RUNNING:
                age = time.time() - (record.heartbeat_at or 0.0)
                if age < self.settings.heartbeat_timeout_seconds:
                    held_by.append(record.worker)
                    return False
                log.warning("job %s: taking over from worker %s, silent for %.0f s during attempt %d",
                            job_id, record.worker, age, record.attempts)
            mark_running(record, worker)
            return True

        started = self._change(job_id, begin)
        if held_by:
            raise JobHeld(job_id, held_by[0])
        return started

    def heartbeat(self, job_ids: list[str], worker: str) -> None:
        now = time.time()

        def renew(record: JobRecord) -> None:
            record.heartbeat_at = now

        for job_id in job_ids:
            self.update_running(job_id, worker, renew)

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
