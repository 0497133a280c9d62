"""Private repos, gated repos and token roles, each failing with the client's error."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
)


@pytest.fixture
def private_repo(alice, repo_name):
    repo_id = f"alice/{repo_name}"
    alice.create_repo(repo_id, private=True)
    alice.upload_file(
        path_or_fileobj=b"secret", path_in_repo="secret.txt", repo_id=repo_id
    )
    return repo_id


@pytest.fixture
def org_private_repo(alice, repo_name):
    repo_id = f"microsoft/{repo_name}"
    alice.create_repo(repo_id, private=True)
    return repo_id


@pytest.fixture
def gated_repo(alice, repo_id):
    alice.upload_file(
        path_or_fileobj=b"weights", path_in_repo="weights.txt", repo_id=repo_id
    )
    alice.update_repo_settings(repo_id, gated="manual")
    return repo_id


def download(
    hub, repo_id: str, token, cache_dir: Path, filename: str = "weights.txt"
) -> str:
    return hf_hub_download(
        repo_id, filename, endpoint=hub.url, token=token, cache_dir=cache_dir
    )


def test_private_repo_owner_sees_it(alice, private_repo):
    assert alice.model_info(private_repo).private is True


def test_private_repo_hidden_from_other_user(make_api, private_repo):
    with pytest.raises(RepositoryNotFoundError) as caught:
        make_api("bob").model_info(private_repo)
    assert caught.value.response.status_code == 404


def test_private_repo_hidden_from_anonymous(make_api, private_repo):
    with pytest.raises(RepositoryNotFoundError) as caught:
        make_api(None).model_info(private_repo)
    assert caught.value.response.status_code == 401


def test_private_repo_download_hidden(hub, private_repo, tmp_path):
    with pytest.raises(RepositoryNotFoundError):
        download(hub, private_repo, hub.token_for("bob"), tmp_path, "secret.txt")


def test_private_repo_files_hidden(make_api, private_repo):
    with pytest.raises(RepositoryNotFoundError):
        make_api("carol").list_repo_files(private_repo)


def test_private_org_repo_visible_to_member(make_api, org_private_repo):
    assert make_api("alice", write=False).model_info(org_private_repo).private is True


def test_private_org_repo_hidden_from_non_member(make_api, org_private_repo):
    with pytest.raises(RepositoryNotFoundError):
        make_api("bob").model_info(org_private_repo)


def test_read_token_cannot_upload(make_api, repo_id):
    reader = make_api("alice", write=False)
    with pytest.raises(HfHubHTTPError) as caught:
        reader.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert caught.value.response.status_code == 403


def test_other_user_cannot_upload(make_api, repo_id):
    with pytest.raises(HfHubHTTPError) as caught:
        make_api("bob").upload_file(
            path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id
        )
    assert caught.value.response.status_code == 403


def test_anonymous_cannot_upload(make_api, repo_id):
    with pytest.raises(HfHubHTTPError) as caught:
        make_api(None).upload_file(
            path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id
        )
    assert caught.value.response.status_code == 401


def test_anonymous_reads_public_repo(hub, make_api, repo_id, tmp_path):
    assert make_api(None).model_info(repo_id).id == repo_id
    path = download(hub, repo_id, False, tmp_path, ".gitattributes")
    assert "filter=lfs" in Path(path).read_text()


def test_gated_metadata_visible(make_api, gated_repo):
    info = make_api("bob").model_info(gated_repo)
    assert info.gated == "manual"
    assert [sibling.rfilename for sibling in info.siblings] == [
        ".gitattributes",
        "weights.txt",
    ]


def test_gated_download_refused(hub, gated_repo, tmp_path):
    with pytest.raises(GatedRepoError) as caught:
        download(hub, gated_repo, hub.token_for("bob"), tmp_path)
    assert caught.value.response.status_code == 403


def test_gated_download_anonymous(hub, gated_repo, tmp_path):
    with pytest.raises(GatedRepoError) as caught:
        download(hub, gated_repo, False, tmp_path)
    assert caught.value.response.status_code == 401


def test_gated_snapshot_refused(hub, gated_repo, tmp_path):
    with pytest.raises(GatedRepoError):
        snapshot_download(
            gated_repo, endpoint=hub.url, token=hub.token_for("bob"), cache_dir=tmp_path
        )


def test_gated_download_owner(hub, gated_repo, tmp_path):
    path = download(hub, gated_repo, hub.token_for("alice"), tmp_path)
    assert Path(path).read_bytes() == b"weights"


def test_gated_download_after_grant(hub, gated_repo, tmp_path):
    hub.grant_gated_access(gated_repo, "bob")
    path = download(hub, gated_repo, hub.token_for("bob", write=False), tmp_path)
    assert Path(path).read_bytes() == b"weights"


def test_gated_grant_is_per_user(hub, gated_repo, tmp_path):
    hub.grant_gated_access(gated_repo, "bob")
    with pytest.raises(GatedRepoError):
        download(hub, gated_repo, hub.token_for("carol"), tmp_path)


def test_grant_unknown_repo(hub):
    with pytest.raises(KeyError):
        hub.grant_gated_access("alice/does-not-exist", "bob")
