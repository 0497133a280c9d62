"""The Space's job queue: limits, one worker process per job, per-user visibility.

A job belongs to the Hub user who started it. Only that user can list it, open
it or cancel it. Its token lives in this process's memory from `submit` until
the job ends, and reaches the worker through a pipe. Job records are saved
without the token, so a restarted Space can still show them: jobs that were
queued or running end as "interrupted" with a message to start them again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hubquant.cli.logs import TOKEN_PATTERN
from hubquant.errors import UsageError
from hubquant.pipeline import HUB_FILE_LIMIT
from hubquant.progress import DONE, FAILED, QUEUED
from hubquant.space.config import SpaceConfig

log = logging.getLogger(__name__)

# Job states. A job that ran to its end is "done" when every target was
# published, else "failed", and the row of each target shows which ones failed.
JOB_QUEUED = "queued"
JOB_RUNNING = "running"
JOB_DONE = "done"
JOB_FAILED = "failed"
JOB_CANCELLED = "cancelled"
JOB_INTERRUPTED = "interrupted"
ACTIVE_STATES = (JOB_QUEUED, JOB_RUNNING)

RESTART_MESSAGE = (
    "The Space restarted while this job was {state}, so the job stopped. "
    "Start it again: targets that were already published are kept and not built twice."
)
MAX_LOG_LINES = 400
# Seconds between SIGTERM and SIGKILL when a job is stopped.
KILL_GRACE_S = 10.0
# Variables the worker must not inherit: it may use only the signed-in user's token.
_SECRET_VARIABLES = re.compile(r"^(HF_TOKEN.*|HUGGING_FACE_HUB_TOKEN|OAUTH_CLIENT_SECRET|OAUTH_CLIENT_ID)$")


class LimitExceeded(UsageError):
    """A request over one of the Space's queue limits; nothing was started."""


@dataclass
class Job:
    """One request of one user, with everything the status page shows."""

    id: str
    owner: str
    source: str
    targets: list[str]
    namespace: str
    public: bool | None
    repo_name: str | None
    hardware: list[str]
    # Largest single file; the GGUF backend splits larger ones.
    max_file_bytes: int = HUB_FILE_LIMIT
    state: str = JOB_QUEUED
    message: str = ""
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    # Target -> {"state": ..., "reason": ...}, in the order of `targets`.
    rows: dict[str, dict] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    # Label -> [done, total]; total is None where unknown.
    progress: dict[str, list] = field(default_factory=dict)
    releases: list[dict] = field(default_factory=list)
    visibility_note: str = ""
    # Held only while the job is queued or running; never saved.
    token: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        for target in self.targets:
            self.rows.setdefault(target, {"state": QUEUED, "reason": ""})

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def to_dict(self) -> dict:
        data = asdict(self)
        del data["token"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Job:
        data = {key: value for key, value in data.items() if key != "token"}
        return cls(**data)


class JobManager:
    """Queues jobs, runs each in a worker process and records what it reports."""

    def __init__(self, config: SpaceConfig, *, worker_command: list[str] | None = None) -> None:
        self.config = config
        self._worker_command = worker_command or [sys.executable, "-m", "hubquant.space.worker"]
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        self._queue: list[str] = []
        self._processes: dict[str, subprocess.Popen] = {}
        self._stop_reasons: dict[str, tuple[str, str]] = {}
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._jobs_dir = Path(config.state_dir) / "jobs"
        self._jobs_dir.mkdir(parents=True, exist_ok=True)
        self._load()

    # -- requests --------------------------------------------------------------

    def submit(
        self,
        *,
        owner: str,
        token: str,
        source: str,
        targets: list[str],
        namespace: str,
        public: bool | None,
        repo_name: str | None = None,
        hardware: list[str] | None = None,
        max_file_bytes: int = HUB_FILE_LIMIT,
        source_bytes: Callable[[], int] | int | None = None,
    ) -> Job:
        """Queue a job, or raise LimitExceeded (or UsageError) without starting anything.

        `source_bytes` is the size of the source (or a function that reads it
        from the Hub with the user's token), checked against the size limit.
        """
        if not token:
            raise UsageError("sign in with your Hugging Face account first; jobs run with your account's access")
        if not targets:
            raise UsageError("no targets chosen: tick at least one kind of hardware or pick exact targets")
        self._check_capacity(owner)
        size = source_bytes() if callable(source_bytes) else source_bytes
        if size is not None and size > self.config.max_source_bytes:
            raise LimitExceeded(
                f"{source} is {size / 1e9:.3g} GB, over this Space's limit of "
                f"{self.config.max_source_bytes / 1e9:.3g} GB per source; run "
                "'hubquant run' on your own machine for larger models"
            )
        job = Job(
            id=secrets.token_hex(6),
            owner=owner,
            source=source,
            targets=list(targets),
            namespace=namespace,
            public=public,
            repo_name=repo_name or None,
            hardware=list(hardware or []),
            max_file_bytes=max_file_bytes,
        )
        job.token = token
        with self._lock:
            # Checked again: another request may have been queued meanwhile.
            self._check_capacity(owner)
            self._jobs[job.id] = job
            self._queue.append(job.id)
            position = len(self._queue)
            self._append_log(job, f"queued as job {job.id} (position {position} in the queue)")
            self._save(job)
            log.info("Job %s of %s queued: %s -> %s", job.id, owner, source, ", ".join(targets))
            self._dispatch()
        return job

    def _check_capacity(self, owner: str) -> None:
        with self._lock:
            mine = [job for job in self._jobs.values() if job.active and _same_user(job.owner, owner)]
            if len(mine) >= self.config.max_jobs_per_user:
                raise LimitExceeded(
                    f"you have {len(mine)} job(s) queued or running, and this Space allows "
                    f"{self.config.max_jobs_per_user} per user; wait until job {mine[0].id} "
                    "ends or cancel it, then start the new one"
                )
            if len(self._queue) >= self.config.max_queued_jobs:
                raise LimitExceeded(
                    f"the queue is full ({len(self._queue)} jobs waiting, the limit is "
                    f"{self.config.max_queued_jobs}); try again in a few minutes"
                )

    def jobs_for(self, owner: str) -> list[Job]:
        """Return the jobs of `owner`, newest first."""
        with self._lock:
            jobs = [job for job in self._jobs.values() if _same_user(job.owner, owner)]
        return sorted(jobs, key=lambda job: job.created_at, reverse=True)

    def get(self, job_id: str, owner: str) -> Job | None:
        """Return the job when it belongs to `owner`, else None (as for a missing job)."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or not _same_user(job.owner, owner):
            return None
        return job

    def cancel(self, job_id: str, owner: str) -> bool:
        """Cancel a queued or running job of `owner`; return False when there is none."""
        with self._lock:
            job = self.get(job_id, owner)
            if job is None or not job.active:
                return False
            if job.state == JOB_QUEUED:
                self._queue.remove(job.id)
                self._finish(job, JOB_CANCELLED, "cancelled before it started")
                return True
            self._stop_reasons[job.id] = (JOB_CANCELLED, "cancelled by its owner")
            process = self._processes.get(job.id)
        if process is not None:
            _stop_process(process)
        return True

    def close(self) -> None:
        """Stop every running worker; the jobs end as interrupted."""
        with self._lock:
            self._closed = True
            running = list(self._processes.items())
            for job_id, _ in running:
                self._stop_reasons[job_id] = (JOB_INTERRUPTED, "the Space stopped while this job ran; start it again")
        for _, process in running:
            _stop_process(process)
        for thread in list(self._threads):
            thread.join(timeout=KILL_GRACE_S + 5)

    # -- running ----------------------------------------------------------------

    def _dispatch(self) -> None:
        with self._lock:
            if self._closed:
                return
            while self._queue and len(self._processes) < self.config.max_running_jobs:
                job = self._jobs[self._queue.pop(0)]
                self._start(job)

    def _start(self, job: Job) -> None:
        workdir = Path(tempfile.mkdtemp(prefix=f"hubquant-space-{job.id}-", dir=self.config.work_dir))
        payload = {
            "source": job.source,
            "targets": job.targets,
            "endpoint": self.config.endpoint,
            "namespace": job.namespace,
            "public": job.public,
            "repo_name": job.repo_name,
            "work_dir": str(self.config.work_dir) if self.config.work_dir else None,
            "threads": self.config.threads,
            "max_file_bytes": job.max_file_bytes,
            "command": _command_line(job),
            "token": job.token,
        }

        try:
            process = subprocess.Popen(
                [*self._worker_command, "--parent-pid", str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=workdir,
                env=_worker_environment(workdir),
                start_new_session=True,
                text=True,
                bufsize=1,
            )
        except OSError as error:
            shutil.rmtree(workdir, ignore_errors=True)
            self._finish(job, JOB_FAILED, f"the worker process could not start: {error}")
            return

        job.state = JOB_RUNNING
        job.started_at = time.time()
        self._processes[job.id] = process
        self._append_log(job, "started")
        self._save(job)
        log.info("Job %s started (worker pid %d)", job.id, process.pid)
        thread = threading.Thread(target=self._supervise, args=(job, process, payload, workdir), name=f"job-{job.id}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _supervise(self, job: Job, process: subprocess.Popen, payload: dict, workdir: Path) -> None:
        outcome: dict = {}
        try:
            process.stdin.write(json.dumps(payload))
            process.stdin.close()
        except OSError as error:
            log.warning("Job %s: writing the request to the worker failed: %s", job.id, error)
        del payload
        stderr_thread = threading.Thread(target=self._read_log, args=(job, process.stderr), daemon=True)
        stderr_thread.start()
        timer = threading.Timer(self.config.job_timeout_s, self._time_out, args=(job, process))
        timer.daemon = True
        timer.start()
        try:
            for line in process.stdout:
                self._handle_event(job, line, outcome)
            process.wait()
        finally:
            timer.cancel()
            stderr_thread.join(timeout=5)
            shutil.rmtree(workdir, ignore_errors=True)
        with self._lock:
            self._processes.pop(job.id, None)
            stopped = self._stop_reasons.pop(job.id, None)
            if stopped is not None:
                self._finish(job, stopped[0], stopped[1])
            elif "result" in outcome:
                self._finish_with_result(job, outcome["result"])
            elif "error" in outcome:
                self._finish(job, JOB_FAILED, outcome["error"])
            else:
                self._finish(job, JOB_FAILED, f"the worker process ended with exit code {process.returncode} and no result")
            self._threads = [thread for thread in self._threads if thread is not threading.current_thread()]
            self._dispatch()

    def _time_out(self, job: Job, process: subprocess.Popen) -> None:
        minutes = self.config.job_timeout_s / 60
        with self._lock:
            self._stop_reasons.setdefault(job.id, (JOB_FAILED, f"timed out: the job ran past this Space's limit of {minutes:g} minutes"))
        log.warning("Job %s ran past %g minutes; stopping it", job.id, minutes)
        _stop_process(process)

    def _read_log(self, job: Job, stream) -> None:
        for line in stream:
            text = line.rstrip()
            if text:
                with self._lock:
                    self._append_log(job, text)

    def _handle_event(self, job: Job, line: str, outcome: dict) -> None:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            with self._lock:
                self._append_log(job, line.rstrip())
            return
        kind = event.get("event")
        with self._lock:
            if kind == "step":
                self._record_step(job, event["key"], event["state"], event.get("reason", ""))
            elif kind == "progress":
                job.progress[event["label"]] = [event["done"], event.get("total")]
            elif kind == "message":
                self._append_log(job, event["text"])
            elif kind == "result":
                outcome["result"] = event["result"]
            elif kind == "error":
                outcome["error"] = event["message"]
                self._append_log(job, f"error: {event['message']}")

    def _record_step(self, job: Job, key: str, state: str, reason: str) -> None:
        target = key.rsplit(" ", 1)[-1]
        detail = f" ({reason})" if reason else ""
        self._append_log(job, f"{key}: {state}{detail}")
        if target in job.rows:
            job.rows[target] = {"state": state, "reason": reason}
        else:
            # A step of the whole job, such as downloading the source.
            for row in job.rows.values():
                if row["state"] == QUEUED:
                    row["state"] = state
        self._save(job)

    def _finish_with_result(self, job: Job, result: dict) -> None:
        job.releases = result.get("releases", [])
        job.visibility_note = result.get("visibility_note", "")
        failures = 0
        for release in job.releases:
            for target in release.get("targets", []):
                if target in job.rows and target not in release.get("failed", {}):
                    reason = "already published for this commit" if release.get("status") == "up to date" else ""
                    job.rows[target] = {"state": DONE, "reason": reason}
            for target, reason in release.get("failed", {}).items():
                failures += 1
                job.rows[target] = {"state": FAILED, "reason": reason}
        if failures:
            self._finish(job, JOB_FAILED, f"{failures} of {len(job.targets)} target(s) failed; the others were published")
        else:
            self._finish(job, JOB_DONE, "every target was published")

    def _finish(self, job: Job, state: str, message: str) -> None:
        with self._lock:
            job.token = None
            job.state = state
            job.message = message
            job.finished_at = time.time()
            for row in job.rows.values():
                if row["state"] not in (DONE, FAILED):
                    row["state"] = FAILED
                    row["reason"] = message
            self._append_log(job, f"{state}: {message}")
            self._save(job)
        log.info("Job %s of %s %s: %s", job.id, job.owner, state, message)

    def _append_log(self, job: Job, text: str) -> None:
        if job.token:
            text = text.replace(job.token, "***")
        text = TOKEN_PATTERN.sub("hf_***", text)
        job.log.append(f"{time.strftime('%H:%M:%S')} {text}")
        if len(job.log) > MAX_LOG_LINES:
            del job.log[: len(job.log) - MAX_LOG_LINES]

    # -- records ------------------------------------------------------------------

    def _save(self, job: Job) -> None:
        path = self._jobs_dir / f"{job.id}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(job.to_dict()))
        os.replace(temporary, path)

    def _load(self) -> None:
        for path in sorted(self._jobs_dir.glob("*.json")):
            try:
                job = Job.from_dict(json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as error:
                log.warning("Skipping unreadable job record %s: %s", path, error)
                continue
            self._jobs[job.id] = job
            if job.active:
                self._finish(job, JOB_INTERRUPTED, RESTART_MESSAGE.format(state=job.state))


def _same_user(first: str, second: str) -> bool:
    return first.lower() == second.lower()


def _worker_environment(workdir: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not _SECRET_VARIABLES.match(name)}
    # A private Hub cache: no token file of the Space's account is found there.
    env["HF_HOME"] = str(workdir / "hf-home")
    env["HF_HUB_DISABLE_IMPLICIT_TOKEN"] = "1"
    env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    return env


def _command_line(job: Job) -> str:
    import shlex

    words = ["hubquant", "run", job.source]
    words += [f"--target={target}" for target in job.targets]
    words += ["--push", f"--namespace={job.namespace}"]
    if job.public is True:
        words.append("--public")
    elif job.public is False:
        words.append("--private")
    if job.repo_name:
        words.append(f"--repo-name={job.repo_name}")
    return shlex.join(words)


def _stop_process(process: subprocess.Popen) -> None:
    """Send SIGTERM to the worker's process group, then SIGKILL after a grace period."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return

    def kill_later() -> None:
        try:
            process.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    threading.Thread(target=kill_later, daemon=True).start()
