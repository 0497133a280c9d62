"""The bot's configuration file (YAML): Hub, receiver, queue, worker and rules.

Secrets never go in the file: it names the environment variables that hold the
Hub token, the webhook secret and the operator token. `bot/bot.example.yaml`
shows every key with its default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hubquant.bot.queues import QueueSettings
from hubquant.bot.rules import DEFAULT_EXCLUDE, EVENTS, VISIBILITIES, Rule
from hubquant.errors import UsageError

DEFAULT_ENDPOINT = "https://huggingface.co"


@dataclass
class WorkerSettings:
    """Limits and retry policy of one worker process."""

    concurrent_jobs: int = 1
    # Jobs whose estimated peak disk or memory exceeds these fail at once; None means no limit.
    max_disk_bytes: int | None = None
    max_memory_bytes: int | None = None
    # Each job gets a folder here, removed after the job whatever its outcome (default: system temp).
    work_dir: Path | None = None
    # Attempts of a job that fails with transient errors (network, Hub 5xx, 429) before it fails.
    max_attempts: int = 5
    backoff_seconds: float = 30.0
    max_backoff_seconds: float = 1800.0
    # CPU threads per job for quantizing and validation (0: all cores).
    threads: int = 0


@dataclass
class BotConfig:
    rules: list[Rule]
    endpoint: str = DEFAULT_ENDPOINT
    token_env: str = "HF_TOKEN"
    secret_env: str = "HUBQUANT_WEBHOOK_SECRET"
    operator_token_env: str = "HUBQUANT_BOT_OPERATOR_TOKEN"
    # Hub payloads are a few kilobytes; bigger bodies get a 413.
    max_body_bytes: int = 256 * 1024
    queue_url: str = "sqlite:///hubquant-bot/jobs.db"
    queue: QueueSettings = field(default_factory=QueueSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    watch_interval_seconds: float = 300.0
    watch_state: Path = Path("hubquant-bot/watch-state.json")

    def token(self) -> str | None:
        return os.environ.get(self.token_env) or None

    def secret(self) -> str:
        value = os.environ.get(self.secret_env)
        if not value:
            raise UsageError(f"the webhook secret is missing: set {self.secret_env} to the secret of the Hub webhook")
        return value

    def operator_token(self) -> str | None:
        return os.environ.get(self.operator_token_env) or None


def load_config(path: Path) -> BotConfig:
    """Read and check a configuration file; raise UsageError naming the invalid key."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise UsageError(f"cannot read the bot configuration {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise UsageError(f"invalid YAML in {path}: {error}") from None
    return parse_config(data or {}, base=Path(path).resolve().parent)


def parse_config(data: dict, base: Path = Path(".")) -> BotConfig:
    """Build a BotConfig from parsed YAML; relative paths are taken from `base`."""
    _known(data, "", {"hub", "receiver", "queue", "worker", "watch", "rules"})
    hub = _section(data, "hub", {"endpoint", "token_env"})
    receiver = _section(data, "receiver", {"secret_env", "operator_token_env", "max_body_bytes"})
    queue = _section(data, "queue", {"url", "lease_seconds", "heartbeat_timeout_seconds", "maintenance_chance", "namespace"})
    worker = _section(data, "worker", {
        "concurrent_jobs", "max_disk_gb", "max_memory_gb", "work_dir", "max_attempts",
        "backoff_seconds", "max_backoff_seconds", "threads",
    })
    watch = _section(data, "watch", {"interval_seconds", "state"})

    rules_data = data.get("rules")
    if not isinstance(rules_data, list) or not rules_data:
        raise UsageError("the configuration needs a non-empty 'rules' list")
    rules = [_rule(item, index) for index, item in enumerate(rules_data)]
    names = [rule.name for rule in rules]
    if len(set(names)) != len(names):
        raise UsageError(f"rule names must be unique, got {', '.join(names)}")

    defaults = QueueSettings()
    config = BotConfig(
        rules=rules,
        endpoint=str(hub.get("endpoint") or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/"),
        token_env=str(hub.get("token_env", "HF_TOKEN")),
        secret_env=str(receiver.get("secret_env", "HUBQUANT_WEBHOOK_SECRET")),
        operator_token_env=str(receiver.get("operator_token_env", "HUBQUANT_BOT_OPERATOR_TOKEN")),
        max_body_bytes=_positive_int(receiver, "receiver.max_body_bytes", 256 * 1024),
        queue_url=_queue_url(str(queue.get("url", "sqlite:///hubquant-bot/jobs.db")), base),
        queue=QueueSettings(
            lease_seconds=_positive(queue, "queue.lease_seconds", defaults.lease_seconds),
            heartbeat_timeout_seconds=_positive(queue, "queue.heartbeat_timeout_seconds", defaults.heartbeat_timeout_seconds),
            maintenance_chance=_positive(queue, "queue.maintenance_chance", defaults.maintenance_chance),
            namespace=str(queue.get("namespace", defaults.namespace)),
        ),
        worker=WorkerSettings(
            concurrent_jobs=_positive_int(worker, "worker.concurrent_jobs", 1),
            max_disk_bytes=_gigabytes(worker, "worker.max_disk_gb"),
            max_memory_bytes=_gigabytes(worker, "worker.max_memory_gb"),
            work_dir=base / worker["work_dir"] if worker.get("work_dir") else None,
            max_attempts=_positive_int(worker, "worker.max_attempts", 5),
            backoff_seconds=_positive(worker, "worker.backoff_seconds", 30.0),
            max_backoff_seconds=_positive(worker, "worker.max_backoff_seconds", 1800.0),
            threads=int(worker.get("threads", 0)),
        ),
        watch_interval_seconds=_positive(watch, "watch.interval_seconds", 300.0),
        watch_state=base / str(watch.get("state", "hubquant-bot/watch-state.json")),
    )
    if config.queue.maintenance_chance > 1:
        raise UsageError(f"queue.maintenance_chance must be at most 1, got {config.queue.maintenance_chance}")
    return config


def _rule(item: object, index: int) -> Rule:
    if not isinstance(item, dict):
        raise UsageError(f"rules[{index}] must be a mapping, got {item!r}")
    where = f"rules[{index}]"
    _known(item, where + ".", {
        "name", "owner", "repo_name", "repo_type", "events", "exclude", "extra_exclude",
        "allow_private", "targets", "hardware", "namespace", "visibility",
    })
    name = str(item.get("name") or f"rule-{index + 1}")
    owners = _patterns(item, "owner", where)
    if not owners:
        raise UsageError(f"{where} ({name}) needs an 'owner' pattern such as microsoft")
    events = _patterns(item, "events", where) or EVENTS
    unknown = [event for event in events if event not in EVENTS]
    if unknown:
        raise UsageError(f"{where} ({name}): unknown event {unknown[0]!r}; use {' or '.join(EVENTS)}")
    visibility = str(item.get("visibility", "source"))
    if visibility not in VISIBILITIES:
        raise UsageError(f"{where} ({name}): visibility must be one of {', '.join(VISIBILITIES)}, got {visibility!r}")
    exclude = _patterns(item, "exclude", where) if "exclude" in item else DEFAULT_EXCLUDE
    exclude = exclude + _patterns(item, "extra_exclude", where)
    return Rule(
        name=name,
        owners=owners,
        names=_patterns(item, "repo_name", where) or ("*",),
        repo_type=str(item.get("repo_type", "model")),
        events=events,
        exclude=exclude,
        allow_private=bool(item.get("allow_private", False)),
        targets=_targets(item, where, name),
        namespace=str(item["namespace"]) if item.get("namespace") else None,
        visibility=visibility,
    )


def _targets(item: dict, where: str, name: str) -> tuple[str, ...]:
    from hubquant.backends import backend_names
    from hubquant.hardware import targets_for
    from hubquant.targets import parse_targets

    chosen = list(_patterns(item, "targets", where))
    hardware = list(_patterns(item, "hardware", where))
    if hardware:
        chosen += targets_for(hardware, backends=backend_names())
    if not chosen:
        raise UsageError(f"{where} ({name}) needs 'targets' (such as gguf:Q4_K_M) or 'hardware' (such as phone)")
    return tuple(sorted({str(target) for target in parse_targets(chosen)}))


def _patterns(item: dict, key: str, where: str) -> tuple[str, ...]:
    value = item.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(entry, str) for entry in value):
        return tuple(value)
    raise UsageError(f"{where}.{key} must be a string or a list of strings, got {value!r}")


def _section(data: dict, key: str, allowed: set[str]) -> dict:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise UsageError(f"'{key}' must be a mapping, got {value!r}")
    _known(value, key + ".", allowed)
    return value


def _known(data: dict, prefix: str, allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            raise UsageError(f"unknown configuration key {prefix}{key}; known keys: {', '.join(sorted(allowed))}")


def _positive(data: dict, path: str, default: float) -> float:
    value = data.get(path.rsplit(".", 1)[-1], default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise UsageError(f"{path} must be a positive number, got {value!r}")
    return float(value)


def _positive_int(data: dict, path: str, default: int) -> int:
    value = data.get(path.rsplit(".", 1)[-1], default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UsageError(f"{path} must be a positive integer, got {value!r}")
    return value


def _gigabytes(data: dict, path: str) -> int | None:
    if data.get(path.rsplit(".", 1)[-1]) is None:
        return None
    return int(_positive(data, path, 0) * 1e9)


def _queue_url(url: str, base: Path) -> str:
    # sqlite:///relative/path is taken from the configuration's folder; sqlite:////abs is absolute.
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return f"sqlite:///{base / url.removeprefix('sqlite:///')}"
    return url
