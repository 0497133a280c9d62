"""Rules for repo ids, branch names and paths inside a repo."""

from __future__ import annotations

import hashlib
import re

# Same rules as `huggingface_hub.utils.validate_repo_id` (2.4.0): ASCII letters,
# digits, "-", "_" and ".", not starting or ending with "-" or ".", at most 96
# characters per part, no "--" or "..", not ending in ".git".
_REPO_PART = re.compile(r"\b[\w\-.]{1,96}\b", re.ASCII)

REPO_TYPES = ("model", "dataset", "space")

# Branch names: git's rules, reduced to the cases a test can hit.
_BRANCH = re.compile(
    r"^(?!/)(?!.*//)(?!.*\.\.)(?!.*\.lock$)(?!.*/$)[A-Za-z0-9._/-]{1,200}$"
)


def is_valid_repo_name(name: str) -> bool:
    return (
        _REPO_PART.fullmatch(name) is not None
        and "--" not in name
        and ".." not in name
        and not name.endswith(".git")
    )


def is_valid_repo_id(repo_id: str) -> bool:
    """Return True when `repo_id` is a valid `name` or `namespace/name`."""
    parts = repo_id.split("/")
    if len(parts) > 2:
        return False
    return all(is_valid_repo_name(part) for part in parts)


def is_valid_branch_name(name: str) -> bool:
    return _BRANCH.match(name) is not None and not name.startswith("refs/")


def invalid_path_reason(path: str) -> str | None:
    """Return why `path` cannot name a file in a repo, or None when it can."""
    if not path:
        return "the path is empty"
    if path.startswith("/") or path.endswith("/"):
        return "the path must not start or end with '/'"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "the path must not contain empty, '.' or '..' segments"
    # Same folders `huggingface_hub.utils._paths.FORBIDDEN_FOLDERS` (2.4.0) refuses.
    if ".git" in parts or ".cache" in parts:
        return "files under a '.git' or '.cache' folder cannot be committed"
    if "\0" in path:
        return "the path contains a NUL character"
    return None


def stable_id(*parts: str) -> str:
    """Return a 24-hex-digit id like the Hub's `_id` fields, derived from `parts`."""
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:24]
