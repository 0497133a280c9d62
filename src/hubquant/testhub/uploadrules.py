"""Upload rules of the test Hub: LFS or regular upload, and which files git ignores."""

from __future__ import annotations

import functools
import re

# Files this large or larger are stored through LFS; a regular (non-LFS) file of
# this size is rejected by the commit endpoint, as the Hub rejects regular files
# over 10 MiB.
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024

# Suffixes always stored through LFS, whatever `.gitattributes` contains, so model
# weights never end up in git. The default `.gitattributes` below misses GGUF and
# ONNX external-data files.
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".onnx", ".onnx.data", ".onnx_data")

# The `.gitattributes` the Hub writes into the initial commit of a new repo.
# NOTE: reproduced from memory of files in public Hub repos, not fetched from the
# Hub; newer repos may list more patterns.
DEFAULT_GITATTRIBUTES = """\
*.7z filter=lfs diff=lfs merge=lfs -text
*.arrow filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.bz2 filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.ftz filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.joblib filter=lfs diff=lfs merge=lfs -text
*.lfs.* filter=lfs diff=lfs merge=lfs -text
*.mlmodel filter=lfs diff=lfs merge=lfs -text
*.model filter=lfs diff=lfs merge=lfs -text
*.msgpack filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.npz filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.ot filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.pb filter=lfs diff=lfs merge=lfs -text
*.pickle filter=lfs diff=lfs merge=lfs -text
*.pkl filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.rar filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
saved_model/**/* filter=lfs diff=lfs merge=lfs -text
*.tar.* filter=lfs diff=lfs merge=lfs -text
*.tar filter=lfs diff=lfs merge=lfs -text
*.tflite filter=lfs diff=lfs merge=lfs -text
*.tgz filter=lfs diff=lfs merge=lfs -text
*.wasm filter=lfs diff=lfs merge=lfs -text
*.xz filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*.zst filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
"""


def choose_upload_mode(path: str, size: int, sample: bytes, gitattributes: str) -> str:
    """Return "lfs" or "regular" for a file about to be committed.

    A file goes through LFS when it is at least `LFS_SIZE_THRESHOLD` bytes, when
    its first bytes contain a NUL byte (binary content), when its name ends in
    one of `WEIGHT_SUFFIXES`, or when the repo's `.gitattributes` gives it
    `filter=lfs`. Empty files are always regular, as LFS cannot store them.
    """
    if size == 0:
        return "regular"
    if size >= LFS_SIZE_THRESHOLD:
        return "lfs"
    if b"\0" in sample:
        return "lfs"
    if path.lower().endswith(WEIGHT_SUFFIXES):
        return "lfs"
    if lfs_tracked(path, gitattributes):
        return "lfs"
    return "regular"


def lfs_tracked(path: str, gitattributes: str) -> bool:
    """Return True when `.gitattributes` content sets `filter=lfs` on `path`.

    As in git, the last line that matches and names the attribute wins.
    """
    filter_value: str | None = None
    for line in gitattributes.splitlines():
        fields = line.strip().split()
        if not fields or fields[0].startswith("#"):
            continue
        pattern, attributes = fields[0], fields[1:]
        if not _pattern_matches(pattern, path, directory=False):
            continue
        for attribute in attributes:
            if attribute.startswith("filter="):
                filter_value = attribute[len("filter=") :]
            elif attribute in ("-filter", "!filter"):
                filter_value = None
    return filter_value == "lfs"


def gitignored(path: str, gitignore: str) -> bool:
    """Return True when `.gitignore` content ignores `path`.

    Supports comments, `!` negation, a trailing `/` for folders only, a leading
    or inner `/` anchoring the pattern to the repo root, and `*`, `?`, `[...]`
    and `**`. As in git, a file under an ignored folder stays ignored.
    """
    rules = []
    for line in gitignore.splitlines():
        line = line.rstrip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if negated:
            line = line[1:]
        rules.append((line, negated))

    parts = path.split("/")
    for depth in range(1, len(parts) + 1):
        candidate = "/".join(parts[:depth])
        is_folder = depth < len(parts)
        ignored = False
        for pattern, negated in rules:
            if _pattern_matches(pattern, candidate, directory=is_folder):
                ignored = not negated
        if ignored:
            return True
    return False


def _pattern_matches(pattern: str, path: str, *, directory: bool) -> bool:
    folder_only = pattern.endswith("/")
    pattern = pattern.rstrip("/")
    if folder_only and not directory:
        return False
    if not pattern:
        return False
    if "/" in pattern:
        return _compile(pattern.lstrip("/")).fullmatch(path) is not None
    # A pattern without a slash matches the name at any depth.
    return _compile(pattern).fullmatch(path.rsplit("/", 1)[-1]) is not None


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    """Translate a git wildmatch pattern: `*` and `?` stay inside one path segment."""
    regex = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            regex.append("(?:.*/)?")
            index += 3
            continue
        if pattern.startswith("/**", index) and index + 3 == len(pattern):
            regex.append("/.*")
            index += 3
            continue
        if pattern.startswith("**", index):
            regex.append(".*")
            index += 2
            continue
        if char == "*":
            regex.append("[^/]*")
        elif char == "?":
            regex.append("[^/]")
        elif char == "[":
            end = pattern.find("]", index + 1)
            if end == -1:
                regex.append(re.escape(char))
            else:
                body = pattern[index + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                regex.append(f"[{body}]")
                index = end
        else:
            regex.append(re.escape(char))
        index += 1
    return re.compile("".join(regex))
