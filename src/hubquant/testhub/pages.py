"""The test Hub's HTML page of a model repo, for browser tests that follow release links.

A browser is signed in to the test Hub after it authorized an app on the OAuth
consent page (`hubquant.testhub.oauth`). Private repos are shown only to their
owner and the members of their organization, and any other viewer gets the same
404 page as for a missing repo.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING
from urllib.parse import unquote

from hubquant.testhub.storage import DEFAULT_BRANCH
from hubquant.testhub.transport import Response

if TYPE_CHECKING:
    from hubquant.testhub.app import HubApp
    from hubquant.testhub.transport import Request


def handle(app: HubApp, request: Request, viewer: str | None) -> Response | None:
    """Return the page for ``GET /{owner}/{name}``, or None for any other request."""
    segments = [unquote(part) for part in request.path.split("/")[1:] if part]
    if request.method != "GET" or len(segments) != 2 or segments[0] in ("api", "datasets", "spaces", "oauth"):
        return None
    repo_id = "/".join(segments)
    repo = app.store.get("model", repo_id)
    if repo is None or (repo.settings.private and not app.is_member(repo, viewer)):
        body = f"<p>Repository not found: {html.escape(repo_id)} does not exist or you cannot access it.</p>"
        return _page("404", body, 404)
    commit = repo.load_commit(repo.resolve(DEFAULT_BRANCH))
    visibility = "private" if repo.settings.private else "public"
    if repo.settings.gated:
        visibility += ", gated"
    files = "".join(
        f'<li><code>{html.escape(path)}</code> ({entry.size:,} bytes)</li>' for path, entry in sorted(commit.files.items())
    )
    card = repo.read_text_file(commit, "README.md") or ""
    body = (
        f'<p id="visibility">{visibility}</p>'
        f'<p>Last commit <code>{commit.id[:12]}</code>: {html.escape(commit.title)}</p>'
        f'<h2>Files</h2><ul id="files">{files}</ul>'
        f'<h2>Model card</h2><pre id="card">{html.escape(card)}</pre>'
    )
    return _page(repo_id, body)


def _page(title: str, body: str, status: int = 200) -> Response:
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} - test Hub</title>'
        "<style>body { font-family: sans-serif; max-width: 60rem; margin: 2rem auto; }"
        " pre { white-space: pre-wrap; background: #f3f4f6; padding: 1rem; }</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return Response(status, {"Content-Type": "text/html; charset=utf-8"}, page.encode())
