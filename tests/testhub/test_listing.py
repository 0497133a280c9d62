"""Repo search, tree listings, refs and commit history, paginated, via the client."""

from __future__ import annotations

import pytest
from huggingface_hub import CommitOperationAdd
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder

from tests.testhub.conftest import PAGE_SIZE


@pytest.fixture(scope="module")
def listed_repos(hub):
    """Seven models of alice, bob and microsoft, in creation order, one private."""
    from huggingface_hub import HfApi

    alice = HfApi(endpoint=hub.url, token=hub.token_for("alice"))
    bob = HfApi(endpoint=hub.url, token=hub.token_for("bob"))
    ids = [
        ("alice", "alice/llama-q4"),
        ("alice", "alice/llama-q8"),
        ("alice", "alice/phi-gguf"),
        ("bob", "bob/llama-onnx"),
        ("bob", "bob/secret-llama"),
        ("alice", "microsoft/phi-mini"),
        ("alice", "alice/zeta"),
    ]
    for user, repo_id in ids:
        api = alice if user == "alice" else bob
        api.create_repo(repo_id, private=repo_id == "bob/secret-llama")
    # A later commit makes alice/llama-q4 the most recently modified.
    alice.upload_file(
        path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/llama-q4"
    )
    return [repo_id for _, repo_id in ids]


def test_list_models_search(alice, listed_repos):
    found = [model.id for model in alice.list_models(search="llama")]
    assert sorted(found) == ["alice/llama-q4", "alice/llama-q8", "bob/llama-onnx"]


def test_list_models_author(alice, listed_repos):
    found = [model.id for model in alice.list_models(author="microsoft")]
    assert found == ["microsoft/phi-mini"]


def test_list_models_private_for_owner(make_api, listed_repos):
    found = [model.id for model in make_api("bob").list_models(search="secret")]
    assert found == ["bob/secret-llama"]


def test_list_models_private_hidden(make_api, listed_repos):
    for api in (make_api("alice"), make_api(None)):
        assert [model.id for model in api.list_models(search="secret")] == []


def test_list_models_paginates(hub, alice, listed_repos):
    before = len(hub.requests_log)
    found = [model.id for model in alice.list_models()]
    pages = [entry for entry in hub.requests_log[before:] if entry[1] == "/api/models"]
    assert set(listed_repos) - {"bob/secret-llama"} <= set(found)
    assert len(found) == len(set(found))
    assert len(pages) == -(-len(found) // PAGE_SIZE)


def test_list_models_sort_last_modified(alice, listed_repos):
    found = [model.id for model in alice.list_models(sort="last_modified", limit=2)]
    assert found[0] == "alice/llama-q4"
    assert len(found) == 2


def test_list_models_sort_created_at(alice, listed_repos):
    found = [model.id for model in alice.list_models(author="alice", sort="created_at")]
    assert found == ["alice/zeta", "alice/phi-gguf", "alice/llama-q8", "alice/llama-q4"]


def test_list_models_filter_tags(alice, repo_id):
    alice.upload_file(
        path_or_fileobj=b"---\ntags:\n- rare-tag-for-filter\n---\n",
        path_in_repo="README.md",
        repo_id=repo_id,
    )
    found = [model.id for model in alice.list_models(filter="rare-tag-for-filter")]
    assert found == [repo_id]


def test_list_models_gated(alice, repo_id):
    alice.update_repo_settings(repo_id, gated="auto")
    found = [model.id for model in alice.list_models(gated=True)]
    assert repo_id in found
    assert all(alice.model_info(model_id).gated for model_id in found)


def test_list_models_full(alice, listed_repos):
    model = next(iter(alice.list_models(author="microsoft", full=True)))
    assert model.sha == alice.model_info("microsoft/phi-mini").sha
    assert [sibling.rfilename for sibling in model.siblings] == [".gitattributes"]


def test_list_models_expand(alice, listed_repos):
    model = next(iter(alice.list_models(author="microsoft", expand=["sha", "private"])))
    assert model.sha is not None
    assert model.private is False
    assert model.created_at is None


def test_list_models_card_data(alice, repo_id):
    alice.upload_file(
        path_or_fileobj=b"---\nlicense: apache-2.0\n---\n",
        path_in_repo="README.md",
        repo_id=repo_id,
    )
    model = next(iter(alice.list_models(search=repo_id.split("/")[1], cardData=True)))
    assert model.card_data["license"] == "apache-2.0"


@pytest.fixture
def tree_repo(alice, repo_id):
    """A repo with files at three depths."""
    files = ["a.txt", "b.txt", "dir/c.txt", "dir/d.txt", "dir/sub/e.txt", "z/f.txt"]
    alice.create_commit(
        repo_id,
        [CommitOperationAdd(path, path.encode()) for path in files],
        commit_message="Add tree",
    )
    return repo_id


def test_list_repo_files_paginates(hub, alice, tree_repo):
    before = len(hub.requests_log)
    files = alice.list_repo_files(tree_repo)
    pages = [entry for entry in hub.requests_log[before:] if "/tree/" in entry[1]]
    assert sorted(files) == [
        ".gitattributes",
        "a.txt",
        "b.txt",
        "dir/c.txt",
        "dir/d.txt",
        "dir/sub/e.txt",
        "z/f.txt",
    ]
    assert len(pages) > 1


def test_list_repo_tree_recursive(alice, tree_repo):
    entries = list(alice.list_repo_tree(tree_repo, recursive=True))
    folders = sorted(entry.path for entry in entries if isinstance(entry, RepoFolder))
    assert folders == ["dir", "dir/sub", "z"]
    assert all(
        len(entry.tree_id) == 40 for entry in entries if isinstance(entry, RepoFolder)
    )


def test_list_repo_tree_top_level(alice, tree_repo):
    entries = list(alice.list_repo_tree(tree_repo))
    assert sorted(entry.path for entry in entries) == [
        ".gitattributes",
        "a.txt",
        "b.txt",
        "dir",
        "z",
    ]


def test_list_repo_tree_subfolder(alice, tree_repo):
    entries = list(alice.list_repo_tree(tree_repo, path_in_repo="dir"))
    assert sorted(entry.path for entry in entries) == [
        "dir/c.txt",
        "dir/d.txt",
        "dir/sub",
    ]


def test_list_repo_tree_missing_folder(alice, tree_repo):
    with pytest.raises(EntryNotFoundError):
        list(alice.list_repo_tree(tree_repo, path_in_repo="nope"))


def test_list_repo_tree_expand(alice, tree_repo):
    entries = list(alice.list_repo_tree(tree_repo, path_in_repo="dir", expand=True))
    files = [entry for entry in entries if isinstance(entry, RepoFile)]
    assert files[0].last_commit.title == "Add tree"
    assert files[0].security.safe is True


def test_get_paths_info(alice, tree_repo):
    infos = alice.get_paths_info(tree_repo, ["a.txt", "dir", "missing.txt"])
    assert [info.path for info in infos] == ["a.txt", "dir"]
    assert isinstance(infos[0], RepoFile)
    assert isinstance(infos[1], RepoFolder)


def test_list_repo_refs(alice, repo_id):
    alice.create_branch(repo_id, branch="dev")
    alice.create_tag(repo_id, tag="v1.0")
    refs = alice.list_repo_refs(repo_id)
    head = alice.model_info(repo_id).sha
    assert sorted(branch.name for branch in refs.branches) == ["dev", "main"]
    assert all(branch.target_commit == head for branch in refs.branches)
    assert [(tag.name, tag.ref, tag.target_commit) for tag in refs.tags] == [
        ("v1.0", "refs/tags/v1.0", head)
    ]


def test_create_branch_from_revision(alice, repo_id):
    first = alice.model_info(repo_id).sha
    alice.upload_file(path_or_fileobj=b"1", path_in_repo="one.txt", repo_id=repo_id)
    alice.create_branch(repo_id, branch="old", revision=first)
    assert alice.model_info(repo_id, revision="old").sha == first


def test_create_branch_exists(alice, repo_id):
    alice.create_branch(repo_id, branch="dev")
    with pytest.raises(HfHubHTTPError) as caught:
        alice.create_branch(repo_id, branch="dev")
    assert caught.value.response.status_code == 409
    alice.create_branch(repo_id, branch="dev", exist_ok=True)


def test_delete_branch(alice, repo_id):
    alice.create_branch(repo_id, branch="dev")
    alice.delete_branch(repo_id, branch="dev")
    with pytest.raises(RevisionNotFoundError):
        alice.model_info(repo_id, revision="dev")


def test_revision_by_tag_and_short_sha(alice, repo_id):
    head = alice.model_info(repo_id).sha
    alice.create_tag(repo_id, tag="release")
    assert alice.model_info(repo_id, revision="release").sha == head
    assert alice.model_info(repo_id, revision=head[:8]).sha == head


def test_list_repo_commits_order(alice, repo_id):
    for number in range(PAGE_SIZE + 2):
        alice.upload_file(
            path_or_fileobj=str(number).encode(),
            path_in_repo="n.txt",
            repo_id=repo_id,
            commit_message=f"Commit {number}",
        )
    commits = alice.list_repo_commits(repo_id)
    titles = [commit.title for commit in commits]
    assert titles == [f"Commit {n}" for n in reversed(range(PAGE_SIZE + 2))] + [
        "initial commit"
    ]
    assert commits[0].commit_id == alice.model_info(repo_id).sha
    assert commits[0].created_at >= commits[-1].created_at


def test_list_repo_commits_formatted(alice, repo_id):
    alice.upload_file(
        path_or_fileobj=b"x",
        path_in_repo="x.txt",
        repo_id=repo_id,
        commit_message="Add <x>",
    )
    latest = alice.list_repo_commits(repo_id, formatted=True)[0]
    assert latest.formatted_title == "Add &lt;x&gt;"
