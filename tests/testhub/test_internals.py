"""Parts the client cannot observe directly: git ids, upload rules, storage."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from hubquant.testhub import gitobjects
from hubquant.testhub.errors import HubError
from hubquant.testhub.storage import AddFile, FileEntry, RepoStore
from hubquant.testhub.uploadrules import (
    DEFAULT_GITATTRIBUTES,
    choose_upload_mode,
    gitignored,
)

FILES = {"a.txt": b"a\n", "dir/b.txt": b"b\n", "dir/sub/c.txt": b"c\n", "dir-x": b"x\n"}


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_tree_ids_match_git(tmp_path):
    for path, content in FILES.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(content)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(tmp_path), *args],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "m")
    ids = gitobjects.tree_ids(
        {path: gitobjects.blob_id(data) for path, data in FILES.items()}
    )
    assert ids[""] == git("rev-parse", "HEAD^{tree}")
    assert ids["dir"] == git("rev-parse", "HEAD:dir")
    assert ids["dir/sub"] == git("rev-parse", "HEAD:dir/sub")


def test_blob_id_is_git_hash():
    from huggingface_hub.utils.sha import git_hash

    assert gitobjects.blob_id(b"hello\n") == git_hash(b"hello\n")


@pytest.mark.parametrize(
    ("path", "size", "sample", "expected"),
    [
        ("config.json", 100, b"{}", "regular"),
        ("weights.safetensors", 100, b"x", "lfs"),
        ("model-q4_k_m.gguf", 100, b"GGUF", "lfs"),
        ("model.onnx.data", 100, b"x", "lfs"),
        ("saved_model/variables/data", 100, b"x", "lfs"),
        ("logs/events.out.tfevents.1", 100, b"x", "lfs"),
        ("notes.txt", 10 * 1024 * 1024, b"x", "lfs"),
        ("notes.txt", 100, b"a\0b", "lfs"),
        ("empty.bin", 0, b"", "regular"),
    ],
)
def test_upload_mode(path, size, sample, expected):
    assert choose_upload_mode(path, size, sample, DEFAULT_GITATTRIBUTES) == expected


@pytest.mark.parametrize(
    ("path", "rules", "expected"),
    [
        ("a.tmp", "*.tmp\n", True),
        ("dir/a.tmp", "*.tmp\n", True),
        ("keep.tmp", "*.tmp\n!keep.tmp\n", False),
        ("build/x/y.txt", "build/\n", True),
        ("build", "build/\n", False),
        ("src/build.txt", "/build.txt\n", False),
        ("build.txt", "/build.txt\n", True),
        ("a/b/c.log", "a/**/*.log\n", True),
        ("# not a comment.txt", "# comment\n", False),
    ],
)
def test_gitignore_rules(path, rules, expected):
    assert gitignored(path, rules) is expected


def test_deleted_repo_not_written_back(tmp_path):
    store = RepoStore(tmp_path)
    repo = store.create("model", "alice/gone", private=False, author="alice", sdk=None)
    store.delete(repo)
    with pytest.raises(HubError) as caught:
        repo.create_commit(
            "main",
            [AddFile("x.txt", FileEntry.regular(b"x"))],
            title="late",
            message="",
            author="alice",
        )
    assert caught.value.status == 404
    assert not repo.path.exists()
    assert RepoStore(tmp_path).get("model", "alice/gone") is None
