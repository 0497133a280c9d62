"""Rules: which Hub events start which jobs.

A rule matches on the repo type, the event name, owner and name patterns
(shell-style, case-insensitive), and rejects excluded names and private repos
unless it allows them. A match becomes a `JobSpec` for the commit the event
reports: `headSha` for a repo creation, and the new sha of `refs/heads/main`
for a content update (an update of other refs alone starts nothing).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from hubquant.bot.jobs import JobSpec
from hubquant.bot.payload import MAIN_REF, HubEvent

REPO_CREATE = "repo.create"
CONTENT_UPDATE = "repo.content.update"
EVENTS = (REPO_CREATE, CONTENT_UPDATE)

# Repo names that are already quantized releases (hubquant's own and the usual
# suffixes of other tools); a rule adds its own patterns with `exclude`.
DEFAULT_EXCLUDE = (
    "*-gguf*", "*-onnx*", "*-openvino*", "*-mlx*", "*-awq*", "*-gptq*", "*-exl2*",
    "*-bnb-*", "*-int4*", "*-int8*", "*-4bit*", "*-8bit*", "*-fp8*",
)

VISIBILITIES = {"source": None, "public": True, "private": False}


@dataclass(frozen=True)
class Rule:
    name: str
    owners: tuple[str, ...]
    names: tuple[str, ...] = ("*",)
    repo_type: str = "model"
    events: tuple[str, ...] = EVENTS
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    allow_private: bool = False
    targets: tuple[str, ...] = ()
    namespace: str | None = None
    # "source" follows the source's visibility; "public" or "private" force one.
    visibility: str = "source"

    def check(self, event: HubEvent) -> tuple[JobSpec | None, str]:
        """Return the job this event starts under this rule, or None and the reason why not."""
        if event.repo_type != self.repo_type:
            return None, f"repo type {event.repo_type} is not {self.repo_type}"
        if event.name not in self.events:
            return None, f"event {event.name} is not one of {', '.join(self.events)}"
        if not _matches(event.owner, self.owners):
            return None, f"owner {event.owner or '(none)'} matches none of {', '.join(self.owners)}"
        if not _matches(event.repo_name, self.names):
            return None, f"name {event.repo_name} matches none of {', '.join(self.names)}"
        excluded = [pattern for pattern in self.exclude if fnmatch.fnmatchcase(event.repo_name.lower(), pattern.lower())]
        if excluded:
            return None, f"name {event.repo_name} is excluded by {excluded[0]}"
        if event.private and not self.allow_private:
            return None, f"{event.repo_id} is private and the rule does not allow private repos"
        sha, reason = _commit_of(event)
        if sha is None:
            return None, reason
        spec = JobSpec(
            source=event.repo_id,
            sha=sha,
            targets=tuple(sorted(self.targets)),
            namespace=self.namespace,
            public=VISIBILITIES[self.visibility],
            private_source=event.private,
            rule=self.name,
            event=event.name,
            webhook_id=event.webhook_id,
        )
        return spec, "matched"


def match_rules(rules: list[Rule], event: HubEvent) -> tuple[list[JobSpec], list[str]]:
    """Return the jobs the event starts, and for each rule that did not match, why."""
    specs: list[JobSpec] = []
    reasons: list[str] = []
    for rule in rules:
        spec, reason = rule.check(event)
        if spec is None:
            reasons.append(f"{rule.name}: {reason}")
        else:
            specs.append(spec)
    return specs, reasons


def _matches(value: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(value.lower(), pattern.lower()) for pattern in patterns)


def _commit_of(event: HubEvent) -> tuple[str | None, str]:
    if event.name == CONTENT_UPDATE and event.updated_refs is not None:
        for update in event.updated_refs:
            if update.ref == MAIN_REF:
                if update.new_sha is None:
                    return None, "the main branch was deleted"
                return update.new_sha, ""
        refs = ", ".join(update.ref for update in event.updated_refs) or "no refs"
        return None, f"the update changed {refs}, not {MAIN_REF}"
    if event.head_sha is None:
        return None, "the payload has no repo.headSha"
    return event.head_sha, ""
