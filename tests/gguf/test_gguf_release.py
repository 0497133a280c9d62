"""The main job as a new user runs it: a tiny Phi model on the local Hub is
quantized to Q8_0, Q4_K_M and F16, validated, and pushed back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi, snapshot_download

from hubquant import toolchains
from hubquant.cards import validate_card_metadata

from gguf_helpers import ALICE, run_cli

REPO = "alice/Phi-3-mini-4k-instruct-GGUF"
FILES = [f"Phi-3-mini-4k-instruct-{t}.gguf" for t in ("Q8_0", "Q4_K_M", "F16")]


@pytest.fixture(scope="module")
def downloaded(phi3_release, hub, tmp_path_factory) -> Path:
    assert phi3_release.returncode == 0, phi3_release.stderr[-3000:]
    return Path(snapshot_download(REPO, endpoint=hub.url, token=hub.token_for("alice"), local_dir=tmp_path_factory.mktemp("dl")))


def _card(downloaded: Path) -> tuple[dict, str]:
    text = (downloaded / "README.md").read_text()
    _, header, body = text.split("---", 2)
    return yaml.safe_load(header), body


def test_release_has_every_file(downloaded):
    for name in FILES:
        assert (downloaded / name).is_file(), name


def test_release_files_run_in_llama_cpp(downloaded, gguf_toolchain):
    for name in FILES:
        outcome = toolchains.run_step(
            gguf_toolchain, "gguf", {"op": "forced_stop", "file": str(downloaded / name), "eos_ids": [32000], "prompt": "Hi"}
        ).data["outcomes"][0]
        assert outcome["finish_reason"] == "stop", name


def test_release_is_one_commit(alice, phi3_release):
    # The Hub itself makes an "initial commit" when a repo is created.
    commits = [c for c in alice.list_repo_commits(REPO) if c.title != "initial commit"]
    assert len(commits) == 1


def test_commit_message_names_source_sha(alice, phi3_source, phi3_release):
    commit = alice.list_repo_commits(REPO)[0]
    assert phi3_source in (commit.title + commit.message)


def test_card_metadata(downloaded):
    metadata, _ = _card(downloaded)
    assert metadata["base_model"] == "microsoft/Phi-3-mini-4k-instruct"
    assert metadata["base_model_relation"] == "quantized"
    assert metadata["library_name"] == "gguf"
    assert metadata["pipeline_tag"] == "text-generation"
    assert metadata["license"] == "mit"
    for tag in ("gguf", "llama.cpp", "quantized", "q8_0", "q4_k_m", "f16", "phone"):
        assert tag in metadata["tags"], tag
    assert len(metadata["tags"]) == len(set(metadata["tags"]))
    assert "transformers" not in metadata["tags"]


def test_card_passes_hub_metadata_check(downloaded):
    assert validate_card_metadata((downloaded / "README.md").read_text()) == []


def test_card_body_names_source_sha(downloaded, phi3_source):
    _, body = _card(downloaded)
    assert phi3_source in body


def test_card_body_lists_measured_sizes(downloaded):
    manifest = json.loads((downloaded / "hubquant.json").read_text())
    _, body = _card(downloaded)
    for artifact in manifest["artifacts"]:
        assert f"{artifact['bits_per_weight']:.2f}" in body, artifact["target"]


def test_card_body_has_llama_cpp_build(downloaded):
    _, body = _card(downloaded)
    assert "b11312" in body
    assert "0c1e570" in body


def test_card_body_has_validation_numbers(downloaded):
    manifest = json.loads((downloaded / "hubquant.json").read_text())
    _, body = _card(downloaded)
    q8 = next(a for a in manifest["artifacts"] if a["target"] == "gguf:Q8_0")
    assert q8["validation"]["status"] == "passed"
    assert "KL" in body


def test_card_body_has_prompt_format(downloaded):
    _, body = _card(downloaded)
    assert "<|user|>" in body
    assert "<|assistant|>" in body


def test_card_body_has_run_instructions(downloaded):
    _, body = _card(downloaded)
    assert "llama-server" in body
    assert "ollama run" in body
    assert "Llama.from_pretrained" in body


def test_manifest_records_source(downloaded, phi3_source):
    manifest = json.loads((downloaded / "hubquant.json").read_text())
    assert manifest["source"] == {"id": "microsoft/Phi-3-mini-4k-instruct", "sha": phi3_source, "local": False}
    assert manifest["targets"] == ["gguf:F16", "gguf:Q4_K_M", "gguf:Q8_0"]


def test_token_never_in_output(phi3_release, downloaded):
    assert ALICE not in phi3_release.stdout
    assert ALICE not in phi3_release.stderr
    for path in downloaded.rglob("*"):
        if path.is_file() and path.suffix in (".md", ".json"):
            assert ALICE not in path.read_text(), path.name


def test_rerun_same_sha_changes_nothing(hub, alice, phi3_release, tmp_path):
    before = alice.list_repo_commits(REPO)
    result = run_cli(["run", "microsoft/Phi-3-mini-4k-instruct", "--target", "gguf:Q8_0", "--target", "gguf:F16", "--push"], hub=hub, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "up to date" in result.stdout
    assert alice.list_repo_commits(REPO) == before


def test_public_source_gives_public_release(hub, phi3_release):
    info = HfApi(endpoint=hub.url, token=hub.token_for("bob")).model_info(REPO)
    assert info.private is False


def test_progress_lines_are_plain(phi3_release):
    assert "\r" not in phi3_release.stderr
    assert "[done] alice/Phi-3-mini-4k-instruct-GGUF gguf:Q8_0" in phi3_release.stderr


def test_missing_source_error(hub, tmp_path):
    result = run_cli(["run", "microsoft/does-not-exist", "--target", "gguf:Q8_0", "--push"], hub=hub, cwd=tmp_path)
    assert result.returncode == 1
    assert "microsoft/does-not-exist was not found" in result.stderr


def test_bad_target_error(hub, tmp_path):
    result = run_cli(["run", "microsoft/Phi-3-mini-4k-instruct", "--target", "gguf:Q4_K_M:imatrx"], hub=hub, cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown option 'imatrx'" in result.stderr


