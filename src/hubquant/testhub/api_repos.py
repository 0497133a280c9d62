"""Endpoints for accounts and repos: whoami, create, delete, settings, info, refs."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from hubquant.testhub import views
from hubquant.testhub.cardcheck import check_card
from hubquant.testhub.errors import HubError, bad_request
from hubquant.testhub.naming import (
    REPO_TYPES,
    is_valid_branch_name,
    is_valid_repo_name,
    stable_id,
)
from hubquant.testhub.params import expand_param, int_param, json_object, page
from hubquant.testhub.storage import DEFAULT_BRANCH, RepoExistsError
from hubquant.testhub.transport import Response

if TYPE_CHECKING:
    from hubquant.testhub.app import Context, HubApp

logger = logging.getLogger(__name__)

# SDKs a Space may declare (`huggingface_hub.constants.SPACES_SDK_TYPES`, 2.4.0).
SPACE_SDKS = ("gradio", "docker", "static", "streamlit")

_SORT_KEYS = {
    "lastModified": lambda item: item[1].date,
    "createdAt": lambda item: item[0].settings.created_at,
    "id": lambda item: item[0].id.lower(),
    # The test Hub counts no downloads or likes, so these sort by id.
    "downloads": lambda item: item[0].id.lower(),
    "likes": lambda item: item[0].id.lower(),
    "trendingScore": lambda item: item[0].id.lower(),
}


def whoami(app: HubApp, context: Context) -> Response:
    identity = context.identity
    if identity is None:
        raise HubError(
            401, "Invalid username or password: pass a token to call whoami."
        )
    orgs = [
        {
            "type": "org",
            "id": stable_id("org", org.name),
            "name": org.name,
            "fullname": org.name,
            "roleInOrg": "write",
            "isEnterprise": False,
            "avatarUrl": "",
        }
        for org in app.accounts.orgs_of(identity.user)
    ]
    return Response.json(
        {
            "type": "user",
            "id": stable_id("user", identity.user),
            "name": identity.user,
            "fullname": identity.user,
            "email": f"{identity.user}@users.noreply.test",
            "emailVerified": True,
            "isPro": False,
            "canPay": False,
            "periodEnd": None,
            "avatarUrl": "",
            "orgs": orgs,
            "auth": {
                "type": "access_token",
                "accessToken": {"displayName": "test token", "role": identity.role},
            },
        }
    )


def create_repo(app: HubApp, context: Context) -> Response:
    payload = json_object(context)
    repo_type = payload.get("type") or "model"
    name = payload.get("name")
    if repo_type not in REPO_TYPES:
        raise bad_request(
            f"Invalid repo type {repo_type!r}: expected one of {', '.join(REPO_TYPES)}."
        )
    if not isinstance(name, str) or not is_valid_repo_name(name):
        raise bad_request(
            f"Invalid repo name {name!r}: use letters, digits, '-', '_' and '.',"
            " at most 96"
            " characters, no '--' or '..', not starting or ending with '-' or '.'."
        )
    if context.identity is None:
        raise HubError(
            401, "Authentication required to create a repo: pass a write token."
        )
    namespace = payload.get("organization") or context.identity.user
    repo_id = f"{namespace}/{name}"
    if app.accounts.get(namespace) is None:
        raise HubError(404, f"Namespace {namespace!r} does not exist.")
    app.require_write(context, namespace, f"the namespace {namespace!r}")

    sdk = payload.get("sdk")
    if repo_type == "space" and sdk not in SPACE_SDKS:
        raise bad_request(
            f"Invalid Space SDK {sdk!r}: expected one of {', '.join(SPACE_SDKS)}."
        )
    private = _visibility(payload)
    try:
        repo = app.store.create(
            repo_type,
            repo_id,
            private=bool(private),
            author=context.identity.user,
            sdk=sdk if repo_type == "space" else None,
        )
    except RepoExistsError as error:
        # The client reads `url` even from the 409 when exist_ok=True.
        error.body = {
            "error": error.message,
            "url": app.repo_url(repo_type, error.repo.id),
        }
        raise
    logger.info(
        "Created %s %s (private: %s)", repo_type, repo.id, repo.settings.private
    )
    return Response.json(
        {
            "url": app.repo_url(repo_type, repo.id),
            "name": repo.id,
            "id": views.object_id(repo),
        }
    )


def delete_repo(app: HubApp, context: Context) -> Response:
    payload = json_object(context)
    repo_type = payload.get("type") or "model"
    if repo_type not in REPO_TYPES:
        raise bad_request(
            f"Invalid repo type {repo_type!r}: expected one of {', '.join(REPO_TYPES)}."
        )
    if context.identity is None:
        raise HubError(
            401, "Authentication required to delete a repo: pass a write token."
        )
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        raise bad_request('The body needs the "name" of the repo to delete.')
    namespace = payload.get("organization") or context.identity.user
    repo = app.find_writable_repo(context, repo_type, f"{namespace}/{name}")
    app.store.delete(repo)
    logger.info("Deleted %s %s", repo_type, repo.id)
    return Response.json({})


def update_settings(
    app: HubApp, context: Context, repo_type: str, repo_id: str
) -> Response:
    repo = app.find_writable_repo(context, repo_type, repo_id)
    payload = json_object(context)
    private = _visibility(payload)
    gated = payload.get("gated")
    if "gated" in payload and gated not in (False, "auto", "manual"):
        raise bad_request(
            f"Invalid gated value {gated!r}: expected false, 'auto' or 'manual'."
        )
    with repo.lock:
        if private is not None:
            repo.settings.private = private
        if "gated" in payload:
            repo.settings.gated = gated
        repo.save()
    return Response.json(
        {"private": repo.settings.private, "gated": repo.settings.gated}
    )


def validate_yaml(app: HubApp, context: Context) -> Response:
    payload = json_object(context)
    content = payload.get("content")
    repo_type = payload.get("repoType") or "model"
    if not isinstance(content, str):
        raise bad_request('The body must have a "content" string with the README text.')
    report = check_card(content, repo_type)
    warnings = [{"message": message} for message in report.warnings]
    if not report.errors:
        return Response.json({"warnings": warnings})

    message = "\n".join(report.errors)
    accept = context.request.headers.get("Accept", "")
    if "text/plain" in accept and "json" not in accept:
        # `RepoCard.validate` requests text/plain and raises ValueError(response.text).
        return Response(
            400, {"Content-Type": "text/plain; charset=utf-8"}, message.encode()
        )
    body = {
        "error": message,
        "errors": [{"message": error} for error in report.errors],
        "warnings": warnings,
    }
    return Response.json(body, 400)


def repo_info(
    app: HubApp, context: Context, repo_type: str, repo_id: str, revision: str | None
) -> Response:
    repo = app.find_repo(context, repo_type, repo_id)
    commit = repo.load_commit(repo.resolve(revision or DEFAULT_BRANCH))
    query = context.request
    fields = expand_param(query)
    data = views.repo_info(repo, commit, with_blobs=query.flag("blobs"), fields=fields)
    return Response.json(data)


def list_repos(app: HubApp, context: Context, repo_type: str) -> Response:
    request = context.request
    search = (request.param("search") or "").lower()
    author = (request.param("author") or "").lower()
    filters = request.query.get("filter", [])
    pipeline_tag = request.param("pipeline_tag")
    gated = request.param("gated")

    items = []
    for repo in app.store.all(repo_type):
        if repo.settings.private and not app.is_member(repo, context.username):
            continue
        if search and search not in repo.id.lower():
            continue
        if author and repo.namespace.lower() != author:
            continue
        if gated is not None and bool(repo.settings.gated) != (gated.lower() == "true"):
            continue
        commit = repo.load_commit(repo.resolve(DEFAULT_BRANCH))
        if filters or pipeline_tag:
            info = views.repo_info(repo, commit)
            if not all(tag in info["tags"] for tag in filters):
                continue
            if pipeline_tag and info.get("pipeline_tag") != pipeline_tag:
                continue
        items.append((repo, commit))

    sort = request.param("sort")
    if sort is not None:
        if sort not in _SORT_KEYS:
            raise bad_request(
                f"Invalid sort {sort!r}: expected one of {', '.join(_SORT_KEYS)}."
            )
        # The Hub sorts descending unless direction=1 is given.
        descending = request.param("direction", "-1") != "1"
        items.sort(key=_SORT_KEYS[sort], reverse=descending)
    else:
        items.sort(key=lambda item: item[0].id.lower())

    limit = int_param(request, "limit")
    if limit is not None:
        items = items[:limit]
    page_items, next_cursor = page(items, request, app.config.page_size)
    entries = [
        views.list_entry(
            repo,
            commit,
            full=request.flag("full"),
            with_card=request.flag("cardData"),
            with_config=request.flag("config"),
            fields=expand_param(request),
        )
        for repo, commit in page_items
    ]
    headers = {}
    if next_cursor is not None:
        headers["Link"] = app.next_page_link(request, next_cursor)
    return Response.json(entries, headers=headers)


def refs(app: HubApp, context: Context, repo_type: str, repo_id: str) -> Response:
    repo = app.find_repo(context, repo_type, repo_id)
    with repo.lock:
        branches = dict(repo.settings.branches)
        tags = dict(repo.settings.tags)
    data: dict = {
        "branches": [
            {"name": name, "ref": f"refs/heads/{name}", "targetCommit": target}
            for name, target in sorted(branches.items())
        ],
        "converts": [],
        "tags": [
            {"name": name, "ref": f"refs/tags/{name}", "targetCommit": target}
            for name, target in sorted(tags.items())
        ],
    }
    if context.request.flag("include_prs"):
        data["pullRequests"] = []
    return Response.json(data)


def branch(
    app: HubApp, context: Context, repo_type: str, repo_id: str, name: str
) -> Response:
    repo = app.find_writable_repo(context, repo_type, repo_id)
    if context.request.method == "DELETE":
        repo.delete_branch(name)
        return Response.json({})
    if not is_valid_branch_name(name):
        raise bad_request(f"Invalid branch name {name!r}.")
    payload = json_object(context)
    start = payload.get("startingPoint") or DEFAULT_BRANCH
    repo.create_branch(name, repo.resolve(start))
    return Response.json({})


def tag(
    app: HubApp, context: Context, repo_type: str, repo_id: str, name: str
) -> Response:
    """Create a tag on revision `name` (POST), or delete the tag `name` (DELETE)."""
    repo = app.find_writable_repo(context, repo_type, repo_id)
    if context.request.method == "DELETE":
        repo.delete_tag(name)
        return Response.json({})
    payload = json_object(context)
    tag_name = payload.get("tag")
    if not isinstance(tag_name, str) or not is_valid_branch_name(tag_name):
        raise bad_request(f"Invalid tag name {tag_name!r}.")
    repo.create_tag(tag_name, repo.resolve(name))
    return Response.json({})


def list_commits(
    app: HubApp, context: Context, repo_type: str, repo_id: str, revision: str
) -> Response:
    repo = app.find_repo(context, repo_type, repo_id)
    commits = list(repo.history(repo.resolve(revision)))
    request = context.request
    formatted = "formatted" in request.query.get("expand[]", []) + request.query.get(
        "expand", []
    )
    items, next_cursor = page(commits, request, app.config.page_size)
    headers = {}
    if next_cursor is not None:
        headers["Link"] = app.next_page_link(request, next_cursor)
    entries = [views.commit_entry(commit, formatted=formatted) for commit in items]
    return Response.json(entries, headers=headers)


def _visibility(payload: dict) -> bool | None:
    """Return the requested privacy from `visibility` (2.x clients) or `private`."""
    visibility = payload.get("visibility")
    if visibility is not None:
        if visibility not in ("public", "private"):
            raise bad_request(
                f"Invalid visibility {visibility!r}: expected 'public' or 'private'."
            )
        return visibility == "private"
    private = payload.get("private")
    if private is not None and not isinstance(private, bool):
        raise bad_request(f"Invalid private value {private!r}: expected true or false.")
    return private
