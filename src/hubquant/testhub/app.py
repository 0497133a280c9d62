"""Routing, authentication and access rules of the test Hub."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlencode

from hubquant.testhub import api_files, api_repos, api_upload
from hubquant.testhub.accounts import AccountStore, Identity
from hubquant.testhub.errors import HubError, repo_not_found
from hubquant.testhub.faults import FaultPlan
from hubquant.testhub.lfs import LfsUploads
from hubquant.testhub.naming import REPO_TYPES
from hubquant.testhub.storage import Repo, RepoStore
from hubquant.testhub.transport import Request, Response

logger = logging.getLogger(__name__)

# `hf_raise_for_status` (huggingface_hub 2.4.0) reads a 401 on a repo URL as
# "repo not found" unless the X-Error-Message is exactly this one.
INVALID_TOKEN_MESSAGE = "Invalid credentials in Authorization header"

_PLURAL_TYPES = {f"{repo_type}s": repo_type for repo_type in REPO_TYPES}


@dataclass
class Config:
    base_url: str
    # Entries per page of every paginated listing (repos, tree, commits).
    page_size: int
    # LFS objects larger than this are uploaded in parts of this size.
    lfs_chunk_size: int


@dataclass
class Context:
    """One request, with the account its token belongs to (None when anonymous)."""

    request: Request
    identity: Identity | None

    @property
    def username(self) -> str | None:
        return self.identity.user if self.identity else None


class HubApp:
    def __init__(self, state_dir: Path, accounts: AccountStore, config: Config) -> None:
        self.accounts = accounts
        self.config = config
        self.store = RepoStore(state_dir)
        self.uploads = LfsUploads(state_dir / "uploads")
        self.faults = FaultPlan()

    # -- entry point -------------------------------------------------------

    def handle(self, request: Request) -> Response:
        segments = [unquote(part) for part in request.path.split("/")[1:]]
        if segments and segments[0] == "_lfs":
            # Signed upload URLs carry their own key instead of a token.
            return api_upload.signed_upload(self, request, segments[1:])
        context = Context(request, self._identify(request))
        return self._route(context, segments)

    def _identify(self, request: Request) -> Identity | None:
        header = request.headers.get("Authorization")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        identity = (
            self.accounts.identify(token.strip())
            if scheme.lower() == "bearer"
            else None
        )
        if identity is None:
            # The Hub rejects an unknown token even where anonymous access would work.
            raise HubError(401, INVALID_TOKEN_MESSAGE)
        return identity

    def _route(self, context: Context, segments: list[str]) -> Response:
        method = context.request.method
        if segments[:1] == ["api"]:
            return self._route_api(context, segments[1:])

        repo_type = "model"
        if segments and segments[0] in ("datasets", "spaces"):
            repo_type = _PLURAL_TYPES[segments[0]]
            segments = segments[1:]
        if len(segments) >= 2 and segments[1].endswith(".git"):
            repo_id = f"{segments[0]}/{segments[1][: -len('.git')]}"
            rest = segments[2:]
            if rest[:3] == ["info", "lfs", "objects"] and method in ("POST", "GET"):
                return api_upload.lfs_objects(
                    self, context, repo_type, repo_id, rest[3:]
                )
        if (
            len(segments) >= 5
            and segments[2] == "resolve"
            and method in ("GET", "HEAD")
        ):
            repo_id = f"{segments[0]}/{segments[1]}"
            return api_files.resolve(
                self, context, repo_type, repo_id, segments[3], "/".join(segments[4:])
            )
        if len(segments) >= 2 and segments[1] == "resolve":
            raise _canonical_repo(context, repo_type, segments[0])
        raise _no_route(context.request)

    def _route_api(self, context: Context, segments: list[str]) -> Response:
        method = context.request.method
        match segments:
            case ["whoami-v2"] if method == "GET":
                return api_repos.whoami(self, context)
            case ["repos", "create"] if method == "POST":
                return api_repos.create_repo(self, context)
            case ["repos", "delete"] if method == "DELETE":
                return api_repos.delete_repo(self, context)
            case ["validate-yaml"] if method == "POST":
                return api_repos.validate_yaml(self, context)
            case [plural] if plural in _PLURAL_TYPES and method == "GET":
                return api_repos.list_repos(self, context, _PLURAL_TYPES[plural])
            case [plural, name] if plural in _PLURAL_TYPES:
                raise _canonical_repo(context, _PLURAL_TYPES[plural], name)
            case [plural, namespace, name, *rest] if plural in _PLURAL_TYPES:
                repo_type = _PLURAL_TYPES[plural]
                return self._route_repo_api(
                    context, repo_type, f"{namespace}/{name}", rest
                )
        raise _no_route(context.request)

    def _route_repo_api(
        self, context: Context, repo_type: str, repo_id: str, rest: list[str]
    ) -> Response:
        method = context.request.method
        match rest:
            case [] if method == "GET":
                return api_repos.repo_info(self, context, repo_type, repo_id, None)
            case ["revision", revision] if method == "GET":
                return api_repos.repo_info(self, context, repo_type, repo_id, revision)
            case ["settings"] if method == "PUT":
                return api_repos.update_settings(self, context, repo_type, repo_id)
            case ["tree", revision, *path] if method == "GET":
                return api_files.tree(
                    self, context, repo_type, repo_id, revision, "/".join(path)
                )
            case ["paths-info", revision] if method == "POST":
                return api_files.paths_info(self, context, repo_type, repo_id, revision)
            case ["refs"] if method == "GET":
                return api_repos.refs(self, context, repo_type, repo_id)
            case ["branch", branch] if method in ("POST", "DELETE"):
                return api_repos.branch(self, context, repo_type, repo_id, branch)
            case ["tag", name] if method in ("POST", "DELETE"):
                return api_repos.tag(self, context, repo_type, repo_id, name)
            case ["commits", revision] if method == "GET":
                return api_repos.list_commits(
                    self, context, repo_type, repo_id, revision
                )
            case ["preupload", revision] if method == "POST":
                return api_upload.preupload(self, context, repo_type, repo_id, revision)
            case ["commit", revision] if method == "POST":
                return api_upload.commit(self, context, repo_type, repo_id, revision)
        raise _no_route(context.request)

    # -- access rules ------------------------------------------------------

    def is_member(self, repo: Repo, username: str | None) -> bool:
        """Return True when `username` owns the repo or is in its organization."""
        return username is not None and self.accounts.can_write_namespace(
            username, repo.namespace
        )

    def find_repo(self, context: Context, repo_type: str, repo_id: str) -> Repo:
        """Return a repo the requester may see.

        Private repos of others raise the same RepoNotFound error as missing ones.
        """
        repo = self.store.get(repo_type, repo_id)
        if repo is None or (
            repo.settings.private and not self.is_member(repo, context.username)
        ):
            raise repo_not_found(repo_type, repo_id, anonymous=context.identity is None)
        return repo

    def find_writable_repo(
        self, context: Context, repo_type: str, repo_id: str
    ) -> Repo:
        repo = self.find_repo(context, repo_type, repo_id)
        self.require_write(context, repo.namespace, f"{repo_type} {repo.id!r}")
        return repo

    def require_write(self, context: Context, namespace: str, target: str) -> Identity:
        identity = context.identity
        if identity is None:
            raise HubError(
                401, f"Authentication required to change {target}: pass a write token."
            )
        if not identity.can_write:
            raise HubError(
                403,
                f"The token of {identity.user!r} is read-only and cannot change"
                f" {target}; use a write token.",
            )
        if not self.accounts.can_write_namespace(identity.user, namespace):
            raise HubError(
                403,
                f"{identity.user!r} has no write access to {target} in namespace"
                f" {namespace!r}.",
            )
        return identity

    def require_download(self, context: Context, repo: Repo) -> None:
        """Raise the Hub's GatedRepo error unless the requester may read the files."""
        if not repo.settings.gated:
            return
        username = context.username
        if self.is_member(repo, username):
            return
        granted = {name.lower() for name in repo.settings.gated_grants}
        if username is not None and username.lower() in granted:
            return
        if username is None:
            message = (
                f"Access to {repo.type} {repo.id} is restricted. You must have access"
                " to it and be authenticated to access it. Please log in."
            )
            raise HubError(401, message, error_code="GatedRepo")
        message = (
            f"Access to {repo.type} {repo.id} is restricted and you are not in the"
            f" authorized list. Ask the owner of {repo.id} for access."
        )
        raise HubError(403, message, error_code="GatedRepo")

    # -- URLs ----------------------------------------------------------------

    def repo_url(self, repo_type: str, repo_id: str) -> str:
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return f"{self.config.base_url}/{prefix}{repo_id}"

    def next_page_link(self, request: Request, cursor: int) -> str:
        """Return a `Link` header whose `next` URL has the query and a new cursor."""
        pairs = [
            (name, value)
            for name, values in request.query.items()
            if name != "cursor"
            for value in values
        ]
        pairs.append(("cursor", str(cursor)))
        url = f"{self.config.base_url}{request.path}?{urlencode(pairs)}"
        return f'<{url}>; rel="next"'


def _canonical_repo(context: Context, repo_type: str, name: str) -> HubError:
    # Repos without a namespace (such as "gpt2") exist only on the real Hub.
    return repo_not_found(repo_type, name, anonymous=context.identity is None)


def _no_route(request: Request) -> HubError:
    return HubError(404, f"No test Hub endpoint for {request.method} {request.path}.")
