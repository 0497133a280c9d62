"""LFS uploads: single-part ("basic") and multipart, checked against sha256 and size.

The client sends part uploads and the multipart completion without an
Authorization header (`huggingface_hub.lfs`, 2.4.0), as it would to S3. Each
URL the batch endpoint hands out therefore carries its own random key, valid
for one successful request.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import shutil
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hubquant.testhub.errors import HubError, bad_request
from hubquant.testhub.storage import Repo

logger = logging.getLogger(__name__)


@dataclass
class PendingUpload:
    """An LFS object with upload URLs from the batch endpoint, not uploaded yet."""

    upload_id: str
    repo: Repo
    oid: str
    size: int
    staged: Path
    chunk_size: int | None = None
    # One key per URL: "basic", "complete", or the part number as a string.
    keys: dict[str, str] = field(default_factory=dict)
    part_etags: dict[int, str] = field(default_factory=dict)

    @property
    def part_count(self) -> int:
        if self.chunk_size is None:
            return 1
        return math.ceil(self.size / self.chunk_size)

    def part_size(self, part: int) -> int:
        assert self.chunk_size is not None
        if part < self.part_count:
            return self.chunk_size
        return self.size - self.chunk_size * (self.part_count - 1)


class LfsUploads:
    """Upload sessions in memory, their bytes staged under ``<state>/uploads``.

    Sessions do not survive a restart: a client that restarts uploading requests new
    URLs from the batch endpoint.
    """

    def __init__(self, staging_dir: Path) -> None:
        self._staging = staging_dir
        shutil.rmtree(staging_dir, ignore_errors=True)
        staging_dir.mkdir(parents=True)
        self._lock = threading.Lock()
        self._pending: dict[str, PendingUpload] = {}

    def start(
        self, repo: Repo, oid: str, size: int, *, chunk_size: int | None
    ) -> PendingUpload:
        """Open an upload session; multipart when `chunk_size` is given."""
        upload_id = uuid.uuid4().hex
        staged = self._staging / upload_id
        with staged.open("wb") as file:
            file.truncate(size)
        upload = PendingUpload(upload_id, repo, oid, size, staged, chunk_size)
        names = ["basic"] if chunk_size is None else ["complete"]
        if chunk_size is not None:
            names += [str(part) for part in range(1, upload.part_count + 1)]
        upload.keys = {name: secrets.token_urlsafe(18) for name in names}
        with self._lock:
            self._pending[upload_id] = upload
        return upload

    def receive_basic(self, upload_id: str, key: str, chunks: Iterable[bytes]) -> Repo:
        """Store a single-part upload, check it, and add it to the repo's objects."""
        # The key stays valid until the upload succeeds, so the client can retry
        # a transfer that broke off.
        upload = self._claim(upload_id, "basic", key)
        digest = hashlib.sha256()
        received = 0
        with upload.staged.open("wb") as file:
            for chunk in chunks:
                digest.update(chunk)
                received += len(chunk)
                file.write(chunk)
        with self._lock:
            if self._pending.pop(upload_id, None) is None:
                raise HubError(404, f"Upload {upload_id} is already complete.")
        self._check_and_store(upload, digest.hexdigest(), received)
        return upload.repo

    def receive_part(
        self, upload_id: str, part: int, key: str, chunks: Iterable[bytes]
    ) -> str:
        """Write one part at its offset and return its ETag (a quoted MD5, as S3)."""
        upload = self._claim(upload_id, str(part), key)
        expected = upload.part_size(part)
        digest = hashlib.md5()
        received = 0
        assert upload.chunk_size is not None
        with upload.staged.open("r+b") as file:
            file.seek(upload.chunk_size * (part - 1))
            for chunk in chunks:
                received += len(chunk)
                if received > expected:
                    raise bad_request(
                        f"Part {part} of LFS object {upload.oid} is larger than"
                        f" {expected} bytes."
                    )
                digest.update(chunk)
                file.write(chunk)
        if received != expected:
            raise bad_request(
                f"Part {part} of LFS object {upload.oid} has {received} bytes,"
                f" expected {expected}."
            )
        etag = f'"{digest.hexdigest()}"'
        with self._lock:
            upload.part_etags[part] = etag
            upload.keys.pop(str(part), None)
        return etag

    def complete(self, upload_id: str, key: str, payload: dict) -> Repo:
        """Check the parts' ETags, then the object's sha256 and size, and store it."""
        upload = self._claim(upload_id, "complete", key)
        parts = payload.get("parts")
        if payload.get("oid") != upload.oid:
            raise bad_request(
                f"Completion is for oid {payload.get('oid')!r}, but this upload is"
                f" {upload.oid}."
            )
        if not isinstance(parts, list) or len(parts) != upload.part_count:
            raise bad_request(
                f"Completion of {upload.oid} must list {upload.part_count} parts,"
                f" got {len(parts) if isinstance(parts, list) else parts!r}."
            )
        for number, part in enumerate(parts, start=1):
            if not isinstance(part, dict) or part.get("partNumber") != number:
                raise bad_request(
                    f"Completion part {number} is missing or out of order: {part!r}."
                )
            received = upload.part_etags.get(number)
            if received is None:
                raise bad_request(f"Part {number} of {upload.oid} was never uploaded.")
            if str(part.get("etag", "")).strip('"') != received.strip('"'):
                raise bad_request(
                    f"ETag of part {number} of {upload.oid} is {part.get('etag')!r},"
                    f" but the uploaded part has {received}."
                )
        with self._lock:
            if self._pending.pop(upload_id, None) is None:
                raise HubError(404, f"Upload {upload_id} is already complete.")
        digest = hashlib.sha256()
        with upload.staged.open("rb") as file:
            for block in iter(lambda: file.read(1024 * 1024), b""):
                digest.update(block)
        self._check_and_store(upload, digest.hexdigest(), upload.staged.stat().st_size)
        return upload.repo

    def _claim(self, upload_id: str, name: str, key: str) -> PendingUpload:
        with self._lock:
            upload = self._pending.get(upload_id)
            if upload is None or not secrets.compare_digest(
                upload.keys.get(name, ""), key
            ):
                raise HubError(
                    403,
                    "Invalid or already used upload URL. Request new URLs from the LFS"
                    " batch endpoint.",
                )
            return upload

    def _check_and_store(self, upload: PendingUpload, sha256: str, size: int) -> None:
        if size != upload.size or sha256 != upload.oid:
            upload.staged.unlink(missing_ok=True)
            raise bad_request(
                f"Uploaded content does not match LFS object {upload.oid}"
                f" ({upload.size} bytes):"
                f" got sha256 {sha256} and {size} bytes."
            )
        with upload.repo.lock:
            upload.repo.add_lfs_object(upload.oid, upload.staged)
        logger.debug(
            "Stored LFS object %s (%d bytes) in %s", upload.oid, size, upload.repo.id
        )
