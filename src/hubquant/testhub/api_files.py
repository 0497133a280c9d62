"""Endpoints that read files: tree, paths-info and downloads through /resolve."""

from __future__ import annotations

import mimetypes
import re
from typing import TYPE_CHECKING

from hubquant.testhub import views
from hubquant.testhub.errors import HubError, entry_not_found
from hubquant.testhub.params import page
from hubquant.testhub.storage import Commit
from hubquant.testhub.transport import Response

if TYPE_CHECKING:
    from hubquant.testhub.app import Context, HubApp

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def tree(
    app: HubApp,
    context: Context,
    repo_type: str,
    repo_id: str,
    revision: str,
    path: str,
) -> Response:
    repo = app.find_repo(context, repo_type, repo_id)
    commit_id = repo.resolve(revision)
    commit = repo.load_commit(commit_id)
    request = context.request
    recursive = request.flag("recursive")
    expand = request.flag("expand")
    path = path.strip("/")

    folders = set(views.folder_ids(commit)) - {""}
    if path and path not in folders:
        raise entry_not_found(repo.id, revision, path, commit=commit_id)
    entries = _listing(commit, folders, path, recursive=recursive)
    items, next_cursor = page(entries, request, app.config.page_size)
    body = [
        views.file_entry(repo, commit, item, commit.files[item], expand=expand)
        if item in commit.files
        else views.folder_entry(repo, commit, item, expand=expand)
        for item in items
    ]
    headers = {}
    if next_cursor is not None:
        headers["Link"] = app.next_page_link(request, next_cursor)
    return Response.json(body, headers=headers)


def _listing(
    commit: Commit, folders: set[str], path: str, *, recursive: bool
) -> list[str]:
    """Return the files and folders under `path`, folders before files at each level."""
    prefix = f"{path}/" if path else ""
    names = [name for name in (*folders, *commit.files) if name.startswith(prefix)]
    if not recursive:
        names = [name for name in names if "/" not in name[len(prefix) :]]
    return sorted(
        names, key=lambda name: (name.split("/")[:-1], name not in folders, name)
    )


def paths_info(
    app: HubApp, context: Context, repo_type: str, repo_id: str, revision: str
) -> Response:
    repo = app.find_repo(context, repo_type, repo_id)
    commit = repo.load_commit(repo.resolve(revision))
    form = context.request.body.form()
    expand = (form.get("expand", ["false"])[-1]).lower() in ("1", "true")
    folders = views.folder_ids(commit)
    body = []
    for path in form.get("paths", []):
        path = path.strip("/")
        if path in commit.files:
            body.append(
                views.file_entry(repo, commit, path, commit.files[path], expand=expand)
            )
        elif path and path in folders:
            body.append(views.folder_entry(repo, commit, path, expand=expand))
    return Response.json(body)


def resolve(
    app: HubApp,
    context: Context,
    repo_type: str,
    repo_id: str,
    revision: str,
    path: str,
) -> Response:
    """Serve a file with the headers `hf_hub_download` needs, and a single Range."""
    repo = app.find_repo(context, repo_type, repo_id)
    app.require_download(context, repo)
    commit_id = repo.resolve(revision)
    commit = repo.load_commit(commit_id)
    entry = commit.files.get(path)
    if entry is None:
        raise entry_not_found(repo.id, revision, path, commit=commit_id)

    headers = {
        "X-Repo-Commit": commit_id,
        "ETag": f'"{entry.etag}"',
        "Accept-Ranges": "bytes",
        "Content-Type": _content_type(path),
        "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"',
    }
    if entry.lfs_oid is not None:
        # On the Hub these ride on the redirect to the CDN; the client prefers them
        # over ETag and Content-Length.
        headers["X-Linked-Etag"] = f'"{entry.lfs_oid}"'
        headers["X-Linked-Size"] = str(entry.size)

    file_path = repo.file_content_path(entry)
    size = entry.size
    byte_range = _byte_range(context.request.headers.get("Range"), size)
    if byte_range is None:
        return Response(200, headers, file=file_path, file_range=(0, size))
    start, end = byte_range
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return Response(206, headers, file=file_path, file_range=(start, end))


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Return the [start, end) range of a `Range` header, or None for the whole file.

    A request for multiple ranges gets the whole file, which RFC 9110 allows.
    """
    if not header or "," in header:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        start, end = max(size - int(last), 0), size
    else:
        start = int(first)
        end = min(int(last) + 1, size) if last else size
    if start >= size or start >= end:
        raise HubError(
            416,
            f"Range {header!r} is outside the file ({size} bytes).",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return start, end


def _content_type(path: str) -> str:
    guessed, _ = mimetypes.guess_type(path)
    if guessed is None:
        return "application/octet-stream"
    if guessed.startswith("text/") or guessed == "application/json":
        return f"{guessed}; charset=utf-8"
    return guessed
