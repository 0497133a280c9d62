"""Error responses of the test Hub, with the headers the client maps to exceptions."""

from __future__ import annotations


class HubError(Exception):
    """An HTTP error response.

    `error_code` goes into the `X-Error-Code` header. `huggingface_hub` 2.4.0
    (`utils._http.hf_raise_for_status`) turns "RepoNotFound", "RevisionNotFound",
    "EntryNotFound" and "GatedRepo" into its own exception classes.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_code: str | None = None,
        headers: dict[str, str] | None = None,
        body: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = dict(headers or {})
        self.body = body


def repo_not_found(repo_type: str, repo_id: str, *, anonymous: bool) -> HubError:
    # The Hub returns 401 to anonymous requests, so they cannot tell a private repo
    # from a missing one, and 404 to authenticated ones.
    return HubError(
        401 if anonymous else 404,
        f"Repository not found: {repo_type} {repo_id!r} does not exist or you cannot"
        " access it.",
        error_code="RepoNotFound",
    )


def revision_not_found(repo_id: str, revision: str) -> HubError:
    return HubError(
        404,
        f"Invalid rev id: {revision!r} is not a branch, tag or commit of {repo_id!r}.",
        error_code="RevisionNotFound",
    )


def entry_not_found(
    repo_id: str, revision: str, path: str, *, commit: str | None = None
) -> HubError:
    headers = {"X-Repo-Commit": commit} if commit else None
    return HubError(
        404,
        f"Entry not found: {path!r} does not exist in {repo_id!r} at revision"
        f" {revision!r}.",
        error_code="EntryNotFound",
        headers=headers,
    )


def forbidden(message: str) -> HubError:
    return HubError(403, message)


def bad_request(message: str) -> HubError:
    return HubError(400, message)
