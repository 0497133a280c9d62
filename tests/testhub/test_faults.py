"""Injected faults and how the real client retries or surfaces each of them."""

from __future__ import annotations

import os

import httpx2
import pytest
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

PREUPLOAD = r"/api/models/.+/preupload/"

# huggingface_hub 2.4.0 `http_backoff`: 5 retries, waits 1 s then doubling up to 8 s,
# or Retry-After plus 1 s.
MAX_RETRIES = 5


def statuses(hub, before: int, pattern: str) -> list[int | None]:
    return [status for _, path, status in hub.requests_log[before:] if pattern in path]


def test_single_503_retried(hub, alice, repo_id, fast_retries):
    hub.inject_fault(PREUPLOAD, method="POST", status=503)
    before = len(hub.requests_log)
    alice.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert statuses(hub, before, "/preupload/") == [503, 200]
    assert fast_retries.calls == [1]
    assert "x.txt" in alice.list_repo_files(repo_id)


def test_single_429_honours_retry_after(hub, alice, repo_id, fast_retries):
    hub.inject_fault(r"/tree/", retry_after=2)
    before = len(hub.requests_log)
    files = alice.list_repo_files(repo_id)
    assert files == [".gitattributes"]
    assert statuses(hub, before, "/tree/") == [429, 200]
    assert fast_retries.calls == [3.0]


def test_persistent_503_raises(hub, alice, repo_id, fast_retries):
    hub.inject_fault(PREUPLOAD, status=503, times=MAX_RETRIES + 5)
    before = len(hub.requests_log)
    with pytest.raises(HfHubHTTPError) as caught:
        alice.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert caught.value.response.status_code == 503
    assert statuses(hub, before, "/preupload/") == [503] * (MAX_RETRIES + 1)
    assert fast_retries.calls == [1, 2, 4, 8, 8]


def test_persistent_429_raises(hub, alice, repo_id, fast_retries):
    hub.inject_fault(r"/tree/", retry_after=0, times=MAX_RETRIES + 1)
    with pytest.raises(HfHubHTTPError) as caught:
        alice.list_repo_files(repo_id)
    assert caught.value.response.status_code == 429
    assert caught.value.response.headers["Retry-After"] == "0"


def test_500_not_retried_by_model_info(hub, alice, repo_id, fast_retries):
    hub.inject_fault(r"^/api/models/alice/", method="GET", status=500)
    before = len(hub.requests_log)
    with pytest.raises(HfHubHTTPError) as caught:
        alice.model_info(repo_id)
    assert caught.value.response.status_code == 500
    assert len(hub.requests_log) - before == 1
    assert alice.model_info(repo_id).id == repo_id


def test_dropped_connection_raises(hub, alice, repo_id):
    hub.inject_fault(rf"^/api/models/{repo_id}$", drop_connection=True)
    with pytest.raises(httpx2.RemoteProtocolError):
        alice.model_info(repo_id)
    assert hub.requests_log[-1] == ("GET", f"/api/models/{repo_id}", None)


def test_dropped_part_upload_retried(hub, alice, repo_id, fast_retries):
    hub.inject_fault(r"/_lfs/upload/.+/part/2$", method="PUT", drop_connection=True)
    weights = os.urandom(hub.lfs_chunk_size * 2 + 10)
    alice.upload_file(
        path_or_fileobj=weights, path_in_repo="w.safetensors", repo_id=repo_id
    )
    part_two = [
        status for _, path, status in hub.requests_log if path.endswith("/part/2")
    ]
    assert part_two[-2:] == [None, 200]
    info = alice.model_info(repo_id, files_metadata=True)
    sizes = {sibling.rfilename: sibling.size for sibling in info.siblings}
    assert sizes["w.safetensors"] == len(weights)


def test_dropped_commit_not_applied(hub, alice, repo_id):
    head = alice.model_info(repo_id).sha
    hub.inject_fault(r"/commit/main$", drop_connection=True)
    with pytest.raises(httpx2.RemoteProtocolError):
        alice.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert alice.model_info(repo_id).sha == head


def test_503_on_download_head_retried(hub, alice, repo_id, tmp_path, fast_retries):
    # With nothing cached, hf_hub_download repeats a failed metadata HEAD with back-off.
    hub.inject_fault(r"/resolve/", method="HEAD", status=503)
    before = len(hub.requests_log)
    hf_hub_download(
        repo_id,
        ".gitattributes",
        endpoint=hub.url,
        token=alice.token,
        cache_dir=tmp_path,
    )
    heads = [
        status for method, _, status in hub.requests_log[before:] if method == "HEAD"
    ]
    assert heads == [503, 200]


def test_persistent_503_on_download(hub, alice, repo_id, tmp_path, fast_retries):
    hub.inject_fault(r"/resolve/", method="HEAD", status=503, times=MAX_RETRIES + 2)
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(
            repo_id,
            ".gitattributes",
            endpoint=hub.url,
            token=alice.token,
            cache_dir=tmp_path,
        )


def test_fault_method_filter(hub, alice, repo_id):
    hub.inject_fault(r"^/api/models/", method="DELETE", status=500)
    assert alice.model_info(repo_id).id == repo_id
    hub.clear_faults()


def test_fault_times(hub, alice, repo_id):
    hub.inject_fault(rf"^/api/models/{repo_id}$", status=502, times=2)
    for _ in range(2):
        with pytest.raises(HfHubHTTPError):
            alice.model_info(repo_id)
    assert alice.model_info(repo_id).id == repo_id


def test_clear_faults(hub, alice, repo_id):
    hub.inject_fault(rf"^/api/models/{repo_id}$", status=500, times=5)
    hub.clear_faults()
    assert alice.model_info(repo_id).id == repo_id


def test_inject_fault_rejects_success_status(hub):
    with pytest.raises(ValueError, match="4xx or 5xx"):
        hub.inject_fault(r".", status=200)
