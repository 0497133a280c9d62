"""whoami, repo creation and deletion, settings, through the real client."""

from __future__ import annotations

import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from hubquant.testhub import Account


def test_whoami_write_token(make_api):
    me = make_api("alice").whoami()
    assert me["name"] == "alice"
    assert me["type"] == "user"
    assert me["auth"]["accessToken"]["role"] == "write"
    assert [org["name"] for org in me["orgs"]] == ["microsoft"]


def test_whoami_read_token(make_api):
    me = make_api("bob", write=False).whoami()
    assert me["name"] == "bob"
    assert me["auth"]["accessToken"]["role"] == "read"
    assert [org["name"] for org in me["orgs"]] == ["hubquant-org"]


def test_whoami_invalid_token(hub):
    api = HfApi(endpoint=hub.url, token="hf_not_a_token")
    with pytest.raises(HfHubHTTPError) as caught:
        api.whoami()
    assert caught.value.response.status_code == 401
    assert "Invalid user token" in str(caught.value)


def test_invalid_token_rejected_everywhere(hub, alice, repo_id):
    api = HfApi(endpoint=hub.url, token="hf_not_a_token")
    with pytest.raises(HfHubHTTPError) as caught:
        api.model_info(repo_id)
    assert caught.value.response.status_code == 401
    assert caught.value.response.headers["X-Error-Message"] == (
        "Invalid credentials in Authorization header"
    )


def test_create_repo_url(hub, alice, repo_name):
    url = alice.create_repo(f"alice/{repo_name}")
    assert url == f"{hub.url}/alice/{repo_name}"
    assert url.repo_id == f"alice/{repo_name}"
    assert url.repo_type == "model"


def test_create_repo_initial_commit(alice, repo_id):
    assert alice.list_repo_files(repo_id) == [".gitattributes"]
    commits = alice.list_repo_commits(repo_id)
    assert [commit.title for commit in commits] == ["initial commit"]
    assert commits[0].authors == ["alice"]


def test_create_repo_without_namespace(alice, repo_name):
    url = alice.create_repo(repo_name)
    assert url.repo_id == f"alice/{repo_name}"


def test_create_existing_repo_conflict(alice, repo_id):
    with pytest.raises(HfHubHTTPError) as caught:
        alice.create_repo(repo_id)
    assert caught.value.response.status_code == 409
    assert "url" in caught.value.response.json()


def test_create_existing_repo_exist_ok(hub, alice, repo_id):
    url = alice.create_repo(repo_id, exist_ok=True)
    assert url == f"{hub.url}/{repo_id}"


def test_create_repo_in_member_org(alice, repo_name):
    url = alice.create_repo(f"microsoft/{repo_name}")
    assert url.namespace == "microsoft"


def test_create_repo_in_foreign_org(alice, repo_name):
    with pytest.raises(HfHubHTTPError) as caught:
        alice.create_repo(f"hubquant-org/{repo_name}")
    assert caught.value.response.status_code == 403


def test_create_repo_read_token(make_api, repo_name):
    with pytest.raises(HfHubHTTPError) as caught:
        make_api("alice", write=False).create_repo(f"alice/{repo_name}")
    assert caught.value.response.status_code == 403


def test_create_repo_exist_ok_read_token(make_api, alice, repo_id):
    # With exist_ok, the client falls back to repo_info after the 403.
    url = make_api("alice", write=False).create_repo(repo_id, exist_ok=True)
    assert url.repo_id == repo_id


def test_create_dataset_and_space(alice, repo_name):
    dataset = alice.create_repo(f"alice/{repo_name}", repo_type="dataset")
    space = alice.create_repo(
        f"alice/{repo_name}", repo_type="space", space_sdk="gradio"
    )
    assert dataset.repo_type == "dataset"
    assert space.repo_type == "space"
    assert alice.dataset_info(f"alice/{repo_name}").id == f"alice/{repo_name}"
    assert alice.space_info(f"alice/{repo_name}").sdk == "gradio"


def test_repo_ids_case_insensitive(alice, repo_id):
    with pytest.raises(HfHubHTTPError) as caught:
        alice.create_repo(repo_id.upper())
    assert caught.value.response.status_code == 409
    assert alice.model_info(repo_id.upper()).id == repo_id


def test_delete_repo(alice, repo_id):
    alice.delete_repo(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        alice.model_info(repo_id)


def test_delete_repo_then_recreate(alice, repo_id):
    alice.upload_file(path_or_fileobj=b"old", path_in_repo="old.txt", repo_id=repo_id)
    alice.delete_repo(repo_id)
    alice.create_repo(repo_id)
    assert alice.list_repo_files(repo_id) == [".gitattributes"]


def test_delete_missing_repo(alice, repo_name):
    with pytest.raises(RepositoryNotFoundError):
        alice.delete_repo(f"alice/{repo_name}")
    alice.delete_repo(f"alice/{repo_name}", missing_ok=True)


def test_delete_repo_of_other_user(make_api, alice, repo_id):
    with pytest.raises(HfHubHTTPError) as caught:
        make_api("bob").delete_repo(repo_id)
    assert caught.value.response.status_code == 403
    assert alice.model_info(repo_id).id == repo_id


def test_update_settings_private_and_gated(alice, repo_id):
    alice.update_repo_settings(repo_id, private=True, gated="manual")
    info = alice.model_info(repo_id)
    assert info.private is True
    assert info.gated == "manual"
    alice.update_repo_settings(repo_id, private=False, gated=False)
    info = alice.model_info(repo_id)
    assert info.private is False
    assert info.gated is False


def test_update_settings_other_user(make_api, repo_id):
    with pytest.raises(HfHubHTTPError) as caught:
        make_api("carol").update_repo_settings(repo_id, private=True)
    assert caught.value.response.status_code == 403


def test_add_account_and_token(hub):
    hub.add_account(Account("dave"))
    token = hub.token_for("dave")
    assert HfApi(endpoint=hub.url, token=token).whoami()["name"] == "dave"


def test_add_org_account(hub, repo_name):
    hub.add_account(Account("dave-org", kind="org", members=["carol"]))
    carol = HfApi(endpoint=hub.url, token=hub.token_for("carol"))
    url = carol.create_repo(f"dave-org/{repo_name}")
    assert url.namespace == "dave-org"


def test_account_rejects_org_tokens():
    with pytest.raises(ValueError, match="cannot own tokens"):
        Account("some-org", kind="org", tokens={"hf_x": "write"})


def test_repo_without_namespace_not_found(hub, alice, tmp_path):
    with pytest.raises(RepositoryNotFoundError):
        alice.model_info("gpt2")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(
            "gpt2",
            "config.json",
            endpoint=hub.url,
            token=alice.token,
            cache_dir=tmp_path,
        )
