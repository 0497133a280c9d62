"""A file of several hundred MB through multipart upload and download, streamed."""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download

from hubquant.testhub import HubServer

BIG_SIZE = 300 * 1024 * 1024 + 12345


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(4 * 1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def big_hub(tmp_path_factory):
    """A server with the default part size, so the big file goes up in 19 parts."""
    with HubServer(tmp_path_factory.mktemp("big-hub")) as server:
        yield server


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    """A sparse file of zeros, with random blocks at uneven offsets in every part."""
    path = tmp_path_factory.mktemp("big") / "model.gguf"
    with open(path, "wb") as file:
        file.truncate(BIG_SIZE)
        for offset in range(0, BIG_SIZE - 65536, 7 * 1024 * 1024 + 4099):
            file.seek(offset)
            file.write(os.urandom(65536))
    return path


def test_big_file_round_trip(big_hub, big_file, tmp_path):
    api = HfApi(endpoint=big_hub.url, token=big_hub.token_for("alice"))
    api.create_repo("alice/big")
    expected = sha256_file(big_file)

    api.upload_file(
        path_or_fileobj=big_file, path_in_repo="model.gguf", repo_id="alice/big"
    )

    parts = [path for method, path, _ in big_hub.requests_log if "/part/" in path]
    assert len(parts) == math.ceil(BIG_SIZE / big_hub.lfs_chunk_size)
    info = api.model_info("alice/big", files_metadata=True)
    sibling = next(item for item in info.siblings if item.rfilename == "model.gguf")
    assert sibling.lfs.sha256 == expected
    assert sibling.size == BIG_SIZE

    downloaded = Path(
        hf_hub_download(
            "alice/big",
            "model.gguf",
            endpoint=big_hub.url,
            token=api.token,
            cache_dir=tmp_path / "cache",
        )
    )
    assert downloaded.stat().st_size == BIG_SIZE
    assert sha256_file(downloaded) == expected
