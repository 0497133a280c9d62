"""Uploads, downloads, model info and deletions through the real client."""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationCopy,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError
from huggingface_hub.file_download import http_get

from tests.testhub.conftest import LFS_CHUNK_SIZE

README = (
    "---\nlicense: mit\nbase_model: microsoft/phi-2\ntags:\n- gguf\n---\n# Test model\n"
)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture
def model_folder(tmp_path) -> Path:
    """A folder with regular files, a subfolder and two LFS files (one multipart)."""
    folder = tmp_path / "model"
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "README.md").write_text(README)
    (folder / "config.json").write_text('{"model_type": "phi3", "hidden_size": 256}')
    (folder / "tokenizer" / "vocab.txt").write_text("a\nb\nc\n")
    # Larger than one part, and not a multiple of the part size.
    (folder / "model.safetensors").write_bytes(os.urandom(LFS_CHUNK_SIZE * 3 + 123))
    (folder / "model-q4.gguf").write_bytes(os.urandom(5000))
    return folder


@pytest.fixture
def uploaded(alice, repo_id, model_folder):
    commit = alice.upload_folder(repo_id=repo_id, folder_path=model_folder)
    return repo_id, commit


def test_upload_folder_files(alice, uploaded):
    repo_id, _ = uploaded
    assert sorted(alice.list_repo_files(repo_id)) == [
        ".gitattributes",
        "README.md",
        "config.json",
        "model-q4.gguf",
        "model.safetensors",
        "tokenizer/vocab.txt",
    ]


def test_upload_folder_commit_info(hub, alice, uploaded):
    repo_id, commit = uploaded
    assert commit.oid == alice.model_info(repo_id).sha
    assert commit.commit_url == f"{hub.url}/{repo_id}/commit/{commit.oid}"
    assert commit.pr_url is None


def test_upload_uses_multipart(hub, alice, repo_id, model_folder):
    before = len(hub.requests_log)
    alice.upload_folder(repo_id=repo_id, folder_path=model_folder)
    requests = hub.requests_log[before:]
    part_uploads = [
        path for method, path, _ in requests if method == "PUT" and "/part/" in path
    ]
    completions = [path for method, path, _ in requests if path.endswith("/complete")]
    assert len(part_uploads) == 4
    assert len(completions) == 1


def test_upload_lfs_decision(alice, uploaded, model_folder):
    repo_id, _ = uploaded
    info = alice.model_info(repo_id, files_metadata=True)
    lfs = {sibling.rfilename: sibling.lfs for sibling in info.siblings}
    assert lfs["config.json"] is None
    assert lfs["README.md"] is None
    assert lfs["model-q4.gguf"] is not None
    assert lfs["model.safetensors"].sha256 == sha256_file(
        model_folder / "model.safetensors"
    )
    assert lfs["model.safetensors"].size == LFS_CHUNK_SIZE * 3 + 123


def test_model_info_fields(alice, uploaded):
    repo_id, commit = uploaded
    info = alice.model_info(repo_id)
    assert info.id == repo_id
    assert info.author == "alice"
    assert info.sha == commit.oid
    assert info.private is False
    assert info.gated is False
    assert info.card_data["license"] == "mit"
    assert info.card_data["base_model"] == "microsoft/phi-2"
    assert "base_model:microsoft/phi-2" in info.tags
    assert info.last_modified is not None
    assert info.created_at <= info.last_modified
    assert info.siblings[0].size is None


def test_model_info_files_metadata(alice, uploaded, model_folder):
    repo_id, _ = uploaded
    info = alice.model_info(repo_id, files_metadata=True)
    config = next(
        sibling for sibling in info.siblings if sibling.rfilename == "config.json"
    )
    content = (model_folder / "config.json").read_bytes()
    git_blob = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
    assert config.size == len(content)
    assert config.blob_id == git_blob


def test_model_info_revision(alice, uploaded):
    repo_id, commit = uploaded
    first = alice.list_repo_commits(repo_id)[-1]
    old = alice.model_info(repo_id, revision=first.commit_id)
    assert old.sha == first.commit_id
    assert [sibling.rfilename for sibling in old.siblings] == [".gitattributes"]
    assert alice.model_info(repo_id, revision="main").sha == commit.oid


def test_model_info_unknown_revision(alice, repo_id):
    with pytest.raises(RevisionNotFoundError):
        alice.model_info(repo_id, revision="no-such-branch")


def test_snapshot_download_checksums(hub, alice, uploaded, model_folder, tmp_path):
    repo_id, commit = uploaded
    local = snapshot_download(
        repo_id, endpoint=hub.url, token=alice.token, cache_dir=tmp_path / "cache"
    )
    for path in model_folder.rglob("*"):
        if path.is_file():
            relative = path.relative_to(model_folder)
            assert sha256_file(Path(local) / relative) == sha256_file(path), relative
    verification = alice.verify_repo_checksums(repo_id, cache_dir=tmp_path / "cache")
    assert verification.revision == commit.oid
    assert verification.mismatches == []
    assert verification.missing_paths == []
    assert verification.checked_count == 6


def test_snapshot_download_local_dir(hub, alice, uploaded, tmp_path):
    repo_id, _ = uploaded
    target = tmp_path / "out"
    snapshot_download(repo_id, endpoint=hub.url, token=alice.token, local_dir=target)
    verification = alice.verify_repo_checksums(repo_id, local_dir=target)
    assert verification.mismatches == []
    assert verification.missing_paths == []


def test_hf_hub_download_regular(hub, alice, uploaded, model_folder, tmp_path):
    repo_id, _ = uploaded
    path = hf_hub_download(
        repo_id,
        "tokenizer/vocab.txt",
        endpoint=hub.url,
        token=alice.token,
        cache_dir=tmp_path / "cache",
    )
    assert Path(path).read_text() == "a\nb\nc\n"


def test_hf_hub_download_lfs(hub, alice, uploaded, model_folder, tmp_path):
    repo_id, _ = uploaded
    path = hf_hub_download(
        repo_id,
        "model.safetensors",
        endpoint=hub.url,
        token=alice.token,
        cache_dir=tmp_path / "cache",
    )
    assert sha256_file(Path(path)) == sha256_file(model_folder / "model.safetensors")
    # The cache names LFS blobs by sha256, taken from X-Linked-Etag.
    assert Path(path).resolve().name == sha256_file(model_folder / "model.safetensors")


def test_hf_hub_download_missing_file(hub, alice, repo_id, tmp_path):
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(
            repo_id,
            "missing.txt",
            endpoint=hub.url,
            token=alice.token,
            cache_dir=tmp_path / "cache",
        )


def test_file_metadata_headers(hub, alice, uploaded, model_folder):
    repo_id, commit = uploaded
    url = f"{hub.url}/{repo_id}/resolve/main/model.safetensors"
    metadata = alice.get_hf_file_metadata(url=url)
    assert metadata.commit_hash == commit.oid
    assert metadata.etag == sha256_file(model_folder / "model.safetensors")
    assert metadata.size == LFS_CHUNK_SIZE * 3 + 123


def test_head_response_has_no_body(hub, alice, uploaded):
    repo_id, _ = uploaded
    url = f"{hub.url}/{repo_id}/resolve/main/config.json"
    response = httpx2.head(url, headers={"Authorization": f"Bearer {alice.token}"})
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["Content-Length"]) > 0
    assert response.headers["X-Repo-Commit"]


def test_download_resumes_with_range(hub, alice, uploaded, model_folder, tmp_path):
    repo_id, _ = uploaded
    original = (model_folder / "model.safetensors").read_bytes()
    partial = tmp_path / "partial"
    partial.write_bytes(original[:1000])
    url = f"{hub.url}/{repo_id}/resolve/main/model.safetensors"
    with open(partial, "ab") as file:
        http_get(
            url,
            file,
            resume_size=1000,
            headers={"Authorization": f"Bearer {alice.token}"},
            expected_size=len(original),
        )
    assert partial.read_bytes() == original
    assert (
        "GET",
        f"/{repo_id}/resolve/main/model.safetensors",
        206,
    ) in hub.requests_log


def test_range_outside_file(hub, alice, uploaded):
    repo_id, _ = uploaded
    url = f"{hub.url}/{repo_id}/resolve/main/config.json"
    headers = {"Authorization": f"Bearer {alice.token}", "Range": "bytes=100000-"}
    response = httpx2.get(url, headers=headers)
    assert response.status_code == 416
    assert response.headers["Content-Range"].startswith("bytes */")


def test_upload_file_unchanged_skips_commit(alice, uploaded, model_folder):
    repo_id, commit = uploaded
    again = alice.upload_file(
        path_or_fileobj=model_folder / "config.json",
        path_in_repo="config.json",
        repo_id=repo_id,
    )
    assert again.oid == commit.oid


def test_upload_lfs_already_present(hub, alice, uploaded, model_folder):
    repo_id, _ = uploaded
    before = len(hub.requests_log)
    alice.upload_file(
        path_or_fileobj=model_folder / "model.safetensors",
        path_in_repo="copy.safetensors",
        repo_id=repo_id,
    )
    puts = [entry for entry in hub.requests_log[before:] if entry[0] == "PUT"]
    assert puts == []
    assert "copy.safetensors" in alice.list_repo_files(repo_id)


def test_upload_to_branch(alice, uploaded):
    repo_id, commit = uploaded
    alice.create_branch(repo_id, branch="quantized")
    branch_commit = alice.upload_file(
        path_or_fileobj=b"q4 weights",
        path_in_repo="q4.txt",
        repo_id=repo_id,
        revision="quantized",
    )
    assert "q4.txt" in alice.list_repo_files(repo_id, revision="quantized")
    assert "q4.txt" not in alice.list_repo_files(repo_id)
    assert alice.model_info(repo_id, revision="quantized").sha == branch_commit.oid
    assert alice.model_info(repo_id).sha == commit.oid


def test_upload_to_missing_branch(alice, repo_id):
    with pytest.raises(RevisionNotFoundError):
        alice.upload_file(
            path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id, revision="nope"
        )


def test_delete_file(alice, uploaded):
    repo_id, _ = uploaded
    alice.delete_file("config.json", repo_id=repo_id)
    assert "config.json" not in alice.list_repo_files(repo_id)


def test_delete_missing_file(alice, repo_id):
    with pytest.raises(EntryNotFoundError) as caught:
        alice.delete_file("missing.txt", repo_id=repo_id)
    assert "A file with this name doesn't exist" in str(caught.value)


def test_delete_folder(alice, uploaded):
    repo_id, _ = uploaded
    alice.delete_folder("tokenizer", repo_id=repo_id)
    files = alice.list_repo_files(repo_id)
    assert not any(path.startswith("tokenizer/") for path in files)
    assert "config.json" in files


def test_upload_file_bytes_and_fileobj(alice, repo_id, tmp_path):
    (tmp_path / "data.bin").write_bytes(b"\0\1\2" * 100)
    with open(tmp_path / "data.bin", "rb") as file:
        alice.create_commit(
            repo_id,
            [
                CommitOperationAdd("notes.txt", b"plain text"),
                CommitOperationAdd("data.bin", file),
            ],
            commit_message="Add notes and data",
        )
    info = alice.model_info(repo_id, files_metadata=True)
    lfs = {sibling.rfilename: sibling.lfs for sibling in info.siblings}
    assert lfs["notes.txt"] is None
    # NUL bytes in the first bytes make a file binary, and binary files go to LFS.
    assert lfs["data.bin"] is not None


def test_commit_message_and_description(alice, repo_id):
    alice.upload_file(
        path_or_fileobj=b"x",
        path_in_repo="x.txt",
        repo_id=repo_id,
        commit_message="Add x",
        commit_description="Longer text.",
    )
    latest = alice.list_repo_commits(repo_id)[0]
    assert latest.title == "Add x"
    assert latest.message == "Longer text."


def test_dataset_round_trip(hub, alice, repo_name, tmp_path):
    repo_id = f"alice/{repo_name}"
    alice.create_repo(repo_id, repo_type="dataset")
    rows = os.urandom(LFS_CHUNK_SIZE + 1)
    alice.upload_file(
        path_or_fileobj=rows,
        path_in_repo="data/train.parquet",
        repo_id=repo_id,
        repo_type="dataset",
    )
    local = snapshot_download(
        repo_id,
        repo_type="dataset",
        endpoint=hub.url,
        token=alice.token,
        cache_dir=tmp_path / "cache",
    )
    assert (Path(local) / "data" / "train.parquet").read_bytes() == rows
    assert any(path.startswith("/datasets/") for _, path, _ in hub.requests_log)


def test_exists_checks(alice, uploaded):
    repo_id, _ = uploaded
    assert alice.repo_exists(repo_id)
    assert not alice.repo_exists(f"{repo_id}-missing")
    assert alice.file_exists(repo_id, "config.json")
    assert not alice.file_exists(repo_id, "missing.json")
    assert alice.revision_exists(repo_id, "main")
    assert not alice.revision_exists(repo_id, "missing")


def test_copy_files_in_repo(alice, uploaded, model_folder):
    repo_id, _ = uploaded
    alice.create_commit(
        repo_id,
        [
            CommitOperationCopy("model.safetensors", "backup/model.safetensors"),
            CommitOperationCopy("config.json", "backup/config.json"),
        ],
        commit_message="Copy weights and config",
    )
    info = alice.model_info(repo_id, files_metadata=True)
    siblings = {sibling.rfilename: sibling for sibling in info.siblings}
    original = siblings["model.safetensors"]
    assert siblings["backup/model.safetensors"].lfs.sha256 == original.lfs.sha256
    assert siblings["backup/config.json"].blob_id == siblings["config.json"].blob_id


def safetensors_bytes(tensors: dict[str, tuple[int, ...]]) -> bytes:
    """Build a float32 safetensors file of zeros with the given tensor shapes."""
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = 4 * math.prod(shape)
        header[name] = {
            "dtype": "F32",
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + b"\0" * offset


def test_safetensors_metadata_by_range(alice, repo_id):
    content = safetensors_bytes({"embed.weight": (64, 32), "lm_head.weight": (64, 32)})
    alice.upload_file(
        path_or_fileobj=content, path_in_repo="model.safetensors", repo_id=repo_id
    )
    metadata = alice.get_safetensors_metadata(repo_id)
    assert metadata.sharded is False
    assert metadata.parameter_count == {"F32": 2 * 64 * 32}
