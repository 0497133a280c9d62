"""A new server on the same state folder finds everything the previous one stored."""

from __future__ import annotations

import os
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import GatedRepoError

from hubquant.testhub import Account, HubServer


@pytest.fixture
def restarted(tmp_path):
    """Fill a server, stop it, and start a second one on the same folder."""
    state = tmp_path / "state"
    weights = os.urandom(300_000)
    with HubServer(state, lfs_chunk_size=100_000) as first:
        first.add_account(Account("erin"))
        erin_token = first.token_for("erin")
        api = HfApi(endpoint=first.url, token=first.token_for("alice"))
        api.create_repo("alice/kept", private=True)
        api.upload_file(
            path_or_fileobj=weights, path_in_repo="w.safetensors", repo_id="alice/kept"
        )
        api.create_branch("alice/kept", branch="dev")
        api.create_tag("alice/kept", tag="v1")
        api.create_repo("alice/gated")
        api.update_repo_settings("alice/gated", gated="auto")
        api.upload_file(
            path_or_fileobj=b"g", path_in_repo="g.txt", repo_id="alice/gated"
        )
        first.grant_gated_access("alice/gated", "bob")
        head = api.model_info("alice/kept").sha
    with HubServer(state) as second:
        yield second, {"weights": weights, "head": head, "erin_token": erin_token}


def test_restart_keeps_files(restarted, tmp_path):
    server, saved = restarted
    path = hf_hub_download(
        "alice/kept",
        "w.safetensors",
        endpoint=server.url,
        token=server.token_for("alice"),
        cache_dir=tmp_path / "cache",
    )
    assert Path(path).read_bytes() == saved["weights"]


def test_restart_keeps_history_and_refs(restarted):
    server, saved = restarted
    api = HfApi(endpoint=server.url, token=server.token_for("alice"))
    refs = api.list_repo_refs("alice/kept")
    assert api.model_info("alice/kept").sha == saved["head"]
    assert sorted(branch.name for branch in refs.branches) == ["dev", "main"]
    assert [tag.name for tag in refs.tags] == ["v1"]
    assert len(api.list_repo_commits("alice/kept")) == 2


def test_restart_keeps_settings(restarted):
    server, _ = restarted
    api = HfApi(endpoint=server.url, token=server.token_for("alice"))
    assert api.model_info("alice/kept").private is True
    assert api.model_info("alice/gated").gated == "auto"


def test_restart_keeps_accounts(restarted):
    server, saved = restarted
    api = HfApi(endpoint=server.url, token=saved["erin_token"])
    assert api.whoami()["name"] == "erin"


def test_restart_keeps_gated_grants(restarted, tmp_path):
    server, _ = restarted
    path = hf_hub_download(
        "alice/gated",
        "g.txt",
        endpoint=server.url,
        token=server.token_for("bob"),
        cache_dir=tmp_path / "bob",
    )
    assert Path(path).read_bytes() == b"g"
    with pytest.raises(GatedRepoError):
        hf_hub_download(
            "alice/gated",
            "g.txt",
            endpoint=server.url,
            token=server.token_for("carol"),
            cache_dir=tmp_path / "carol",
        )


def test_restart_accepts_new_commits(restarted):
    server, saved = restarted
    api = HfApi(endpoint=server.url, token=server.token_for("alice"))
    commit = api.upload_file(
        path_or_fileobj=b"new", path_in_repo="new.txt", repo_id="alice/kept"
    )
    assert api.list_repo_commits("alice/kept")[1].commit_id == saved["head"]
    assert commit.oid == api.model_info("alice/kept").sha


def test_stopped_server_refuses_connections(tmp_path):
    server = HubServer(tmp_path / "state").start()
    url = server.url
    api = HfApi(endpoint=url, token="hf_alice_write")
    api.whoami()
    server.stop()
    # The pooled keep-alive connection was closed too, so the client reconnects.
    with pytest.raises(httpx2.ConnectError):
        api.whoami()
