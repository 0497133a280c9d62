"""Parsing of Hub webhook payloads (version 3).

The receiver parses payloads itself: huggingface_hub 2.4.0's `WebhookPayload`
model declares `repo.head_sha` without the `headSha` alias, so it drops the
commit sha that the Hub sends. Field names follow the Hub's webhook
documentation (hub-docs, docs/hub/webhooks.md) and captured payloads.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

SUPPORTED_VERSION = 3
REPO_TYPES = ("model", "dataset", "space")
MAIN_REF = "refs/heads/main"
_SHA = re.compile(r"^[0-9a-f]{40}$")
# Finds the webhook id in a body that is not valid JSON, for the log line.
_WEBHOOK_ID = re.compile(rb'"webhook"\s*:\s*\{[^{}]*?"id"\s*:\s*"([0-9A-Za-z]{1,64})"')


class PayloadError(ValueError):
    """A delivery that cannot be used; `status` is the HTTP status to respond with."""

    def __init__(self, status: int, message: str, webhook_id: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.webhook_id = webhook_id


@dataclass(frozen=True)
class RefUpdate:
    ref: str
    old_sha: str | None
    new_sha: str | None


@dataclass(frozen=True)
class HubEvent:
    """The fields of a delivery that rules look at."""

    webhook_id: str
    version: int
    scope: str
    action: str
    repo_type: str
    repo_id: str
    private: bool
    head_sha: str | None
    updated_refs: tuple[RefUpdate, ...] | None

    @property
    def name(self) -> str:
        """Event name as rules write it: scope and action, such as "repo.content.update"."""
        return f"{self.scope}.{self.action}"

    @property
    def owner(self) -> str:
        return self.repo_id.split("/")[0] if "/" in self.repo_id else ""

    @property
    def repo_name(self) -> str:
        return self.repo_id.split("/", 1)[-1]


def webhook_id_of(body: bytes) -> str | None:
    """Return the webhook id of a body that could not be parsed, when one can be found."""
    match = _WEBHOOK_ID.search(body[:65536])
    return match.group(1).decode() if match else None


def parse_payload(body: bytes) -> HubEvent:
    """Parse and check a delivery body; raise PayloadError with a 400 or 422 status."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PayloadError(400, f"invalid JSON: {error}", webhook_id_of(body)) from None
    if not isinstance(data, dict):
        raise PayloadError(422, "the payload must be a JSON object")

    webhook = data.get("webhook")
    webhook_id = webhook.get("id") if isinstance(webhook, dict) else None
    if not isinstance(webhook_id, str) or not webhook_id:
        raise PayloadError(422, "missing field webhook.id")
    version = webhook.get("version")
    if version != SUPPORTED_VERSION:
        raise PayloadError(
            422, f"unsupported payload version {version!r}: this receiver reads version {SUPPORTED_VERSION}",
            webhook_id,
        )

    event = _object(data, "event", webhook_id)
    scope = _string(event, "event.scope", webhook_id)
    action = _string(event, "event.action", webhook_id)
    repo = _object(data, "repo", webhook_id)
    repo_type = _string(repo, "repo.type", webhook_id)
    if repo_type not in REPO_TYPES:
        raise PayloadError(422, f"invalid repo.type {repo_type!r}: expected one of {', '.join(REPO_TYPES)}", webhook_id)
    repo_id = _string(repo, "repo.name", webhook_id)
    private = repo.get("private")
    if not isinstance(private, bool):
        raise PayloadError(422, "missing or invalid field repo.private (expected true or false)", webhook_id)
    head_sha = repo.get("headSha")
    if head_sha is not None and not (isinstance(head_sha, str) and _SHA.match(head_sha)):
        raise PayloadError(422, f"invalid repo.headSha {head_sha!r}: expected 40 hex digits", webhook_id)

    return HubEvent(
        webhook_id=webhook_id,
        version=version,
        scope=scope,
        action=action,
        repo_type=repo_type,
        repo_id=repo_id,
        private=private,
        head_sha=head_sha,
        updated_refs=_refs(data.get("updatedRefs"), webhook_id),
    )


def _object(data: dict, key: str, webhook_id: str) -> dict:
    value = data.get(key)
    if not isinstance(value, dict):
        raise PayloadError(422, f"missing field {key}", webhook_id)
    return value


def _string(data: dict, path: str, webhook_id: str) -> str:
    value = data.get(path.rsplit(".", 1)[-1])
    if not isinstance(value, str) or not value:
        raise PayloadError(422, f"missing field {path}", webhook_id)
    return value


def _refs(value: object, webhook_id: str) -> tuple[RefUpdate, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise PayloadError(422, "invalid field updatedRefs: expected a list", webhook_id)
    refs = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("ref"), str):
            raise PayloadError(422, f"invalid updatedRefs entry {item!r}: expected an object with a ref", webhook_id)
        shas = []
        for key in ("oldSha", "newSha"):
            sha = item.get(key)
            if sha is not None and not (isinstance(sha, str) and _SHA.match(sha)):
                raise PayloadError(422, f"invalid updatedRefs {key} {sha!r}: expected 40 hex digits or null", webhook_id)
            shas.append(sha)
        refs.append(RefUpdate(item["ref"], shas[0], shas[1]))
    return tuple(refs)
