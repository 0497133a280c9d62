"""Repos, commits, blobs and LFS objects of the test Hub, kept in a state folder.

Layout of ``<state>/repos/<type>s/<namespace>/<name>/`` (names lowercased, since
the Hub treats repo ids case-insensitively):

- ``repo.json``: settings, branches, tags and gated-access grants.
- ``commits/<id>.json``: one file per commit, with the full list of files it
  contains (path, blob id, size, LFS oid).
- ``blobs/<id[:2]>/<id>``: content of regular files, by git blob id.
- ``lfs/<oid[:2]>/<oid>``: LFS objects, by sha256. Each repo has its own, as on
  the Hub, so an object uploaded to one repo cannot be committed to another.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hubquant.testhub import gitobjects
from hubquant.testhub.errors import (
    HubError,
    entry_not_found,
    repo_not_found,
    revision_not_found,
)
from hubquant.testhub.fsutil import read_json, write_bytes_atomic, write_json_atomic
from hubquant.testhub.uploadrules import DEFAULT_GITATTRIBUTES

logger = logging.getLogger(__name__)

DEFAULT_BRANCH = "main"


_clock_lock = threading.Lock()
_last_timestamp = datetime.min.replace(tzinfo=timezone.utc)


def utc_now() -> datetime:
    """Return the time in milliseconds, as the Hub's timestamps have them.

    Each call returns a later time than the one before in this process, so
    sorting repos or commits by date never meets a tie.
    """
    global _last_timestamp
    now = datetime.now(timezone.utc)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    with _clock_lock:
        if now <= _last_timestamp:
            now = _last_timestamp + timedelta(milliseconds=1)
        _last_timestamp = now
    return now


def format_date(date: datetime) -> str:
    """Format a date as the Hub does: `2024-05-01T12:30:00.000Z`."""
    return date.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{date.microsecond // 1000:03d}Z"
    )


def parse_date(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class FileEntry:
    """A file in a commit. For LFS files, `blob` is the id of the pointer file."""

    blob: str
    size: int
    lfs_oid: str | None = None
    pointer_size: int | None = None

    def to_json(self) -> dict:
        data: dict = {"blob": self.blob, "size": self.size}
        if self.lfs_oid is not None:
            data["lfsOid"] = self.lfs_oid
            data["pointerSize"] = self.pointer_size
        return data

    @classmethod
    def from_json(cls, data: dict) -> FileEntry:
        return cls(
            data["blob"], data["size"], data.get("lfsOid"), data.get("pointerSize")
        )

    @classmethod
    def regular(cls, content: bytes) -> FileEntry:
        return cls(gitobjects.blob_id(content), len(content))

    @classmethod
    def lfs(cls, oid: str, size: int) -> FileEntry:
        pointer = gitobjects.lfs_pointer(oid, size)
        return cls(gitobjects.blob_id(pointer), size, oid, len(pointer))

    @property
    def etag(self) -> str:
        """The id the Hub sends as ETag: sha256 for LFS files, git blob id otherwise."""
        return self.lfs_oid if self.lfs_oid is not None else self.blob


@dataclass(frozen=True)
class Commit:
    id: str
    tree: str
    parents: tuple[str, ...]
    title: str
    message: str
    authors: tuple[str, ...]
    date: datetime
    files: dict[str, FileEntry]

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "tree": self.tree,
            "parents": list(self.parents),
            "title": self.title,
            "message": self.message,
            "authors": list(self.authors),
            "date": format_date(self.date),
            "files": {
                path: entry.to_json() for path, entry in sorted(self.files.items())
            },
        }

    @classmethod
    def from_json(cls, data: dict) -> Commit:
        return cls(
            id=data["id"],
            tree=data["tree"],
            parents=tuple(data["parents"]),
            title=data["title"],
            message=data["message"],
            authors=tuple(data["authors"]),
            date=parse_date(data["date"]),
            files={
                path: FileEntry.from_json(entry)
                for path, entry in data["files"].items()
            },
        )


@dataclass(frozen=True)
class AddFile:
    path: str
    entry: FileEntry


@dataclass(frozen=True)
class DeleteFile:
    path: str


@dataclass(frozen=True)
class DeleteFolder:
    path: str


CommitOperation = AddFile | DeleteFile | DeleteFolder


@dataclass
class RepoSettings:
    """The mutable part of `repo.json`."""

    id: str
    type: str
    private: bool = False
    gated: str | bool = False
    created_at: str = ""
    sdk: str | None = None
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    gated_grants: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "type": self.type,
            "private": self.private,
            "gated": self.gated,
            "createdAt": self.created_at,
            "sdk": self.sdk,
            "branches": self.branches,
            "tags": self.tags,
            "gatedGrants": self.gated_grants,
        }

    @classmethod
    def from_json(cls, data: dict) -> RepoSettings:
        return cls(
            id=data["id"],
            type=data["type"],
            private=data.get("private", False),
            gated=data.get("gated", False),
            created_at=data.get("createdAt", ""),
            sdk=data.get("sdk"),
            branches=dict(data.get("branches", {})),
            tags=dict(data.get("tags", {})),
            gated_grants=list(data.get("gatedGrants", [])),
        )


class Repo:
    """One repo on disk. Methods that change it hold `self.lock`."""

    def __init__(self, path: Path, settings: RepoSettings) -> None:
        self.path = path
        self.settings = settings
        self.lock = threading.RLock()
        # Set by RepoStore.delete, so a request that found the repo before the
        # deletion cannot write it back to disk.
        self.deleted = False
        self._commit_cache: dict[str, Commit] = {}

    @property
    def id(self) -> str:
        return self.settings.id

    @property
    def type(self) -> str:
        return self.settings.type

    @property
    def namespace(self) -> str:
        return self.settings.id.split("/")[0]

    def save(self) -> None:
        self._check_not_deleted()
        write_json_atomic(self.path / "repo.json", self.settings.to_json())

    def _check_not_deleted(self) -> None:
        if self.deleted:
            raise repo_not_found(self.type, self.id, anonymous=False)

    # -- commits -----------------------------------------------------------

    def load_commit(self, commit_id: str) -> Commit:
        cached = self._commit_cache.get(commit_id)
        if cached is not None:
            return cached
        commit = Commit.from_json(
            read_json(self.path / "commits" / f"{commit_id}.json")
        )
        self._commit_cache[commit_id] = commit
        return commit

    def resolve(self, revision: str) -> str:
        """Return the commit id a branch, tag or (short) commit id points at.

        Raises a RevisionNotFound error when nothing matches.
        """
        with self.lock:
            name = revision
            for prefix in ("refs/heads/", "refs/tags/"):
                if name.startswith(prefix):
                    name = name[len(prefix) :]
            if name in self.settings.branches and not revision.startswith("refs/tags/"):
                return self.settings.branches[name]
            if name in self.settings.tags and not revision.startswith("refs/heads/"):
                return self.settings.tags[name]
            lowered = revision.lower()
            if 7 <= len(lowered) <= 40 and all(
                char in "0123456789abcdef" for char in lowered
            ):
                matches = [
                    item.stem
                    for item in (self.path / "commits").glob(f"{lowered}*.json")
                ]
                if len(matches) == 1:
                    return matches[0]
        raise revision_not_found(self.id, revision)

    def history(self, commit_id: str) -> Iterator[Commit]:
        """Yield `commit_id` and its first-parent ancestors, newest first."""
        current: str | None = commit_id
        while current is not None:
            commit = self.load_commit(current)
            yield commit
            current = commit.parents[0] if commit.parents else None

    def create_commit(
        self,
        branch: str,
        operations: list[CommitOperation],
        *,
        title: str,
        message: str,
        author: str,
        parent_commit: str | None = None,
    ) -> Commit:
        """Apply `operations` on top of the head of `branch` and move the branch.

        The repo lock is held from reading the head to moving the branch, so two
        concurrent commits to one branch both land, one on top of the other.
        `parent_commit`, when given, must be (a prefix of) the current head, or
        the commit is rejected with 412 as the Hub does.
        """
        with self.lock:
            self._check_not_deleted()
            head = self.settings.branches.get(branch)
            if head is None:
                raise revision_not_found(self.id, branch)
            if parent_commit is not None and not head.startswith(parent_commit.lower()):
                raise HubError(
                    412,
                    "A commit has happened since. Please refresh and try again."
                    f" The head of {branch!r} is {head}, not {parent_commit}.",
                )
            files = dict(self.load_commit(head).files)
            for operation in operations:
                _apply(operation, files, self.id, branch)
            commit = self._write_commit(
                files, parents=(head,), title=title, message=message, author=author
            )
            self.settings.branches[branch] = commit.id
            self.save()
            return commit

    def write_initial_commit(self, author: str) -> Commit:
        gitattributes = DEFAULT_GITATTRIBUTES.encode()
        self.store_blob(gitattributes)
        files = {".gitattributes": FileEntry.regular(gitattributes)}
        commit = self._write_commit(
            files, parents=(), title="initial commit", message="", author=author
        )
        self.settings.branches[DEFAULT_BRANCH] = commit.id
        return commit

    def _write_commit(
        self,
        files: dict[str, FileEntry],
        *,
        parents: tuple[str, ...],
        title: str,
        message: str,
        author: str,
    ) -> Commit:
        date = utc_now()
        tree = gitobjects.tree_ids({path: entry.blob for path, entry in files.items()})[
            ""
        ]
        commit_id = gitobjects.commit_id(
            tree=tree,
            parents=list(parents),
            author=author,
            date=date,
            title=title,
            message=message,
        )
        commit = Commit(
            commit_id, tree, parents, title, message, (author,), date, files
        )
        target = self.path / "commits" / f"{commit_id}.json"
        write_bytes_atomic(target, json.dumps(commit.to_json(), indent=1).encode())
        self._commit_cache[commit_id] = commit
        return commit

    # -- refs --------------------------------------------------------------

    def create_branch(self, branch: str, start: str) -> None:
        with self.lock:
            if branch in self.settings.branches:
                raise HubError(409, f"Branch {branch!r} already exists in {self.id!r}.")
            self.settings.branches[branch] = start
            self.save()

    def delete_branch(self, branch: str) -> None:
        with self.lock:
            if branch == DEFAULT_BRANCH:
                raise HubError(
                    403, f"The default branch {DEFAULT_BRANCH!r} cannot be deleted."
                )
            if branch not in self.settings.branches:
                raise revision_not_found(self.id, branch)
            del self.settings.branches[branch]
            self.save()

    def create_tag(self, tag: str, target: str) -> None:
        with self.lock:
            if tag in self.settings.tags:
                raise HubError(409, f"Tag {tag!r} already exists in {self.id!r}.")
            self.settings.tags[tag] = target
            self.save()

    def delete_tag(self, tag: str) -> None:
        with self.lock:
            if tag not in self.settings.tags:
                raise revision_not_found(self.id, tag)
            del self.settings.tags[tag]
            self.save()

    # -- content -----------------------------------------------------------

    def blob_path(self, blob: str) -> Path:
        return self.path / "blobs" / blob[:2] / blob

    def store_blob(self, content: bytes) -> str:
        blob = gitobjects.blob_id(content)
        target = self.blob_path(blob)
        if not target.exists():
            write_bytes_atomic(target, content)
        return blob

    def read_blob(self, blob: str) -> bytes:
        return self.blob_path(blob).read_bytes()

    def lfs_path(self, oid: str) -> Path:
        return self.path / "lfs" / oid[:2] / oid

    def has_lfs_object(self, oid: str) -> bool:
        return self.lfs_path(oid).is_file()

    def lfs_object_size(self, oid: str) -> int | None:
        try:
            return self.lfs_path(oid).stat().st_size
        except FileNotFoundError:
            return None

    def add_lfs_object(self, oid: str, staged: Path) -> None:
        """Move a verified upload into the repo's LFS store."""
        self._check_not_deleted()
        target = self.lfs_path(oid)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)

    def file_content_path(self, entry: FileEntry) -> Path:
        """Return the path of the bytes a download of `entry` sends."""
        if entry.lfs_oid is not None:
            return self.lfs_path(entry.lfs_oid)
        return self.blob_path(entry.blob)

    def read_text_file(self, commit: Commit, path: str) -> str | None:
        """Return a regular file's text at `commit`, or None if it is missing or LFS."""
        entry = commit.files.get(path)
        if entry is None or entry.lfs_oid is not None:
            return None
        return self.read_blob(entry.blob).decode("utf-8", errors="replace")


def _apply(
    operation: CommitOperation, files: dict[str, FileEntry], repo_id: str, branch: str
) -> None:
    if isinstance(operation, AddFile):
        # A file cannot replace a folder or sit below a file.
        prefix = operation.path + "/"
        if any(existing.startswith(prefix) for existing in files):
            raise HubError(
                400,
                f"Cannot add file {operation.path!r}: a folder with this name exists.",
            )
        parts = operation.path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in files:
                raise HubError(
                    400,
                    f"Cannot add file {operation.path!r}: {parent!r} is a file,"
                    " not a folder.",
                )
        files[operation.path] = operation.entry
    elif isinstance(operation, DeleteFile):
        if operation.path not in files:
            error = entry_not_found(repo_id, branch, operation.path)
            # The client looks for this sentence to hint at file/folder confusion.
            error.message = (
                "A file with this name doesn't exist:"
                f" {operation.path!r} in {repo_id!r}"
                f" at {branch!r}."
            )
            raise error
        del files[operation.path]
    else:
        prefix = operation.path.rstrip("/") + "/"
        doomed = [path for path in files if path.startswith(prefix)]
        if not doomed:
            error = entry_not_found(repo_id, branch, operation.path)
            error.message = (
                "A folder with this name doesn't exist:"
                f" {operation.path!r} in {repo_id!r}"
                f" at {branch!r}."
            )
            raise error
        for path in doomed:
            del files[path]


class RepoExistsError(HubError):
    """409 for a repo that exists; the handler adds the repo's `url` to the body."""

    def __init__(self, repo: Repo) -> None:
        super().__init__(
            409, f"You already created this {repo.type} repo: {repo.id!r}."
        )
        self.repo = repo


class RepoStore:
    """All repos under ``<state>/repos``, loaded at start and kept in memory."""

    def __init__(self, state_dir: Path) -> None:
        self._root = state_dir / "repos"
        self._trash = state_dir / "trash"
        self._lock = threading.Lock()
        self._repos: dict[tuple[str, str], Repo] = {}
        self._root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self._trash, ignore_errors=True)
        for settings_file in self._root.glob("*/*/*/repo.json"):
            settings = RepoSettings.from_json(read_json(settings_file))
            repo = Repo(settings_file.parent, settings)
            self._repos[_key(settings.type, settings.id)] = repo
        logger.debug("Loaded %d repos from %s", len(self._repos), self._root)

    def get(self, repo_type: str, repo_id: str) -> Repo | None:
        with self._lock:
            return self._repos.get(_key(repo_type, repo_id))

    def all(self, repo_type: str) -> list[Repo]:
        with self._lock:
            return [repo for repo in self._repos.values() if repo.type == repo_type]

    def create(
        self,
        repo_type: str,
        repo_id: str,
        *,
        private: bool,
        author: str,
        sdk: str | None,
    ) -> Repo:
        """Create a repo with its initial commit. Raises 409 when it exists."""
        with self._lock:
            key = _key(repo_type, repo_id)
            if key in self._repos:
                raise RepoExistsError(self._repos[key])
            namespace, name = key[1].split("/")
            path = self._root / f"{repo_type}s" / namespace / name
            shutil.rmtree(path, ignore_errors=True)
            settings = RepoSettings(
                id=repo_id,
                type=repo_type,
                private=private,
                created_at=format_date(utc_now()),
                sdk=sdk,
            )
            repo = Repo(path, settings)
            repo.write_initial_commit(author)
            repo.save()
            self._repos[key] = repo
            return repo

    def delete(self, repo: Repo) -> None:
        with self._lock, repo.lock:
            self._repos.pop(_key(repo.type, repo.id), None)
            repo.deleted = True
            self._trash.mkdir(parents=True, exist_ok=True)
            # Move first, so a new repo of the same name never finds old files.
            moved = self._trash / uuid.uuid4().hex
            os.replace(repo.path, moved)
        shutil.rmtree(moved, ignore_errors=True)


def _key(repo_type: str, repo_id: str) -> tuple[str, str]:
    return repo_type, repo_id.lower()


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()
