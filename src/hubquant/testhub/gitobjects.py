"""Git object ids, computed the way git computes them.

The test Hub does not store a git repository, but it hands out the same ids the
Hub does. Blob ids are git blob SHA-1s, which the client compares with
`huggingface_hub.utils.sha.git_hash`. An LFS file is identified by the SHA-1 of
its pointer file, a folder by the SHA-1 of a git tree, and a commit by the
SHA-1 of a git commit object.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime


def git_object_id(kind: str, body: bytes) -> str:
    """Return the SHA-1 git gives an object of `kind` ("blob", "tree", "commit")."""
    header = f"{kind} {len(body)}\0".encode()
    return hashlib.sha1(header + body).hexdigest()


def blob_id(content: bytes) -> str:
    return git_object_id("blob", content)


def lfs_pointer(sha256: str, size: int) -> bytes:
    """Return the Git LFS pointer file that git stores in place of an LFS object."""
    return (
        "version https://git-lfs.github.com/spec/v1\n"
        f"oid sha256:{sha256}\n"
        f"size {size}\n"
    ).encode()


def tree_ids(file_blobs: Mapping[str, str]) -> dict[str, str]:
    """Return the git tree id of every folder, keyed by folder path ("" is the root).

    `file_blobs` maps each file path in the repo to its blob id. All files get
    mode 100644, as the Hub stores them.
    """
    children: dict[str, dict[str, tuple[str, str]]] = {"": {}}
    for path in file_blobs:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            children.setdefault("/".join(parts[:depth]), {})

    for path, blob in file_blobs.items():
        parent, _, name = path.rpartition("/")
        children[parent][name] = ("100644", blob)

    ids: dict[str, str] = {}
    # Deepest folders first, so each parent has its subfolders' ids when hashed.
    for folder in sorted(
        children, key=lambda item: item.count("/") + bool(item), reverse=True
    ):
        entries = children[folder]
        body = b"".join(
            mode.encode() + b" " + name.encode() + b"\0" + bytes.fromhex(object_id)
            for name, (mode, object_id) in sorted(
                entries.items(), key=_git_tree_sort_key
            )
        )
        ids[folder] = git_object_id("tree", body)
        if folder:
            parent, _, folder_name = folder.rpartition("/")
            children[parent][folder_name] = ("40000", ids[folder])
    return ids


def _git_tree_sort_key(item: tuple[str, tuple[str, str]]) -> bytes:
    # git sorts tree entries by name, comparing a folder as if its name ended in "/".
    name, (mode, _) = item
    return (name + "/").encode() if mode == "40000" else name.encode()


def commit_id(
    *,
    tree: str,
    parents: list[str],
    author: str,
    date: datetime,
    title: str,
    message: str,
) -> str:
    """Return the git commit id for the given tree, parents, author and message."""
    timestamp = int(date.timestamp())
    identity = f"{author} <{author}@users.noreply.huggingface.co> {timestamp} +0000"
    lines = [f"tree {tree}"]
    lines += [f"parent {parent}" for parent in parents]
    lines += [f"author {identity}", f"committer {identity}", ""]
    text = title if not message else f"{title}\n\n{message}"
    body = "\n".join(lines) + "\n" + text + "\n"
    return git_object_id("commit", body.encode())
