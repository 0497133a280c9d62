"""`hubquant watch`: the bot's rules driven by polling the Hub instead of webhooks.

Each poll lists the models of every owner that a rule names literally and
compares each model's sha with the last poll. A model seen for the first time
is a "repo.create" event, and a new sha on a known model is a
"repo.content.update" of the main branch. Both go through the same rules and
queue as webhook deliveries. The shas are saved in a state file, so a restart
does not queue again what it has seen. The first poll without a state file only
records what exists, unless `backfill` is set.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path

from hubquant.bot.config import BotConfig
from hubquant.bot.jobs import JobRecord
from hubquant.bot.payload import MAIN_REF, SUPPORTED_VERSION, HubEvent, RefUpdate
from hubquant.bot.queues import JobQueue
from hubquant.bot.rules import CONTENT_UPDATE, REPO_CREATE, match_rules

log = logging.getLogger(__name__)

WATCH_ID = "watch"


class Watcher:
    def __init__(self, config: BotConfig, queue: JobQueue, *, state_path: Path | None = None, backfill: bool = False) -> None:
        from huggingface_hub import HfApi

        self.config = config
        self.queue = queue
        self.api = HfApi(endpoint=config.endpoint, token=config.token())
        self.state_path = Path(state_path or config.watch_state)
        self.backfill = backfill
        self.owners = sorted({owner for rule in config.rules for owner in rule.owners if not _is_pattern(owner)})
        skipped = sorted({owner for rule in config.rules for owner in rule.owners if _is_pattern(owner)})
        if skipped:
            log.warning("watch cannot list owners given as patterns (%s); name owners literally to watch them",
                        ", ".join(skipped))

    def _load_state(self) -> dict[str, str] | None:
        if not self.state_path.is_file():
            return None
        return json.loads(self.state_path.read_text())

    def _save_state(self, state: dict[str, str]) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.state_path.parent, prefix=".watch-")
        with os.fdopen(handle, "w") as file:
            json.dump(state, file, indent=1, sort_keys=True)
        os.replace(temporary, self.state_path)

    def poll_once(self) -> list[JobRecord]:
        """List the watched owners' models once; queue and return the new jobs."""
        state = self._load_state()
        first = state is None
        state = state or {}
        new_jobs = []
        for owner in self.owners:
            for model in self.api.list_models(author=owner, expand=["sha", "private"]):
                if model.sha is None:
                    continue
                previous = state.get(model.id)
                state[model.id] = model.sha
                if previous == model.sha or (first and not self.backfill):
                    continue
                event = HubEvent(
                    webhook_id=WATCH_ID,
                    version=SUPPORTED_VERSION,
                    scope="repo" if previous is None else "repo.content",
                    action="create" if previous is None else "update",
                    repo_type="model",
                    repo_id=model.id,
                    private=bool(model.private),
                    head_sha=model.sha,
                    updated_refs=None if previous is None else (RefUpdate(MAIN_REF, previous, model.sha),),
                )
                new_jobs += self._submit(event)
        self._save_state(state)
        if first and not self.backfill:
            log.info("watch: recorded %d existing model(s) of %s; later changes start jobs",
                     len(state), ", ".join(self.owners))
        return new_jobs

    def _submit(self, event: HubEvent) -> list[JobRecord]:
        assert event.name in (REPO_CREATE, CONTENT_UPDATE)
        specs, reasons = match_rules(self.config.rules, event)
        if not specs:
            log.info("watch: %s on %s matched no rule: %s", event.name, event.repo_id, "; ".join(reasons))
            return []
        queued = []
        for spec in specs:
            record, new = self.queue.submit(spec)
            log.info("watch: %s on %s at %s: job %s %s", event.name, event.repo_id, spec.sha[:12], record.id,
                     "queued" if new else "already queued")
            if new:
                queued.append(record)
        return queued

    def run(self, stop: threading.Event, interval: float) -> None:
        """Poll every `interval` seconds until `stop` is set; a failed poll is logged and retried."""
        log.info("watch: polling %s every %.0f s", ", ".join(self.owners) or "no owner", interval)
        while not stop.is_set():
            try:
                self.poll_once()
            except Exception as error:  # noqa: BLE001 - the next poll tries again
                log.error("watch: polling the Hub failed, retrying in %.0f s: %s", interval, error)
            stop.wait(interval)
        log.info("watch: stopped")


def _is_pattern(owner: str) -> bool:
    return any(character in owner for character in "*?[")
