"""Source handling of the main job: the commit sha is pinned for the whole
job, revisions resolve, local folders publish privately, names and flags."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import RepositoryNotFoundError

from hubquant import toolchains
from hubquant.backends.gguf import GgufBackend
from hubquant.errors import PublishError, SourceError
from hubquant.pipeline import JobRequest, run_job
from hubquant.progress import Reporter
from hubquant.tinymodels import publish_tiny_model

from gguf_helpers import ALICE, run_cli

PINNED = "alice/pinned-phi"


class PushDuringJob(Reporter):
    """Pushes a new commit to the source's main branch once the job has pinned its sha."""

    def __init__(self, push) -> None:
        super().__init__()
        self.push = push
        self.pushed: str | None = None

    def on_message(self, text: str) -> None:
        if text.startswith("source ") and "pinned to commit" in text and self.pushed is None:
            self.pushed = self.push()


@pytest.fixture(scope="module")
def moved_source(hub, alice, tiny_model):
    """A job on PINNED during which main moved on to a one-layer model."""
    first = publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id=PINNED, cache=tiny_model)
    reporter = PushDuringJob(
        lambda: publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id=PINNED, cache=tiny_model, num_layers=1, seed=5)
    )
    request = JobRequest(source=PINNED, targets=["gguf:Q8_0"], endpoint=hub.url, token=hub.token_for("alice"), push=True)
    result = run_job(request, reporter)
    return first, reporter.pushed, result


def test_job_keeps_sha_while_main_moves(alice, moved_source, gguf_toolchain):
    first, second, result = moved_source
    assert second is not None and second != first
    assert alice.model_info(PINNED).sha == second
    assert result.ok and result.sha == first
    manifest = json.load(open(alice.hf_hub_download(f"{PINNED}-GGUF", "hubquant.json")))
    assert manifest["source"]["sha"] == first
    # Every file came from the first commit: its config has two layers.
    card = open(alice.hf_hub_download(f"{PINNED}-GGUF", "README.md")).read()
    assert first in card
    assert second not in card
    gguf_file = alice.hf_hub_download(f"{PINNED}-GGUF", "pinned-phi-Q8_0.gguf")
    described = toolchains.run_step(gguf_toolchain, "gguf", {"op": "inspect", "file": gguf_file}).data
    assert described["metadata"]["phi3.block_count"] == 2


def test_revision_sha_and_branch_resolve(hub, alice, moved_source, tmp_path):
    first, second, _ = moved_source
    alice.create_branch(PINNED, branch="v1", revision=first)
    for revision in (first, "v1"):
        result = run_cli(["run", f"{PINNED}@{revision}", "--target", "gguf:Q8_0", "--push"], hub=hub, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        assert f"pinned to commit {first}" in result.stderr
        assert "up to date" in result.stdout
    plan = run_cli(["plan", f"{PINNED}@main", "--target", "gguf:Q8_0", "--push", "--json"], hub=hub, cwd=tmp_path)
    assert json.loads(plan.stdout)["sha"] == second


def test_unknown_revision_named(hub, moved_source, tmp_path):
    result = run_cli(["run", f"{PINNED}@no-such-branch", "--target", "gguf:Q8_0"], hub=hub, cwd=tmp_path)
    assert result.returncode == 1
    assert "no-such-branch" in result.stderr


def test_local_folder_push_is_private_under_repo_name(hub, tiny_model, tmp_path):
    folder = tiny_model("phi-3-mini-4k-instruct")
    result = run_cli(["run", str(folder), "--target", "gguf:Q8_0", "--push", "--repo-name", "my-local-phi"],
                     hub=hub, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "a local folder has no Hub visibility, so the release is private" in result.stderr
    alice = HfApi(endpoint=hub.url, token=hub.token_for("alice"))
    assert alice.model_info("alice/my-local-phi-GGUF").private is True
    # --repo-name names the repo; the files keep the model's name.
    assert "phi-3-mini-4k-instruct-Q8_0.gguf" in alice.list_repo_files("alice/my-local-phi-GGUF")
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.url, token=hub.token_for("bob")).model_info("alice/my-local-phi-GGUF")


def test_update_existing_adopts_foreign_repo(hub, alice, tiny_model):
    publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id="alice/adopted-phi", cache=tiny_model)
    alice.create_repo("alice/adopted-phi-GGUF")
    alice.upload_file(path_or_fileobj=b"# notes of mine\n", path_in_repo="NOTES.md", repo_id="alice/adopted-phi-GGUF")
    request = JobRequest(source="alice/adopted-phi", targets=["gguf:Q8_0"], endpoint=hub.url,
                         token=hub.token_for("alice"), push=True, update_existing=True)
    result = run_job(request)
    assert result.ok, result.releases[0].failed
    files = alice.list_repo_files("alice/adopted-phi-GGUF")
    assert {"adopted-phi-Q8_0.gguf", "hubquant.json", "README.md", "NOTES.md"} <= set(files)


def test_plan_text_shows_visibility_and_memory(hub, alice, tiny_model, tmp_path):
    publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id="alice/planned-private-phi", private=True, cache=tiny_model)
    result = run_cli(["plan", "alice/planned-private-phi", "--target", "gguf:Q8_0", "--push"], hub=hub, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "visibility: the source is private, so the release is private (pass --public to change)" in result.stdout
    assert "repo alice/planned-private-phi-GGUF:" in result.stdout
    assert "estimated peak memory:" in result.stdout
    assert "estimated peak disk:" in result.stdout


def test_float32_source_converted_once_to_f32(tiny_model, tmp_path, monkeypatch):
    calls = []
    real = GgufBackend._convert

    def counting(self, context, toolchain, work, outtype):
        calls.append(outtype)
        return real(self, context, toolchain, work, outtype)

    monkeypatch.setattr(GgufBackend, "_convert", counting)
    folder = tiny_model("phi-3-mini-4k-instruct", dtype="float32")
    result = run_job(JobRequest(source=str(folder), targets=["gguf:Q8_0", "gguf:Q4_K_M", "gguf:F32"], output_dir=tmp_path))
    assert result.ok, result.releases[0].failed
    assert calls == ["F32"]
    manifest = json.loads((tmp_path / result.releases[0].repo_id / "hubquant.json").read_text())
    assert sorted(manifest["targets"]) == ["gguf:F32", "gguf:Q4_K_M", "gguf:Q8_0"]


def test_bad_token_never_in_error(hub, tmp_path):
    secret = "hf_made_up_token_4f1c9a"
    result = run_cli(["run", "microsoft/Phi-3-mini-4k-instruct", "--target", "gguf:Q8_0", "--push"],
                     hub=hub, token=secret, cwd=tmp_path)
    assert result.returncode != 0
    assert secret not in result.stdout + result.stderr
    assert ALICE not in result.stdout + result.stderr


def no_download(*args, **kwargs):
    raise AssertionError("the job downloaded the source")


def test_remote_shard_headers_checked_before_download(hub, alice, tiny_model, tmp_path, monkeypatch):
    from hubquant import pipeline
    from hubquant.source import parse_source, resolve_hub_source

    repo = "alice/bad-index-phi"
    good_sha = publish_tiny_model(alice, "phi-3-mini-4k-instruct-sharded", repo_id=repo, cache=tiny_model)
    hub_source = resolve_hub_source(alice, parse_source(f"{repo}@{good_sha}", endpoint=hub.url))
    pipeline._check_remote_headers(alice, hub_source)  # the intact index passes

    index = json.load(open(alice.hf_hub_download(repo, "model.safetensors.index.json", cache_dir=tmp_path)))
    first_shard = sorted(set(index["weight_map"].values()))[0]
    index["weight_map"]["model.layers.7.mlp.down_proj.weight"] = first_shard
    alice.upload_file(path_or_fileobj=json.dumps(index).encode(), path_in_repo="model.safetensors.index.json", repo_id=repo)

    monkeypatch.setattr(pipeline, "download", no_download)
    request = JobRequest(source=repo, targets=["gguf:Q8_0"], endpoint=hub.url, token=hub.token_for("alice"),
                         output_dir=tmp_path / "out")
    with pytest.raises(SourceError, match=f"maps tensor model.layers.7.mlp.down_proj.weight to {first_shard}"):
        run_job(request)


def test_invalid_remote_weights_rejected_before_download(hub, alice, tiny_model, tmp_path, monkeypatch):
    from hubquant import pipeline

    repo = "alice/garbled-phi"
    publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id=repo, cache=tiny_model)
    alice.upload_file(path_or_fileobj=b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!", path_in_repo="model.safetensors",
                      repo_id=repo)
    monkeypatch.setattr(pipeline, "download", no_download)
    request = JobRequest(source=repo, targets=["gguf:Q8_0"], endpoint=hub.url, token=hub.token_for("alice"),
                         output_dir=tmp_path / "out")
    with pytest.raises(SourceError, match="weights of alice/garbled-phi are not valid safetensors"):
        run_job(request)


def test_empty_repo_left_by_stopped_run_is_used(alice):
    from hubquant.publish import plan_repo

    options = {"namespace": "alice", "base_name": "leftover-phi-GGUF", "source_id": "alice/leftover-phi",
               "source_owner": "alice", "private": True, "gated": False, "update_existing": False, "name_given": False}
    alice.create_repo("alice/leftover-phi-GGUF", private=True)
    plan = plan_repo(alice, reuse_empty=True, **options)
    assert plan.exists
    assert plan.empty
    assert "exists and is empty" in plan.note
    # Without the retry flag an empty repo is someone else's, as any other.
    with pytest.raises(PublishError, match="is a repo hubquant did not create"):
        plan_repo(alice, **options)

    alice.upload_file(path_or_fileobj=b"mine", path_in_repo="NOTES.md", repo_id="alice/leftover-phi-GGUF")
    with pytest.raises(PublishError, match="is a repo hubquant did not create"):
        plan_repo(alice, reuse_empty=True, **options)


def test_private_source_never_fills_public_repo(hub, alice, tiny_model, monkeypatch):
    from hubquant import pipeline

    publish_tiny_model(alice, "phi-3-mini-4k-instruct", repo_id="alice/hidden-phi", private=True, cache=tiny_model)
    alice.create_repo("alice/hidden-phi-GGUF", private=False)  # empty and public
    monkeypatch.setattr(pipeline, "download", no_download)
    request = JobRequest(source="alice/hidden-phi", targets=["gguf:Q8_0"], endpoint=hub.url,
                         token=hub.token_for("alice"), push=True, update_existing=True)
    with pytest.raises(PublishError, match="alice/hidden-phi-GGUF is public but the source is private or gated"):
        run_job(request)
    assert alice.list_repo_files("alice/hidden-phi-GGUF") == [".gitattributes"]


def test_quiet_run_prints_results_only(tiny_model, hub, tmp_path):
    folder = tiny_model("phi-3-mini-4k-instruct")
    result = run_cli(["run", str(folder), "--target", "gguf:Q8_0", "--output-dir", str(tmp_path / "out"), "--quiet"],
                     hub=hub, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("staged: ")
    assert "[worker]" not in result.stderr
    assert "[converting]" not in result.stderr
    assert "[done] phi-3-mini-4k-instruct-GGUF gguf:Q8_0" in result.stderr


def test_hub_source_without_config_rejected(hub, alice, monkeypatch):
    from hubquant import pipeline

    alice.create_repo("alice/no-config-phi", exist_ok=True)
    alice.upload_file(path_or_fileobj=b"# empty\n", path_in_repo="README.md", repo_id="alice/no-config-phi")
    monkeypatch.setattr(pipeline, "download", no_download)
    request = JobRequest(source="alice/no-config-phi", targets=["gguf:Q8_0"], endpoint=hub.url, token=hub.token_for("alice"))
    with pytest.raises(SourceError, match="alice/no-config-phi has no config.json"):
        run_job(request)


def test_hub_index_naming_missing_shard_rejected(hub, alice, tiny_model, tmp_path, monkeypatch):
    from hubquant import pipeline

    repo = "alice/missing-shard-phi"
    publish_tiny_model(alice, "phi-3-mini-4k-instruct-sharded", repo_id=repo, cache=tiny_model)
    index = json.load(open(alice.hf_hub_download(repo, "model.safetensors.index.json", cache_dir=tmp_path)))
    last_shard = sorted(set(index["weight_map"].values()))[-1]
    alice.delete_file(last_shard, repo_id=repo)
    monkeypatch.setattr(pipeline, "download", no_download)
    request = JobRequest(source=repo, targets=["gguf:Q8_0"], endpoint=hub.url, token=hub.token_for("alice"))
    with pytest.raises(SourceError, match=f"names shard {last_shard}, which the repo does not contain"):
        run_job(request)


def test_hub_source_of_unsupported_architecture_rejected(hub, alice, monkeypatch):
    from hubquant import pipeline

    alice.create_repo("alice/not-phi", exist_ok=True)
    config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}
    alice.upload_file(path_or_fileobj=json.dumps(config).encode(), path_in_repo="config.json", repo_id="alice/not-phi")
    monkeypatch.setattr(pipeline, "download", no_download)
    request = JobRequest(source="alice/not-phi", targets=["gguf:Q8_0"], endpoint=hub.url, token=hub.token_for("alice"))
    with pytest.raises(SourceError, match="the gguf backend does not support architecture GPT2LMHeadModel; supported: "):
        run_job(request)
