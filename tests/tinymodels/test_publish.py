"""publish_tiny_model against the local test Hub."""

from __future__ import annotations

import os

# The client reads these when it is first imported. The test Hub speaks
# plain LFS, not Xet.
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import pytest  # noqa: E402
from huggingface_hub import HfApi  # noqa: E402
from huggingface_hub.errors import HfHubHTTPError  # noqa: E402

from hubquant.testhub import HubServer  # noqa: E402
from hubquant.tinymodels import BuildCache, publish_tiny_model  # noqa: E402

# huggingface_hub 2.4.0 passes LFS file objects as data= to httpx2, which
# warns about it. The warning comes from the client, not from this code.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = HubServer(tmp_path_factory.mktemp("publish-hub")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def alice(hub) -> HfApi:
    return HfApi(endpoint=hub.url, token=hub.token_for("alice"))


def test_publish_one_commit(alice, tmp_path) -> None:
    sha = publish_tiny_model(alice, "phi-3-mini-4k-instruct-sharded", workdir=tmp_path)
    repo_id = "alice/Phi-3-mini-4k-instruct-sharded"

    (folder,) = [path for path in tmp_path.iterdir() if path.is_dir()]
    local_files = {path.name for path in folder.iterdir()}
    assert alice.model_info(repo_id).sha == sha
    assert set(alice.list_repo_files(repo_id)) == local_files | {".gitattributes"}
    commits = alice.list_repo_commits(repo_id)
    assert commits[0].commit_id == sha
    # The upload is one commit: its parent has only what create_repo put there.
    assert set(alice.list_repo_files(repo_id, revision=commits[1].commit_id)) <= {".gitattributes"}


def test_publish_card_metadata(alice, tmp_path) -> None:
    publish_tiny_model(alice, "phi-2", repo_id="alice/tiny-phi-2", workdir=tmp_path)
    info = alice.model_info("alice/tiny-phi-2")
    assert info.card_data["license"] == "mit"
    assert info.card_data["pipeline_tag"] == "text-generation"
    assert info.pipeline_tag == "text-generation"


def test_publish_build_options(alice, tmp_path) -> None:
    sha = publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id="alice/tiny-seed-7", seed=7, num_layers=1)
    path = alice.hf_hub_download("alice/tiny-seed-7", "config.json", revision=sha, cache_dir=tmp_path)
    assert '"num_hidden_layers": 1' in open(path, encoding="utf-8").read()


def test_publish_private_gated(hub, alice, tmp_path) -> None:
    publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id="microsoft/tiny-gated", gated="manual",
                       num_layers=1, workdir=tmp_path)
    publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id="alice/tiny-private", private=True,
                       num_layers=1, workdir=tmp_path)
    assert alice.model_info("microsoft/tiny-gated").gated == "manual"
    assert alice.model_info("alice/tiny-private").private is True

    bob = HfApi(endpoint=hub.url, token=hub.token_for("bob"))
    with pytest.raises(HfHubHTTPError):
        bob.hf_hub_download("microsoft/tiny-gated", "config.json", cache_dir=tmp_path / "bob")
    with pytest.raises(HfHubHTTPError):
        bob.model_info("alice/tiny-private")


def test_publish_rejects_bad_gated(alice) -> None:
    with pytest.raises(ValueError, match="invalid gated value"):
        publish_tiny_model(alice, "phi-2", repo_id="alice/never", gated="sometimes")


def test_publish_from_cache_builds_once(alice, tmp_path) -> None:
    cache = BuildCache(tmp_path / "builds")
    publish_tiny_model(alice, "phi-2", repo_id="alice/cached-a", cache=cache)
    publish_tiny_model(alice, "phi-2", repo_id="alice/cached-b", cache=cache)
    assert cache.builds == 1
    publish_tiny_model(alice, "phi-2", repo_id="alice/cached-c", cache=cache, seed=3)
    assert cache.builds == 2

    def weights(repo_id: str) -> str:
        (entry,) = [item for item in alice.model_info(repo_id, files_metadata=True).siblings
                    if item.rfilename.endswith(".safetensors")]
        return entry.lfs.sha256

    assert weights("alice/cached-a") == weights("alice/cached-b") != weights("alice/cached-c")
    assert cache("phi-2") == cache.folder("phi-2")
    assert cache.builds == 2
