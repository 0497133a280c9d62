"""Running one job: checks, resource limits, the pipeline, and the retry decision.

Publishing is one commit per release repo, and a re-run on the same source sha
is "up to date", so running a job again after a worker died publishes nothing
twice and nothing half. Each attempt works in its own folder, removed when the
attempt ends, whatever its outcome.
"""

from __future__ import annotations

import fcntl
import importlib
import logging
import shlex
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from hubquant.bot.config import WorkerSettings
from hubquant.bot.jobs import DONE, FAILED, SKIPPED, JobRecord
from hubquant.cli.logs import redact, register_secret
from hubquant.errors import HubquantError, ResourceError, TransientError
from hubquant.progress import Reporter

log = logging.getLogger(__name__)

JOB_DIR_PREFIX = "job-"
LOCK_FILE = ".lock"


@dataclass
class Outcome:
    """The end of an attempt: a final status, or `retry_in` seconds until the next attempt."""

    status: str
    result: dict = field(default_factory=dict)
    error: str = ""
    retry_in: float | None = None


class StageReporter(Reporter):
    """Records the latest pipeline step of a job through `on_stage`."""

    def __init__(self, job_id: str, on_stage) -> None:
        super().__init__()
        self.job_id = job_id
        self._on_stage = on_stage

    def on_step(self, key: str, state: str, reason: str) -> None:
        detail = f" ({reason})" if reason else ""
        log.info("job %s: %s: %s%s", self.job_id, key, state, detail)
        self._on_stage(state)

    def on_message(self, text: str) -> None:
        log.info("job %s: %s", self.job_id, text)


class Budget:
    """Disk and memory that the running jobs of this worker have reserved."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self.disk = 0
        self.memory = 0

    def reserve(self, disk: int, memory: int) -> bool:
        with self._lock:
            limit_disk = self.settings.max_disk_bytes
            limit_memory = self.settings.max_memory_bytes
            if limit_disk is not None and self.disk + disk > limit_disk:
                return False
            if limit_memory is not None and self.memory + memory > limit_memory:
                return False
            self.disk += disk
            self.memory += memory
            return True

    def free(self, disk: int, memory: int) -> None:
        with self._lock:
            self.disk -= disk
            self.memory -= memory


class Deferred(Exception):
    """The job fits this worker's limits, but not next to the jobs running now."""


class JobRunner:
    def __init__(self, settings: WorkerSettings, endpoint: str, token: str | None) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.token = token
        self.budget = Budget(settings)
        register_secret(token)
        root = settings.work_dir or Path(tempfile.gettempdir()) / "hubquant-bot"
        self.work_root = Path(root)
        self.work_root.mkdir(parents=True, exist_ok=True)

    def execute(self, record: JobRecord, on_stage) -> Outcome:
        """Run one attempt of `record`. Raises Deferred when the budget is taken by other jobs."""
        job_dir = Path(tempfile.mkdtemp(prefix=JOB_DIR_PREFIX, dir=self.work_root))
        # The lock shows clean_stale in other processes that this folder is in use.
        lock = (job_dir / LOCK_FILE).open("w")
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return self._execute(record, on_stage, job_dir)
        except Deferred:
            raise
        except Exception as error:  # noqa: BLE001 - every failure is classified and recorded
            return self._failure(record, error)
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)
            lock.close()

    def clean_stale(self) -> list[Path]:
        """Remove job folders that no live process has locked (left by a killed worker)."""
        removed = []
        for folder in self.work_root.glob(f"{JOB_DIR_PREFIX}*"):
            try:
                with (folder / LOCK_FILE).open("a") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            except OSError:
                pass
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        if removed:
            log.info("removed %d job folder(s) left by stopped workers in %s", len(removed), self.work_root)
        return removed

    def _execute(self, record: JobRecord, on_stage, job_dir: Path) -> Outcome:
        from huggingface_hub import HfApi

        from hubquant.pipeline import JobRequest, run_job
        from hubquant.planning import make_plan

        spec = record.spec
        api = HfApi(endpoint=self.endpoint, token=self.token)
        files = [sibling.rfilename for sibling in api.model_info(spec.source, revision=spec.sha).siblings or []]
        if "config.json" not in files:
            return Outcome(SKIPPED, error=f"{spec.source} has no config.json at {spec.sha[:12]}; a later push that adds one starts a new job")
        if "hubquant.json" in files:
            return Outcome(SKIPPED, error=f"{spec.source} is a hubquant release (it contains hubquant.json)")

        request = JobRequest(
            source=f"{spec.source}@{spec.sha}",
            targets=list(spec.targets),
            endpoint=self.endpoint,
            token=self.token,
            push=True,
            namespace=spec.namespace,
            public=spec.public,
            output_dir=job_dir / "staged",
            work_dir=job_dir,
            threads=self.settings.threads,
            command=self._command(record),
            # An earlier attempt that stopped after creating the repo left it empty.
            reuse_empty_repo=record.attempts > 1,
        )
        plan = make_plan(request)
        disk, memory = int(plan["estimated_disk_bytes"]), int(plan["estimated_memory_bytes"])
        self._check_limits(disk, memory)
        if not self.budget.reserve(disk, memory):
            raise Deferred(f"needs {disk / 1e9:.1f} GB disk and {memory / 1e9:.1f} GB memory next to running jobs")
        try:
            result = run_job(request, StageReporter(record.id, on_stage))
        finally:
            self.budget.free(disk, memory)

        releases = [
            {
                "repo_id": release.repo_id,
                "url": release.url,
                "status": release.status,
                "targets": release.targets,
                "files": release.files,
                "failed": release.failed,
            }
            for release in result.releases
        ]
        summary = {"sha": result.sha, "releases": releases}
        if result.ok:
            return Outcome(DONE, summary)
        reasons = "; ".join(f"{target}: {reason}" for release in result.releases for target, reason in release.failed.items())
        return Outcome(FAILED, summary, redact(reasons or "no release was published"))

    def _check_limits(self, disk: int, memory: int) -> None:
        limit_disk, limit_memory = self.settings.max_disk_bytes, self.settings.max_memory_bytes
        if limit_disk is not None and disk > limit_disk:
            raise ResourceError(
                f"the job needs about {disk / 1e9:.1f} GB of disk and this worker allows "
                f"{limit_disk / 1e9:.1f} GB (worker.max_disk_gb); run it on a larger worker"
            )
        if limit_memory is not None and memory > limit_memory:
            raise ResourceError(
                f"the job needs about {memory / 1e9:.1f} GB of memory and this worker allows "
                f"{limit_memory / 1e9:.1f} GB (worker.max_memory_gb); run it on a larger worker"
            )

    def _failure(self, record: JobRecord, error: Exception) -> Outcome:
        message = redact(f"{type(error).__name__}: {error}")
        wait = transient_wait(error)
        if wait is None:
            log.error("job %s failed permanently on attempt %d: %s", record.id, record.attempts, message)
            return Outcome(FAILED, error=message)
        if record.attempts >= self.settings.max_attempts:
            log.error("job %s failed after %d attempts: %s", record.id, record.attempts, message)
            return Outcome(FAILED, error=f"{message} (gave up after {record.attempts} attempts)")
        backoff = min(self.settings.max_backoff_seconds, self.settings.backoff_seconds * 2 ** (record.attempts - 1))
        delay = max(backoff, wait)
        log.warning("job %s: attempt %d failed with a transient error, retrying in %.0f s: %s",
                    record.id, record.attempts, delay, message)
        return Outcome(FAILED, error=message, retry_in=delay)

    @staticmethod
    def _command(record: JobRecord) -> str:
        spec = record.spec
        words = ["hubquant", "run", f"{spec.source}@{spec.sha}"]
        words += [f"--target={target}" for target in spec.targets]
        words.append("--push")
        if spec.namespace:
            words.append(f"--namespace={spec.namespace}")
        if spec.public is not None:
            words.append("--public" if spec.public else "--private")
        return shlex.join(words)


def transient_wait(error: BaseException) -> float | None:
    """Return the minimum wait before a retry when `error` is transient, else None.

    Transient: hubquant's TransientError, Hub responses 5xx and 429 (honouring
    Retry-After), and connection failures or timeouts.
    """
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(error, TransientError):
        return 0.0
    if isinstance(error, HfHubHTTPError):
        response = error.response
        status = response.status_code if response is not None else None
        if status is not None and (status >= 500 or status == 429):
            retry_after = response.headers.get("Retry-After", "") if response is not None else ""
            return float(retry_after) if retry_after.isdigit() else 0.0
        return None
    if isinstance(error, HubquantError):
        return None
    if isinstance(error, (ConnectionError, TimeoutError)):
        return 0.0
    if isinstance(error, _transport_errors()):
        return 0.0
    return None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Return the connection and timeout error classes of the HTTP libraries in use.

    huggingface_hub 2.x uses httpx2, a fork with its own exception classes.
    httpx's classes are included for other callers.
    """
    found = []
    for name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        found.append(module.TransportError)
    return tuple(found)
