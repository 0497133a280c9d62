"""Publishing rules of the main job: visibility, repo names, rebuilds, failures."""

from __future__ import annotations

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import RepositoryNotFoundError

from hubquant.backends import gguf as gguf_backend
from hubquant.errors import PublishError, SourceError
from hubquant.pipeline import JobRequest, run_job
from hubquant.tinymodels import publish_tiny_model


def _request(hub, source, targets, **options) -> JobRequest:
    return JobRequest(source=source, targets=targets, endpoint=hub.url, token=hub.token_for("alice"), push=True, **options)


@pytest.fixture(scope="module")
def private_source(hub, alice, tiny_model):
    return publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id="alice/secret-phi", private=True, cache=tiny_model)


def test_private_source_gives_private_release(hub, private_source):
    result = run_job(_request(hub, "alice/secret-phi", ["gguf:Q8_0"]))
    assert result.ok
    bob = HfApi(endpoint=hub.url, token=hub.token_for("bob"))
    with pytest.raises(RepositoryNotFoundError):
        bob.model_info("alice/secret-phi-GGUF")
    owner = HfApi(endpoint=hub.url, token=hub.token_for("alice"))
    assert owner.model_info("alice/secret-phi-GGUF").private is True


def test_gated_source_public_release_is_gated(hub, alice, tiny_model, tmp_path):
    publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id="microsoft/gated-phi", gated="auto", cache=tiny_model)
    result = run_job(_request(hub, "microsoft/gated-phi", ["gguf:Q8_0"], public=True))
    assert result.ok
    info = alice.model_info("alice/gated-phi-GGUF")
    assert info.private is False
    assert info.gated


def test_gated_source_without_access_rejected(hub, alice, tiny_model, tmp_path):
    publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id="microsoft/gated-phi-2", gated="manual", cache=tiny_model)
    request = JobRequest(source="microsoft/gated-phi-2", targets=["gguf:Q8_0"], endpoint=hub.url, token=hub.token_for("carol"), push=True)
    with pytest.raises(SourceError, match="is gated and your account has no access"):
        run_job(request)


def test_foreign_repo_rejected(hub, alice, tiny_model, tmp_path):
    publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id="alice/foreign-phi", cache=tiny_model)
    alice.create_repo("alice/foreign-phi-GGUF")
    with pytest.raises(PublishError, match="--repo-name NAME .* or --update-existing"):
        run_job(_request(hub, "alice/foreign-phi", ["gguf:Q8_0"]))


def test_name_taken_by_other_source_gets_owner(hub, alice, phi3_release, tiny_model, tmp_path):
    # alice/Phi-3-mini-4k-instruct-GGUF holds microsoft's release already.
    publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id="alice/Phi-3-mini-4k-instruct", cache=tiny_model)
    result = run_job(_request(hub, "alice/Phi-3-mini-4k-instruct", ["gguf:Q8_0"]))
    assert [release.repo_id for release in result.releases] == ["alice/alice-Phi-3-mini-4k-instruct-GGUF"]


def test_new_source_sha_rebuilds_every_type(hub, alice, tiny_model, tmp_path):
    publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id="alice/moving-phi", cache=tiny_model)
    first = run_job(_request(hub, "alice/moving-phi", ["gguf:Q8_0", "gguf:Q4_K_M"]))
    assert first.ok
    new_sha = publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id="alice/moving-phi", cache=tiny_model, seed=1)
    second = run_job(_request(hub, "alice/moving-phi", ["gguf:Q8_0"]))
    assert sorted(second.releases[0].targets) == ["gguf:Q4_K_M", "gguf:Q8_0"]
    manifest = alice.hf_hub_download("alice/moving-phi-GGUF", "hubquant.json")
    import json

    assert json.load(open(manifest))["source"]["sha"] == new_sha


def test_failed_target_is_not_published(hub, alice, tiny_model, tmp_path, monkeypatch):
    publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id="alice/strict-phi", cache=tiny_model)
    impossible = gguf_backend.GgufType("Q4_K_M", 4.89, -1.0, 2.0)
    monkeypatch.setitem(gguf_backend.GGUF_TYPES, "Q4_K_M", impossible)
    result = run_job(_request(hub, "alice/strict-phi", ["gguf:Q8_0", "gguf:Q4_K_M"]))
    release = result.releases[0]
    assert "gguf:Q4_K_M" in release.failed
    assert "validation failed" in release.failed["gguf:Q4_K_M"]
    assert sorted(alice.list_repo_files("alice/strict-phi-GGUF")) == [
        ".gitattributes", "LICENSE", "README.md", "hubquant.json", "strict-phi-Q8_0.gguf"]


def test_forced_target_is_published_and_marked(hub, alice, tiny_model, tmp_path, monkeypatch):
    publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id="alice/forced-phi", cache=tiny_model)
    monkeypatch.setitem(gguf_backend.GGUF_TYPES, "Q4_K_M", gguf_backend.GgufType("Q4_K_M", 4.89, -1.0, 2.0))
    result = run_job(_request(hub, "alice/forced-phi", ["gguf:Q4_K_M"], force=True))
    assert "forced-phi-Q4_K_M.gguf" in result.releases[0].files
    assert "forced" in result.releases[0].card


def test_all_targets_failing_leaves_no_repo(hub, alice, tiny_model, tmp_path, monkeypatch):
    publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id="alice/doomed-phi", cache=tiny_model)
    monkeypatch.setitem(gguf_backend.GGUF_TYPES, "Q8_0", gguf_backend.GgufType("Q8_0", 8.5, -1.0, 2.0))
    result = run_job(_request(hub, "alice/doomed-phi", ["gguf:Q8_0"]))
    assert result.releases[0].status == "failed"
    with pytest.raises(RepositoryNotFoundError):
        alice.model_info("alice/doomed-phi-GGUF")


def test_reference_runs_once_per_job(tiny_model, tmp_path, monkeypatch):
    import hubquant.pipeline as pipeline

    calls = []
    real = pipeline.compute_reference

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "compute_reference", counting)
    folder = tiny_model("phi-3-mini-4k-instruct")
    result = run_job(JobRequest(source=str(folder), targets=["gguf:Q8_0", "onnx:fp32"], output_dir=tmp_path))
    assert len(result.releases) == 2
    assert result.ok
    assert len(calls) == 1
