"""The commit and LFS protocols: concurrency, parentCommit, and rejected requests."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading

import httpx2
import pytest
from huggingface_hub import CommitOperationAdd
from huggingface_hub.errors import BadRequestError, HfHubHTTPError


def post_commit(hub, repo_id: str, lines: list[dict], token: str) -> httpx2.Response:
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    return httpx2.post(
        f"{hub.url}/api/models/{repo_id}/commit/main",
        content=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/x-ndjson",
        },
    )


def header_line(summary: str = "Raw commit", **extra) -> dict:
    return {"key": "header", "value": {"summary": summary, "description": "", **extra}}


def test_concurrent_commits_both_land(alice, repo_id):
    errors: list[BaseException] = []

    def upload(number: int) -> None:
        try:
            alice.create_commit(
                repo_id,
                [
                    CommitOperationAdd(
                        f"file-{number}.txt", f"content {number}".encode()
                    )
                ],
                commit_message=f"Add file {number}",
            )
        except BaseException as error:  # noqa: BLE001 (re-raised in the main thread)
            errors.append(error)

    threads = [threading.Thread(target=upload, args=(number,)) for number in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    files = alice.list_repo_files(repo_id)
    assert sorted(name for name in files if name.startswith("file-")) == [
        f"file-{number}.txt" for number in range(6)
    ]
    assert len(alice.list_repo_commits(repo_id)) == 7


def test_parent_commit_matches_head(alice, repo_id):
    head = alice.model_info(repo_id).sha
    commit = alice.upload_file(
        path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id, parent_commit=head
    )
    assert alice.list_repo_commits(repo_id)[1].commit_id == head
    assert commit.oid == alice.model_info(repo_id).sha


def test_parent_commit_short_id(alice, repo_id):
    head = alice.model_info(repo_id).sha
    alice.upload_file(
        path_or_fileobj=b"x",
        path_in_repo="x.txt",
        repo_id=repo_id,
        parent_commit=head[:7],
    )
    assert alice.list_repo_commits(repo_id)[1].commit_id == head


def test_parent_commit_mismatch(alice, repo_id):
    stale = alice.model_info(repo_id).sha
    alice.upload_file(path_or_fileobj=b"1", path_in_repo="one.txt", repo_id=repo_id)
    with pytest.raises(HfHubHTTPError) as caught:
        alice.upload_file(
            path_or_fileobj=b"2",
            path_in_repo="two.txt",
            repo_id=repo_id,
            parent_commit=stale,
        )
    assert caught.value.response.status_code == 412
    assert "two.txt" not in alice.list_repo_files(repo_id)


def test_commit_ids_are_git_ids(alice, repo_id):
    commit = alice.upload_file(
        path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id
    )
    assert len(commit.oid) == 40
    assert int(commit.oid, 16) >= 0


def test_empty_commit_gets_new_id(hub, alice, repo_id):
    head = alice.model_info(repo_id).sha
    response = post_commit(hub, repo_id, [header_line("Empty")], alice.token)
    assert response.status_code == 200
    assert response.json()["commitOid"] != head
    assert response.json()["pullRequestUrl"] is None
    assert alice.list_repo_commits(repo_id)[0].title == "Empty"


def test_commit_without_header(hub, alice, repo_id):
    line = {
        "key": "file",
        "value": {"path": "a.txt", "content": "YQ==", "encoding": "base64"},
    }
    response = post_commit(hub, repo_id, [line], alice.token)
    assert response.status_code == 400
    assert "header" in response.json()["error"]


def test_commit_unknown_lfs_object(hub, alice, repo_id):
    missing = {"path": "w.bin", "algo": "sha256", "oid": "0" * 64, "size": 10}
    response = post_commit(
        hub, repo_id, [header_line(), {"key": "lfsFile", "value": missing}], alice.token
    )
    assert response.status_code == 400
    assert "does not exist" in response.json()["error"]


def test_commit_rejects_large_regular_file(hub, alice, repo_id):
    content = base64.b64encode(b"x" * (10 * 1024 * 1024)).decode()
    line = {
        "key": "file",
        "value": {"path": "big.txt", "content": content, "encoding": "base64"},
    }
    response = post_commit(hub, repo_id, [header_line(), line], alice.token)
    assert response.status_code == 400
    assert "10 MiB" in response.json()["error"]


@pytest.mark.parametrize(
    "path", ["../escape.txt", "a/../b.txt", ".git/config", "a//b.txt"]
)
def test_commit_rejects_bad_path(hub, alice, repo_id, path):
    line = {
        "key": "file",
        "value": {"path": path, "content": "YQ==", "encoding": "base64"},
    }
    response = post_commit(hub, repo_id, [header_line(), line], alice.token)
    assert response.status_code == 400
    assert "Invalid path" in response.json()["error"]


def test_commit_to_tag_rejected(alice, repo_id):
    alice.create_tag(repo_id, tag="v1")
    with pytest.raises(BadRequestError):
        alice.upload_file(
            path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id, revision="v1"
        )


def test_file_replaces_folder_rejected(alice, repo_id):
    alice.upload_file(path_or_fileobj=b"x", path_in_repo="dir/x.txt", repo_id=repo_id)
    with pytest.raises(BadRequestError):
        alice.upload_file(path_or_fileobj=b"y", path_in_repo="dir", repo_id=repo_id)


def lfs_batch(hub, repo_id: str, token: str, oid: str, size: int) -> dict:
    response = httpx2.post(
        f"{hub.url}/{repo_id}.git/info/lfs/objects/batch",
        json={
            "operation": "upload",
            "transfers": ["basic"],
            "objects": [{"oid": oid, "size": size}],
            "hash_algo": "sha256",
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
    return response.json()["objects"][0]


def test_lfs_upload_wrong_content(hub, alice, repo_id):
    content = os.urandom(1000)
    oid = hashlib.sha256(content).hexdigest()
    action = lfs_batch(hub, repo_id, alice.token, oid, len(content))
    response = httpx2.put(action["actions"]["upload"]["href"], content=os.urandom(1000))
    assert response.status_code == 400
    assert "does not match" in response.json()["error"]
    again = lfs_batch(hub, repo_id, alice.token, oid, len(content))
    assert "actions" in again


def test_lfs_upload_wrong_size(hub, alice, repo_id):
    content = os.urandom(1000)
    oid = hashlib.sha256(content).hexdigest()
    action = lfs_batch(hub, repo_id, alice.token, oid, len(content))
    response = httpx2.put(action["actions"]["upload"]["href"], content=content[:999])
    assert response.status_code == 400


def test_lfs_upload_url_single_use(hub, alice, repo_id):
    content = os.urandom(1000)
    oid = hashlib.sha256(content).hexdigest()
    action = lfs_batch(hub, repo_id, alice.token, oid, len(content))
    url = action["actions"]["upload"]["href"]
    assert httpx2.put(url, content=content).status_code == 200
    assert httpx2.put(url, content=content).status_code == 403


def test_lfs_upload_url_needs_key(hub, alice, repo_id):
    content = os.urandom(1000)
    oid = hashlib.sha256(content).hexdigest()
    action = lfs_batch(hub, repo_id, alice.token, oid, len(content))
    url = action["actions"]["upload"]["href"].split("?")[0] + "?key=wrong"
    assert httpx2.put(url, content=content).status_code == 403


def test_lfs_present_object_has_no_actions(hub, alice, repo_id):
    content = os.urandom(1000)
    alice.upload_file(path_or_fileobj=content, path_in_repo="w.bin", repo_id=repo_id)
    oid = hashlib.sha256(content).hexdigest()
    assert "actions" not in lfs_batch(hub, repo_id, alice.token, oid, len(content))


def test_lfs_objects_are_per_repo(hub, alice, repo_id, repo_name):
    content = os.urandom(1000)
    alice.upload_file(path_or_fileobj=content, path_in_repo="w.bin", repo_id=repo_id)
    other = f"alice/{repo_name}-other"
    alice.create_repo(other)
    oid = hashlib.sha256(content).hexdigest()
    assert "actions" in lfs_batch(hub, other, alice.token, oid, len(content))


def test_lfs_batch_download(hub, alice, repo_id):
    content = os.urandom(1000)
    alice.upload_file(path_or_fileobj=content, path_in_repo="w.bin", repo_id=repo_id)
    oid = hashlib.sha256(content).hexdigest()
    headers = {"Authorization": f"Bearer {alice.token}"}
    batch = httpx2.post(
        f"{hub.url}/{repo_id}.git/info/lfs/objects/batch",
        json={"operation": "download", "objects": [{"oid": oid, "size": 1000}]},
        headers=headers,
    ).json()
    action = batch["objects"][0]["actions"]["download"]
    assert httpx2.get(action["href"], headers=action["header"]).content == content


def test_preupload_modes(hub, alice, repo_id):
    files = [
        {"path": "config.json", "sample": base64.b64encode(b"{}").decode(), "size": 2},
        {"path": "model.gguf", "sample": base64.b64encode(b"GGUF").decode(), "size": 4},
        {"path": "w.bin", "sample": "", "size": 100},
        {"path": "huge.txt", "sample": "", "size": 10 * 1024 * 1024},
        {"path": "logs/run.log", "sample": "", "size": 10},
    ]
    response = httpx2.post(
        f"{hub.url}/api/models/{repo_id}/preupload/main",
        json={"files": files, "gitIgnore": "logs/\n"},
        headers={"Authorization": f"Bearer {alice.token}"},
    )
    answers = {item["path"]: item for item in response.json()["files"]}
    assert answers["config.json"]["uploadMode"] == "regular"
    assert answers["model.gguf"]["uploadMode"] == "lfs"
    assert answers["w.bin"]["uploadMode"] == "lfs"
    assert answers["huge.txt"]["uploadMode"] == "lfs"
    assert answers["logs/run.log"]["shouldIgnore"] is True
    assert answers["config.json"]["shouldIgnore"] is False


def test_gitignore_skips_files(alice, repo_id, tmp_path):
    (tmp_path / ".gitignore").write_text("*.tmp\n")
    (tmp_path / "keep.txt").write_text("keep")
    (tmp_path / "drop.tmp").write_text("drop")
    alice.upload_folder(repo_id=repo_id, folder_path=tmp_path)
    files = alice.list_repo_files(repo_id)
    assert "keep.txt" in files
    assert "drop.tmp" not in files


def lfs_verify(hub, repo_id: str, token: str, oid: str, size: int) -> httpx2.Response:
    return httpx2.post(
        f"{hub.url}/{repo_id}.git/info/lfs/objects/verify",
        json={"oid": oid, "size": size},
        headers={"Authorization": f"Bearer {token}"},
    )


def test_lfs_verify_after_upload(hub, alice, repo_id):
    content = os.urandom(1000)
    oid = hashlib.sha256(content).hexdigest()
    action = lfs_batch(hub, repo_id, alice.token, oid, len(content))
    assert httpx2.put(action["actions"]["upload"]["href"], content=content).status_code == 200
    assert lfs_verify(hub, repo_id, alice.token, oid, len(content)).status_code == 200


def test_lfs_verify_missing_object(hub, alice, repo_id):
    oid = hashlib.sha256(b"never uploaded").hexdigest()
    response = lfs_verify(hub, repo_id, alice.token, oid, 14)
    assert response.status_code == 404
    assert "was not uploaded" in response.text


def test_lfs_verify_wrong_size(hub, alice, repo_id):
    content = os.urandom(1000)
    oid = hashlib.sha256(content).hexdigest()
    action = lfs_batch(hub, repo_id, alice.token, oid, len(content))
    assert httpx2.put(action["actions"]["upload"]["href"], content=content).status_code == 200
    response = lfs_verify(hub, repo_id, alice.token, oid, 999)
    assert response.status_code == 422
    assert "has 1000 bytes, not 999" in response.text
