"""Webhooks of the test Hub: the settings API, version 3 payloads, and deliveries.

The Hub sends a JSON payload to each registered URL when a watched repo changes,
with the webhook's secret in the `X-Webhook-Secret` header. It delivers each
event at least once, so a delivery that fails (no connection, a timeout, or a
status that is not 2xx) is sent again after a delay. This module does the same
for the test Hub. It wraps the app's request handler, so the repo endpoints stay
unchanged: after a successful repo creation, deletion, commit, or branch or tag
change, it builds the event and queues one delivery per matching webhook.

Payload fields follow the Hub's webhook documentation (huggingface/hub-docs,
docs/hub/webhooks.md: `event`, `repo` with `headSha`, `updatedRefs`, `webhook`
with `version` 3) and payloads captured from the Hub in huggingface_hub's tests.
"""

from __future__ import annotations

import heapq
import json
import logging
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from hubquant.testhub.errors import HubError, bad_request
from hubquant.testhub.fsutil import write_json_atomic
from hubquant.testhub.naming import REPO_TYPES, stable_id
from hubquant.testhub.storage import DEFAULT_BRANCH
from hubquant.testhub.transport import Request, Response

if TYPE_CHECKING:
    from hubquant.testhub.app import HubApp
    from hubquant.testhub.storage import Repo

logger = logging.getLogger(__name__)

PAYLOAD_VERSION = 3
DOMAINS = ("repo", "discussion")
WATCHED_TYPES = ("user", "org", "model", "dataset", "space")
# Seconds to wait before each new attempt of a failed delivery.
DEFAULT_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
DELIVERY_TIMEOUT = 10.0

_PLURAL_TYPES = {f"{repo_type}s": repo_type for repo_type in REPO_TYPES}
_REPO_API = re.compile(r"^/api/(models|datasets|spaces)/([^/]+)/([^/]+)/(.+)$")


@dataclass
class Webhook:
    id: str
    owner: str
    url: str
    watched: list[dict]
    domains: list[str]
    secret: str | None
    disabled: bool = False

    def to_api(self) -> dict:
        return {
            "id": self.id,
            "url": self.url,
            "job": None,
            "watched": self.watched,
            "domains": self.domains,
            "secret": self.secret,
            "disabled": self.disabled,
        }


@dataclass
class Delivery:
    """One payload for one webhook, with the attempts made so far."""

    webhook_id: str
    url: str
    secret: str | None
    payload: dict
    attempts: int = 0


@dataclass
class DeliveryRecord:
    """One delivery attempt: the payload sent and the status received (None without a response)."""

    webhook_id: str
    scope: str
    action: str
    repo: str
    attempt: int
    status: int | None
    error: str = ""
    payload: dict = field(default_factory=dict, repr=False)


class Webhooks:
    """Registered webhooks of a test Hub and the thread that delivers their payloads.

    Webhooks are saved in `webhooks.json` under the state folder. `copies` sends
    each event that many times (the Hub may deliver an event more than once), and
    `retry_delays` sets the wait before each new attempt of a failed delivery.
    """

    def __init__(self, state_dir: Path, app: HubApp) -> None:
        self._path = Path(state_dir) / "webhooks.json"
        self._app = app
        self._lock = threading.Lock()
        self._webhooks: dict[str, Webhook] = self._load()
        self.copies = 1
        self.retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
        self._records: list[DeliveryRecord] = []
        self._pending: list[tuple[float, int, Delivery]] = []
        self._sequence = 0
        self._in_flight = 0
        self._wakeup = threading.Condition(self._lock)
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- state ---------------------------------------------------------------

    def _load(self) -> dict[str, Webhook]:
        if not self._path.is_file():
            return {}
        data = json.loads(self._path.read_text())
        return {item["id"]: Webhook(**item) for item in data}

    def _save(self) -> None:
        write_json_atomic(self._path, [asdict(hook) for hook in self._webhooks.values()])

    def all(self) -> list[Webhook]:
        with self._lock:
            return list(self._webhooks.values())

    def add(
        self,
        owner: str,
        url: str,
        watched: list[dict],
        *,
        secret: str | None = None,
        domains: list[str] | None = None,
    ) -> Webhook:
        """Register a webhook of user `owner`; the same checks as the settings API."""
        hook = Webhook(
            id=secrets.token_hex(12),
            owner=owner,
            url=_checked_url(url),
            watched=_checked_watched(watched),
            domains=_checked_domains(domains if domains is not None else list(DOMAINS)),
            secret=secret,
        )
        with self._lock:
            self._webhooks[hook.id] = hook
            self._save()
        logger.info("Webhook %s of %s registered for %s", hook.id, owner, hook.url)
        return hook

    @property
    def deliveries(self) -> list[DeliveryRecord]:
        """A copy of every delivery attempt, oldest first."""
        with self._lock:
            return list(self._records)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until no delivery is pending or in flight; return False on timeout."""
        deadline = time.monotonic() + timeout
        with self._wakeup:
            while self._pending or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wakeup.wait(min(left, 0.1))
        return True

    def stop(self) -> None:
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=DELIVERY_TIMEOUT + 1)
            self._thread = None

    # -- the request handler -------------------------------------------------

    def handle(self, request: Request) -> Response:
        """Serve the webhook settings API, or pass the request to the app and emit events."""
        if request.path.rstrip("/").startswith("/api/settings/webhooks"):
            return self._settings_api(request)
        before = self._before(request)
        response = self._app.handle(request)
        if 200 <= response.status < 300:
            try:
                self._emit_after(request, response, before)
            except Exception:  # noqa: BLE001 - a webhook bug must not fail the request
                logger.exception("Building webhook events for %s %s failed", request.method, request.path)
        return response

    def _before(self, request: Request) -> dict:
        """Return the refs of the repo that a branch or tag request is about to change."""
        match = _REPO_API.match(request.path)
        if match and request.method in ("POST", "DELETE"):
            repo = self._repo(match.group(1), match.group(2), match.group(3))
            kind = unquote(match.group(4)).partition("/")[0]
            if repo is not None and kind in ("branch", "tag"):
                # A tag is created at .../tag/{revision} with its name in the body, so
                # ref changes are found by comparing the refs before and after.
                return {"refs": _refs_of(repo)}
        return {}

    def _emit_after(self, request: Request, response: Response, before: dict) -> None:
        match = _REPO_API.match(request.path)
        if request.method == "POST" and request.path == "/api/repos/create":
            data = json.loads(response.body)
            repo = self._repo_by_url(data["url"], data["name"])
            if repo is not None:
                self._emit(repo, "create", "repo", head=True)
            return
        if not match:
            return
        repo = self._repo(match.group(1), match.group(2), match.group(3))
        if repo is None:
            return
        tail = unquote(match.group(4))
        kind, _, name = tail.partition("/")
        if kind == "commit" and request.method == "POST":
            commit_id = json.loads(response.body)["commitOid"]
            branch = name.removeprefix("refs/heads/")
            parents = repo.load_commit(commit_id).parents
            self._emit_refs(repo, [(f"refs/heads/{branch}", parents[0] if parents else None, commit_id)])
        elif kind in ("branch", "tag") and "refs" in before:
            old, new = before["refs"], _refs_of(repo)
            changes = [(ref, old.get(ref), new.get(ref)) for ref in sorted(old.keys() | new.keys()) if old.get(ref) != new.get(ref)]
            if changes:
                self._emit_refs(repo, changes)

    # -- events --------------------------------------------------------------

    def _repo(self, plural: str, namespace: str, name: str) -> Repo | None:
        return self._app.store.get(_PLURAL_TYPES[plural], f"{unquote(namespace)}/{unquote(name)}")

    def _repo_by_url(self, url: str, repo_id: str) -> Repo | None:
        for repo_type in REPO_TYPES:
            if self._app.repo_url(repo_type, repo_id) == url:
                return self._app.store.get(repo_type, repo_id)
        return None

    def _emit_refs(self, repo: Repo, changes: list[tuple[str, str | None, str | None]]) -> None:
        refs = [{"ref": ref, "oldSha": old, "newSha": new} for ref, old, new in changes]
        self._emit(repo, "update", "repo.content", head=True, updated_refs=refs)

    def _emit(self, repo: Repo, action: str, scope: str, *, head: bool, updated_refs: list[dict] | None = None) -> None:
        for hook in self._matching(repo):
            payload = {
                "event": {"action": action, "scope": scope},
                "repo": self._repo_payload(repo, head=head),
                "webhook": {"id": hook.id, "version": PAYLOAD_VERSION},
            }
            if updated_refs is not None:
                payload["updatedRefs"] = updated_refs
            for _ in range(self.copies):
                self._enqueue(Delivery(hook.id, hook.url, hook.secret, payload), delay=0.0)

    def _matching(self, repo: Repo) -> list[Webhook]:
        namespace = repo.namespace.lower()
        matches = []
        for hook in self.all():
            if hook.disabled or "repo" not in hook.domains:
                continue
            if repo.settings.private and not self._app.is_member(repo, hook.owner):
                # NOTE: events of a private repo go only to webhooks whose owner can read
                # it. This is assumed of the Hub, not checked against it.
                continue
            for item in hook.watched:
                name = item["name"].lower()
                if item["type"] in ("user", "org") and name == namespace:
                    matches.append(hook)
                    break
                if item["type"] == repo.type and name == repo.id.lower():
                    matches.append(hook)
                    break
        return matches

    def _repo_payload(self, repo: Repo, *, head: bool) -> dict:
        base = self._app.config.base_url
        prefix = "" if repo.type == "model" else f"{repo.type}s/"
        owner = self._app.accounts.get(repo.namespace)
        owner_kind = owner.kind if owner is not None else "user"
        data = {
            "type": repo.type,
            "name": repo.id,
            "id": _object_id(repo),
            "private": repo.settings.private,
            "url": {"web": f"{base}/{prefix}{repo.id}", "api": f"{base}/api/{repo.type}s/{repo.id}"},
            "owner": {"id": stable_id(owner_kind, repo.namespace)},
        }
        if head:
            data["headSha"] = repo.resolve(DEFAULT_BRANCH)
        return data

    # -- delivery ------------------------------------------------------------

    def _enqueue(self, delivery: Delivery, *, delay: float) -> None:
        with self._wakeup:
            if self._thread is None:
                self._thread = threading.Thread(target=self._deliver_loop, name="testhub-webhooks", daemon=True)
                self._thread.start()
            self._sequence += 1
            heapq.heappush(self._pending, (time.monotonic() + delay, self._sequence, delivery))
            self._wakeup.notify_all()

    def _deliver_loop(self) -> None:
        while True:
            with self._wakeup:
                while not self._stopping and (not self._pending or self._pending[0][0] > time.monotonic()):
                    timeout = self._pending[0][0] - time.monotonic() if self._pending else None
                    self._wakeup.wait(timeout)
                if self._stopping:
                    return
                _, _, delivery = heapq.heappop(self._pending)
                self._in_flight += 1
            try:
                self._attempt(delivery)
            finally:
                with self._wakeup:
                    self._in_flight -= 1
                    self._wakeup.notify_all()

    def _attempt(self, delivery: Delivery) -> None:
        delivery.attempts += 1

        body = json.dumps(delivery.payload).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "hubquant-testhub-webhooks"}
        if delivery.secret is not None:
            headers["X-Webhook-Secret"] = delivery.secret
        request = urllib.request.Request(delivery.url, data=body, headers=headers, method="POST")
        status: int | None = None
        error = ""
        try:
            with urllib.request.urlopen(request, timeout=DELIVERY_TIMEOUT) as response:
                status = response.status
        except urllib.error.HTTPError as failure:
            status = failure.code
            error = f"HTTP {failure.code}"
        except (OSError, urllib.error.URLError) as failure:
            error = f"{type(failure).__name__}: {failure}"

        event = delivery.payload["event"]
        record = DeliveryRecord(
            delivery.webhook_id, event["scope"], event["action"], delivery.payload["repo"]["name"],
            delivery.attempts, status, error, delivery.payload,
        )
        with self._lock:
            self._records.append(record)

        if status is not None and 200 <= status < 300:
            logger.info("Webhook %s delivered %s.%s of %s (attempt %d)", delivery.webhook_id,
                        event["scope"], event["action"], record.repo, delivery.attempts)
            return
        if delivery.attempts > len(self.retry_delays):
            logger.warning("Webhook %s gave up on %s of %s after %d attempts: %s", delivery.webhook_id,
                           event["scope"], record.repo, delivery.attempts, error)
            return
        delay = self.retry_delays[delivery.attempts - 1]
        logger.info("Webhook %s delivery to %s failed (%s); retrying in %.1f s", delivery.webhook_id,
                    delivery.url, error, delay)
        self._enqueue(delivery, delay=delay)

    # -- settings API (/api/settings/webhooks) --------------------------------

    def _settings_api(self, request: Request) -> Response:
        identity = self._app._identify(request)  # noqa: SLF001 - same package
        if identity is None:
            raise HubError(401, "Authentication required to manage webhooks: pass a token.")
        parts = [unquote(part) for part in request.path.strip("/").split("/")[3:]]
        method = request.method

        if not parts:
            if method == "GET":
                return Response.json([hook.to_api() for hook in self.all() if hook.owner == identity.user])
            if method == "POST":
                self._require_write(identity)
                body = _json_body(request)
                hook = self.add(identity.user, body.get("url"), body.get("watched"),
                                secret=body.get("secret"), domains=body.get("domains"))
                return Response.json({"webhook": hook.to_api()})
            raise _no_route(request)

        hook = self._owned(parts[0], identity.user)
        if len(parts) == 1 and method == "GET":
            return Response.json({"webhook": hook.to_api()})
        self._require_write(identity)
        if len(parts) == 1 and method == "DELETE":
            with self._lock:
                self._webhooks.pop(hook.id, None)
                self._save()
            return Response.json({})
        if len(parts) == 1 and method == "POST":
            body = _json_body(request)
            with self._lock:
                if "url" in body:
                    hook.url = _checked_url(body["url"])
                if "watched" in body:
                    hook.watched = _checked_watched(body["watched"])
                if "domains" in body:
                    hook.domains = _checked_domains(body["domains"])
                if "secret" in body:
                    hook.secret = body["secret"]
                self._save()
            return Response.json({"webhook": hook.to_api()})
        if len(parts) == 2 and parts[1] in ("enable", "disable") and method == "POST":
            with self._lock:
                hook.disabled = parts[1] == "disable"
                self._save()
            return Response.json({"webhook": hook.to_api()})
        raise _no_route(request)

    def _owned(self, webhook_id: str, user: str) -> Webhook:
        with self._lock:
            hook = self._webhooks.get(webhook_id)
        if hook is None or hook.owner != user:
            raise HubError(404, f"Webhook {webhook_id!r} not found.")
        return hook

    @staticmethod
    def _require_write(identity) -> None:
        if not identity.can_write:
            raise HubError(403, f"The token of {identity.user!r} is read-only; use a write token to change webhooks.")


def _refs_of(repo: Repo) -> dict[str, str]:
    refs = {f"refs/heads/{name}": sha for name, sha in repo.settings.branches.items()}
    refs.update({f"refs/tags/{name}": sha for name, sha in repo.settings.tags.items()})
    return refs


def _object_id(repo: Repo) -> str:
    return stable_id(repo.type, repo.id.lower(), repo.settings.created_at)


def _json_body(request: Request) -> dict:
    body = request.body.json()
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def _checked_url(url: object) -> str:
    if not isinstance(url, str) or not re.match(r"^https?://", url):
        raise bad_request(f"Invalid webhook url {url!r}: expected an http:// or https:// URL.")
    return url


def _checked_watched(watched: object) -> list[dict]:
    if not isinstance(watched, list) or not watched:
        raise bad_request("A webhook needs a non-empty list of watched items.")
    items = []
    for item in watched:
        if not isinstance(item, dict) or item.get("type") not in WATCHED_TYPES or not isinstance(item.get("name"), str):
            raise bad_request(
                f"Invalid watched item {item!r}: expected a type among {', '.join(WATCHED_TYPES)} and a name."
            )
        items.append({"type": item["type"], "name": item["name"]})
    return items


def _checked_domains(domains: object) -> list[str]:
    if not isinstance(domains, list) or not domains or any(domain not in DOMAINS for domain in domains):
        raise bad_request(f"Invalid domains {domains!r}: expected a non-empty list of {', '.join(DOMAINS)}.")
    return list(domains)


def _no_route(request: Request) -> HubError:
    return HubError(404, f"No test Hub endpoint for {request.method} {request.path}.")
