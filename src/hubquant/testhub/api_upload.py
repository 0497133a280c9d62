"""Endpoints that write files: preupload, LFS batch, signed uploads and commits."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from typing import TYPE_CHECKING

from hubquant.testhub.errors import HubError, bad_request
from hubquant.testhub.naming import invalid_path_reason
from hubquant.testhub.params import json_object
from hubquant.testhub.storage import (
    AddFile,
    CommitOperation,
    DeleteFile,
    DeleteFolder,
    FileEntry,
    Repo,
)
from hubquant.testhub.transport import Request, Response
from hubquant.testhub.uploadrules import (
    LFS_SIZE_THRESHOLD,
    choose_upload_mode,
    gitignored,
)

if TYPE_CHECKING:
    from hubquant.testhub.app import Context, HubApp

logger = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LFS_JSON = {"Content-Type": "application/vnd.git-lfs+json"}


def preupload(
    app: HubApp, context: Context, repo_type: str, repo_id: str, revision: str
) -> Response:
    """Return, per file, whether to upload it through LFS and whether git ignores it."""
    repo = app.find_writable_repo(context, repo_type, repo_id)
    _reject_pull_requests(context.request)
    commit_id = repo.resolve(revision)
    commit = repo.load_commit(commit_id)
    payload = json_object(context)
    files = payload.get("files")
    if not isinstance(files, list):
        raise bad_request('The preupload body needs a "files" list.')
    gitattributes = repo.read_text_file(commit, ".gitattributes") or ""
    gitignore = payload.get("gitIgnore")
    if not isinstance(gitignore, str):
        gitignore = repo.read_text_file(commit, ".gitignore") or ""

    answers = []
    for item in files:
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise bad_request(f"Invalid preupload entry {item!r}: each needs a path.")
        path = item["path"]
        size = item.get("size")
        if not isinstance(size, int) or size < 0:
            raise bad_request(
                f"Invalid size {size!r} for {path!r}: expected a byte count."
            )
        try:
            sample = base64.b64decode(item.get("sample") or "", validate=True)
        except binascii.Error:
            raise bad_request(f"Invalid base64 sample for {path!r}.") from None
        mode = choose_upload_mode(path, size, sample, gitattributes)
        answer: dict = {
            "path": path,
            "uploadMode": mode,
            "shouldIgnore": gitignored(path, gitignore),
        }
        existing = commit.files.get(path)
        if existing is not None:
            # The client skips a file whose local id equals this one: sha256 for
            # LFS uploads, the git blob id for regular ones.
            answer["oid"] = existing.lfs_oid if mode == "lfs" else existing.blob
        answers.append(answer)
        logger.debug("Preupload %s: %s (%d bytes)", path, mode, size)
    return Response.json({"files": answers, "commitOid": commit_id})


def lfs_objects(
    app: HubApp, context: Context, repo_type: str, repo_id: str, rest: list[str]
) -> Response:
    method = context.request.method
    match rest:
        case ["batch"] if method == "POST":
            return _lfs_batch(app, context, repo_type, repo_id)
        case ["verify"] if method == "POST":
            return _lfs_verify(app, context, repo_type, repo_id)
        case [oid] if method == "GET":
            return _lfs_download(app, context, repo_type, repo_id, oid)
    raise HubError(404, f"No LFS endpoint for {method} {context.request.path}.")


def _lfs_batch(app: HubApp, context: Context, repo_type: str, repo_id: str) -> Response:
    payload = json_object(context)
    operation = payload.get("operation")
    objects = payload.get("objects")
    if operation not in ("upload", "download") or not isinstance(objects, list):
        raise bad_request(
            'An LFS batch needs "operation" (upload or download) and "objects".'
        )
    if operation == "upload":
        repo = app.find_writable_repo(context, repo_type, repo_id)
    else:
        repo = app.find_repo(context, repo_type, repo_id)
        app.require_download(context, repo)
    transfers = payload.get("transfers") or ["basic"]
    multipart_allowed = "multipart" in transfers

    answers = []
    used_multipart = False
    for item in objects:
        oid = item.get("oid") if isinstance(item, dict) else None
        size = item.get("size") if isinstance(item, dict) else None
        if (
            not isinstance(oid, str)
            or not _SHA256.match(oid)
            or not isinstance(size, int)
            or size < 0
        ):
            answers.append(_lfs_object_error(oid, size, 422, "Invalid oid or size."))
            continue
        stored_size = repo.lfs_object_size(oid)
        if operation == "download":
            if stored_size is None:
                answers.append(
                    _lfs_object_error(oid, size, 404, "Object does not exist.")
                )
            else:
                answers.append(_download_action(app, context, repo, oid, stored_size))
            continue
        if stored_size is not None:
            # Present already: no actions, so the client skips the upload.
            answers.append({"oid": oid, "size": size})
            continue
        multipart = multipart_allowed and size > app.config.lfs_chunk_size
        used_multipart = used_multipart or multipart
        answers.append(_upload_action(app, repo, oid, size, multipart=multipart))
    transfer = "multipart" if used_multipart else "basic"
    return Response(
        200,
        dict(_LFS_JSON),
        json.dumps({"transfer": transfer, "objects": answers}).encode(),
    )


def _upload_action(
    app: HubApp, repo: Repo, oid: str, size: int, *, multipart: bool
) -> dict:
    chunk_size = app.config.lfs_chunk_size if multipart else None
    upload = app.uploads.start(repo, oid, size, chunk_size=chunk_size)
    base = f"{app.config.base_url}/_lfs/upload/{upload.upload_id}"
    verify = {"href": _lfs_url(app, repo, "verify")}
    if not multipart:
        upload_action = {"href": f"{base}?key={upload.keys['basic']}"}
    else:
        # The client reads the part URLs from numbered header keys and the
        # completion URL from href (`huggingface_hub.lfs._upload_multi_part`).
        header: dict[str, str] = {"chunk_size": str(chunk_size)}
        for part in range(1, upload.part_count + 1):
            header[str(part)] = f"{base}/part/{part}?key={upload.keys[str(part)]}"
        upload_action = {
            "href": f"{base}/complete?key={upload.keys['complete']}",
            "header": header,
        }
    return {
        "oid": oid,
        "size": size,
        "authenticated": True,
        "actions": {"upload": upload_action, "verify": verify},
    }


def _download_action(
    app: HubApp, context: Context, repo: Repo, oid: str, size: int
) -> dict:
    action: dict = {"href": _lfs_url(app, repo, oid)}
    authorization = context.request.headers.get("Authorization")
    if authorization:
        action["header"] = {"Authorization": authorization}
    return {
        "oid": oid,
        "size": size,
        "authenticated": True,
        "actions": {"download": action},
    }


def _lfs_object_error(oid: object, size: object, code: int, message: str) -> dict:
    return {
        "oid": oid if isinstance(oid, str) else "",
        "size": size if isinstance(size, int) else 0,
        "error": {"code": code, "message": message},
    }


def _lfs_url(app: HubApp, repo: Repo, tail: str) -> str:
    return f"{app.repo_url(repo.type, repo.id)}.git/info/lfs/objects/{tail}"


def _lfs_verify(
    app: HubApp, context: Context, repo_type: str, repo_id: str
) -> Response:
    repo = app.find_writable_repo(context, repo_type, repo_id)
    payload = json_object(context)
    oid, size = payload.get("oid"), payload.get("size")
    stored_size = (
        repo.lfs_object_size(oid)
        if isinstance(oid, str) and _SHA256.match(oid)
        else None
    )
    if stored_size is None:
        raise HubError(404, f"LFS object {oid!r} was not uploaded to {repo.id!r}.")
    if stored_size != size:
        raise HubError(422, f"LFS object {oid} has {stored_size} bytes, not {size}.")
    return Response(200, dict(_LFS_JSON), b"{}")


def _lfs_download(
    app: HubApp, context: Context, repo_type: str, repo_id: str, oid: str
) -> Response:
    repo = app.find_repo(context, repo_type, repo_id)
    app.require_download(context, repo)
    size = repo.lfs_object_size(oid) if _SHA256.match(oid) else None
    if size is None:
        raise HubError(404, f"LFS object {oid!r} does not exist in {repo.id!r}.")
    headers = {"Content-Type": "application/octet-stream"}
    return Response(200, headers, file=repo.lfs_path(oid), file_range=(0, size))


def signed_upload(app: HubApp, request: Request, segments: list[str]) -> Response:
    """Receive uploads on the URLs from `_upload_action`, authorized by their `key`."""
    key = request.param("key") or ""
    match segments:
        case ["upload", upload_id] if request.method == "PUT":
            app.uploads.receive_basic(upload_id, key, request.body.chunks())
            return Response(200, {"ETag": '"uploaded"'})
        case ["upload", upload_id, "part", part] if (
            request.method == "PUT" and part.isdigit()
        ):
            etag = app.uploads.receive_part(
                upload_id, int(part), key, request.body.chunks()
            )
            return Response(200, {"ETag": etag})
        case ["upload", upload_id, "complete"] if request.method == "POST":
            payload = request.body.json()
            if not isinstance(payload, dict):
                raise bad_request("The completion body must be a JSON object.")
            app.uploads.complete(upload_id, key, payload)
            return Response(200, dict(_LFS_JSON), b"{}")
    raise HubError(404, f"No upload endpoint for {request.method} {request.path}.")


def commit(
    app: HubApp, context: Context, repo_type: str, repo_id: str, revision: str
) -> Response:
    """Apply an NDJSON commit: header, file, lfsFile, deletedFile, deletedFolder."""
    repo = app.find_writable_repo(context, repo_type, repo_id)
    _reject_pull_requests(context.request)
    revision = revision.removeprefix("refs/heads/")
    if revision not in repo.settings.branches:
        repo.resolve(revision)  # Raises RevisionNotFound for names that match nothing.
        raise bad_request(
            f"Cannot commit to {revision!r}: it is not a branch of {repo.id!r}."
        )

    header, operations = _parse_commit(repo, context.request)
    summary = header.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        raise bad_request('The commit header needs a non-empty "summary".')
    description = header.get("description") or ""
    parent_commit = header.get("parentCommit")
    if parent_commit is not None and not isinstance(parent_commit, str):
        raise bad_request(
            f"Invalid parentCommit {parent_commit!r}: expected a commit id."
        )

    assert context.identity is not None  # find_writable_repo checked it.
    created = repo.create_commit(
        revision,
        operations,
        title=summary.strip(),
        message=str(description),
        author=context.identity.user,
        parent_commit=parent_commit,
    )
    logger.info(
        "Commit %s on %s@%s: %d operations",
        created.id[:12],
        repo.id,
        revision,
        len(operations),
    )
    commit_url = f"{app.repo_url(repo.type, repo.id)}/commit/{created.id}"
    return Response.json(
        {
            "success": True,
            "commitOid": created.id,
            "commitUrl": commit_url,
            "hookOutput": "",
            "pullRequestUrl": None,
        }
    )


def _parse_commit(repo: Repo, request: Request) -> tuple[dict, list[CommitOperation]]:
    """Read the NDJSON body, storing file contents as they arrive."""
    header: dict | None = None
    operations: list[CommitOperation] = []
    for number, line in enumerate(request.body.lines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise bad_request(
                f"Line {number} of the commit is not JSON: {error}."
            ) from None
        if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
            raise bad_request(
                f'Line {number} of the commit needs a "key" and a "value" object.'
            )
        key, value = item.get("key"), item["value"]
        if key == "header":
            header = value
            continue
        if header is None:
            raise bad_request("The first line of a commit must be its header.")
        path = value.get("path")
        if not isinstance(path, str):
            raise bad_request(f"Line {number} of the commit has no path.")
        # Folder deletions name the folder with a trailing "/".
        reason = invalid_path_reason(
            path.rstrip("/") if key == "deletedFolder" else path
        )
        if reason is not None:
            raise bad_request(f"Invalid path {path!r} on line {number}: {reason}.")
        if key == "file":
            operations.append(AddFile(path, _regular_file(repo, value, path)))
        elif key == "lfsFile":
            operations.append(AddFile(path, _lfs_file(repo, value, path)))
        elif key == "deletedFile":
            operations.append(DeleteFile(path))
        elif key == "deletedFolder":
            operations.append(DeleteFolder(path))
        else:
            raise bad_request(f"Unknown commit operation {key!r} on line {number}.")
    if header is None:
        raise bad_request("The commit body is empty: it needs at least a header line.")
    return header, operations


def _regular_file(repo: Repo, value: dict, path: str) -> FileEntry:
    content = value.get("content")
    if not isinstance(content, str):
        raise bad_request(f"File {path!r} has no content.")
    if value.get("encoding") == "base64":
        try:
            data = base64.b64decode(content, validate=True)
        except binascii.Error:
            raise bad_request(f"Invalid base64 content for {path!r}.") from None
    else:
        data = content.encode("utf-8")
    if len(data) >= LFS_SIZE_THRESHOLD:
        raise bad_request(
            f"Your push was rejected because {path!r} is larger than 10 MiB"
            f" ({len(data)} bytes). Upload it through LFS."
        )
    repo.store_blob(data)
    return FileEntry.regular(data)


def _lfs_file(repo: Repo, value: dict, path: str) -> FileEntry:
    oid = value.get("oid")
    if (
        value.get("algo", "sha256") != "sha256"
        or not isinstance(oid, str)
        or not _SHA256.match(oid)
    ):
        raise bad_request(f"Invalid LFS oid {oid!r} for {path!r}: expected a sha256.")
    stored_size = repo.lfs_object_size(oid)
    if stored_size is None:
        raise bad_request(
            "Your push was rejected because an LFS pointer pointed to a file that does"
            f" not exist: {path!r} (oid {oid}). Upload it through the LFS batch"
            " endpoint first."
        )
    size = value.get("size", stored_size)
    if size != stored_size:
        raise bad_request(
            f"LFS file {path!r} declares {size} bytes, but object {oid} has"
            f" {stored_size}."
        )
    return FileEntry.lfs(oid, stored_size)


def _reject_pull_requests(request: Request) -> None:
    if request.flag("create_pr"):
        # TODO: support pull requests (refs/pr/N) once a caller needs create_pr=True.
        raise bad_request(
            "The test Hub does not support create_pr; commit to a branch instead."
        )
