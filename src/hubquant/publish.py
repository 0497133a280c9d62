"""Publishing releases: one commit per repo, never half a release, never a leak.

Each release repo carries ``hubquant.json``, a manifest naming the source id and
sha and the facts of every file, so a later run can tell whether the repo is
hubquant's release of the same source, and rebuild or skip accordingly.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

from hubquant.errors import PublishError, TransientError
from hubquant.source import LICENSE_FILES

log = logging.getLogger(__name__)

MANIFEST = "hubquant.json"


@dataclass
class RepoPlan:
    """Where a release goes and what is already there."""

    repo_id: str
    exists: bool
    manifest: dict | None
    # The repo's own visibility when it exists, else the visibility to create it with.
    private: bool
    gated: bool
    note: str = ""
    # An existing repo with no files but .gitattributes.
    empty: bool = False

    @property
    def up_to_date_targets(self) -> list[str]:
        return list((self.manifest or {}).get("targets", []))


def visibility_for(source_private: bool, source_gated: bool, public: bool | None) -> tuple[bool, bool, str]:
    """Return (private, gated, explanation) for a release of such a source.

    A private or gated source gives a private release unless the user asks for a
    public one; a gated source published publicly stays gated.
    """
    if source_private or source_gated:
        kind = "private" if source_private else "gated"
        if public:
            if source_gated and not source_private:
                return False, True, "the source is gated, so the public release is gated too"
            return False, False, f"the source is {kind}; publishing publicly because --public was given"
        return True, False, f"the source is {kind}, so the release is private (pass --public to change)"
    if public is False:
        return True, False, "private because --private was given"
    return False, False, "public, like the source"


def read_manifest(api: HfApi, repo_id: str) -> dict | None:
    try:
        path = api.hf_hub_download(repo_id, MANIFEST)
    except (EntryNotFoundError, RepositoryNotFoundError):
        return None
    except HfHubHTTPError as error:
        if error.response is not None and error.response.status_code == 404:
            return None
        raise
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError:
        return None


def plan_repo(
    api: HfApi,
    *,
    namespace: str,
    base_name: str,
    source_id: str | None,
    source_owner: str | None,
    private: bool,
    gated: bool,
    update_existing: bool,
    name_given: bool,
    reuse_empty: bool = False,
) -> RepoPlan:
    """Pick the release repo and check that hubquant may write to it.

    A repo that exists is used only when its manifest names the same source, or
    with ``update_existing``. When the default name is held by hubquant's release
    of another source with the same base name, the source owner joins the name.
    """
    repo_id = f"{namespace}/{base_name}"
    plan = _inspect_repo(api, repo_id, private, gated)
    if not plan.exists or update_existing:
        return plan
    if plan.empty and reuse_empty:
        # A run that stopped after creating the repo and before its commit
        # (a killed bot worker) leaves it empty, and nothing in it can be lost.
        plan.note = f"{repo_id} exists and is empty, so the release goes there"
        return plan
    manifest_source = (plan.manifest or {}).get("source", {}).get("id")
    if plan.manifest is not None and manifest_source == source_id:
        return plan
    if plan.manifest is not None and not name_given and source_owner:
        alternative = f"{namespace}/{source_owner}-{base_name}"
        other = _inspect_repo(api, alternative, private, gated)
        other_source = (other.manifest or {}).get("source", {}).get("id")
        if not other.exists or other_source == source_id:
            other.note = f"{repo_id} holds a release of {manifest_source}, so this one is named {alternative}"
            return other
    owner = f"hubquant's release of {manifest_source}" if plan.manifest else "a repo hubquant did not create"
    raise PublishError(
        f"{repo_id} already exists and is {owner}; pass --repo-name NAME to publish "
        "under another name, or --update-existing to replace its release"
    )


def _inspect_repo(api: HfApi, repo_id: str, private: bool, gated: bool) -> RepoPlan:
    try:
        info = api.model_info(repo_id)
    except RepositoryNotFoundError:
        return RepoPlan(repo_id, False, None, private, gated)
    except HfHubHTTPError as error:
        raise TransientError(f"checking {repo_id} on the Hub failed: {error}") from None
    empty = all(sibling.rfilename == ".gitattributes" for sibling in info.siblings or [])
    manifest = None if empty else read_manifest(api, repo_id)
    return RepoPlan(repo_id, True, manifest, bool(info.private), bool(info.gated), empty=empty)


def release_files(manifest: dict) -> set[str]:
    """Return the repo files a hubquant release made, as its manifest lists them."""
    names = {"README.md", MANIFEST}
    for entry in manifest.get("artifacts", []):
        names.update(entry.get("files", []))
        names.update(entry.get("shared_files", []))
    return names


def _is_license_file(name: str) -> bool:
    return "/" not in name and any(fnmatch.fnmatch(name, pattern) for pattern in LICENSE_FILES)


@dataclass
class HubPublisher:
    """Uploads files as they are ready (LFS preupload) and commits once at the end."""

    api: HfApi
    plan: RepoPlan
    operations: list[CommitOperationAdd] = field(default_factory=list)
    created: bool = False
    committed: bool = False

    @property
    def repo_id(self) -> str:
        return self.plan.repo_id

    def _ensure_repo(self) -> None:
        if self.plan.exists or self.created:
            return
        self.api.create_repo(self.repo_id, private=self.plan.private, exist_ok=False)
        self.created = True
        if self.plan.gated:
            self.api.update_repo_settings(self.repo_id, gated="auto")

    def add_file(self, path: Path, *, path_in_repo: str | None = None, remove_after_upload: bool = True) -> None:
        """Upload a large file now (LFS) and delete it locally; small files wait."""
        self._ensure_repo()
        operation = CommitOperationAdd(path_in_repo=path_in_repo or path.name, path_or_fileobj=str(path))
        self.api.preupload_lfs_files(self.repo_id, additions=[operation])
        self.operations.append(operation)
        if remove_after_upload and getattr(operation, "_upload_mode", None) == "lfs" and operation._is_uploaded:
            path.unlink()

    def add_bytes(self, path_in_repo: str, data: bytes) -> None:
        self.operations.append(CommitOperationAdd(path_in_repo=path_in_repo, path_or_fileobj=data))

    def commit(self, message: str, description: str, keep: set[str]) -> str:
        """Commit every added file, deleting files of the old release not in ``keep``.

        Only files that the old release's manifest names (and its card, manifest
        and license files) are deleted: files someone else put into the repo,
        such as those of a repo adopted with --update-existing, stay.
        """
        self._ensure_repo()
        deletions = []
        if self.plan.exists and self.plan.manifest is not None:
            owned = release_files(self.plan.manifest)
            for name in self.api.list_repo_files(self.repo_id):
                if name not in keep and (name in owned or _is_license_file(name)):
                    deletions.append(CommitOperationDelete(path_in_repo=name))
        info = self.api.create_commit(
            self.repo_id,
            operations=[*self.operations, *deletions],
            commit_message=message,
            commit_description=description,
        )
        self.committed = True
        return info.oid

    def abort(self) -> None:
        """Remove a repo this run created but never committed to."""
        if self.created and not self.committed:
            try:
                self.api.delete_repo(self.repo_id)
            except HfHubHTTPError as error:
                log.error("could not delete the unfinished repo %s: %s", self.repo_id, error)

    @property
    def url(self) -> str:
        return f"{self.api.endpoint}/{self.repo_id}"


@dataclass
class LocalPublisher:
    """Stages a release as a folder; the folder appears complete or not at all."""

    root: Path
    repo_name: str
    staged: list[str] = field(default_factory=list)
    committed: bool = False

    def __post_init__(self) -> None:
        self.final = self.root / self.repo_name
        self.partial = self.root / f".{self.repo_name}.partial"
        shutil.rmtree(self.partial, ignore_errors=True)
        self.partial.mkdir(parents=True)

    @property
    def repo_id(self) -> str:
        return self.repo_name

    def add_file(self, path: Path, *, path_in_repo: str | None = None, remove_after_upload: bool = True) -> None:
        target = self.partial / (path_in_repo or path.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if remove_after_upload:
            shutil.move(path, target)
        else:
            shutil.copy2(path, target)
        self.staged.append(target.name)

    def add_bytes(self, path_in_repo: str, data: bytes) -> None:
        (self.partial / path_in_repo).write_bytes(data)

    def commit(self, message: str, description: str, keep: set[str]) -> str:
        if self.final.exists():
            old = self.root / f".{self.repo_name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(self.final, old)
            os.rename(self.partial, self.final)
            shutil.rmtree(old)
        else:
            os.rename(self.partial, self.final)
        self.committed = True
        return ""

    def abort(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)

    @property
    def url(self) -> str:
        return str(self.final)
