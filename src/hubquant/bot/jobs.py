"""Jobs of the bot: the work a delivery requests, and the record a queue keeps of it.

A job is identified by its source, the source commit, the targets and the
namespace it publishes to. Two deliveries that ask for the same four things are
the same job, which is how the queues deduplicate Hub webhooks (the Hub delivers
each event at least once) and overlapping events of one push.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
# The job ran and found nothing to build: no config.json yet, or the source is itself a release.
SKIPPED = "skipped"
FINISHED = (DONE, FAILED, SKIPPED)


@dataclass(frozen=True)
class JobSpec:
    """The work a rule requests: quantize `source` at `sha` to `targets`."""

    source: str
    sha: str
    targets: tuple[str, ...]
    namespace: str | None = None
    # None follows the source's visibility, as `hubquant run` does without --public/--private.
    public: bool | None = None
    private_source: bool = False
    rule: str = ""
    event: str = ""
    webhook_id: str = ""

    @property
    def job_id(self) -> str:
        key = json.dumps([self.source, self.sha, sorted(self.targets), self.namespace or ""])
        return hashlib.sha256(key.encode()).hexdigest()[:24]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["targets"] = list(self.targets)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> JobSpec:
        values = dict(data)
        values["targets"] = tuple(values["targets"])
        return cls(**values)


@dataclass
class JobRecord:
    """A job as the queue stores it. Times are Unix seconds; `stage` is the last pipeline step."""

    spec: JobSpec
    status: str = QUEUED
    attempts: int = 0
    stage: str = ""
    worker: str = ""
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    heartbeat_at: float | None = None
    not_before: float = 0.0
    result: dict = field(default_factory=dict)
    error: str = ""
    # Every worker that started the job, in order; a job that a dead worker left lists two.
    runs: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.spec.job_id

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else time.time()
        return max(0.0, end - self.started_at)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["spec"] = self.spec.to_dict()
        data["id"] = self.id
        data["duration"] = self.duration
        return data

    @classmethod
    def from_dict(cls, data: dict) -> JobRecord:
        values = {key: value for key, value in data.items() if key not in ("id", "duration")}
        values["spec"] = JobSpec.from_dict(values["spec"])
        return cls(**values)


def mark_running(record: JobRecord, worker: str) -> None:
    """Start a new attempt of `record` on `worker`."""
    now = time.time()
    record.status = RUNNING
    record.worker = worker
    record.attempts += 1
    record.runs.append(worker)
    record.started_at = now
    record.finished_at = None
    record.heartbeat_at = now
    record.stage = ""
