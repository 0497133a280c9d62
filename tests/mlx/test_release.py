"""The main job as a user runs it: tiny Phi models on the local Hub become
validated mlx:4bit and mlx:bf16 releases, one repo each, that a fresh
snapshot_download loads and runs with mlx-lm. The Phi-4-mini source keeps its
RoPE keys under rope_parameters, as transformers 5 saves them."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi, snapshot_download

from hubquant import toolchains
from hubquant.backends.mlx_checks import SOURCE_LOGIT_LIMIT
from hubquant.cards import human_size, validate_card_metadata
from hubquant.backends.mlx import prepare_input
from hubquant.source import inspect_folder, read_safetensors_header

from conftest import PHI3, PHI4_MINI
from mlx_helpers import ALICE, run_cli

PHI3_REPOS = ["alice/Phi-3-mini-4k-instruct-mlx-4bit", "alice/Phi-3-mini-4k-instruct-mlx-bf16"]
PHI4_MINI_REPO = "alice/Phi-4-mini-instruct-rope-parameters-mlx-bf16"
REPOS = PHI3_REPOS + [PHI4_MINI_REPO]


@pytest.fixture(scope="module")
def releases(phi3_mlx_release, phi4_mini_mlx_release):
    assert phi3_mlx_release.returncode == 0, phi3_mlx_release.stderr[-3000:]
    assert phi4_mini_mlx_release.ok, [release.failed for release in phi4_mini_mlx_release.releases]
    return phi3_mlx_release, phi4_mini_mlx_release


@pytest.fixture(scope="module")
def downloaded(releases, hub, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mlx-downloads")
    return {
        repo: Path(snapshot_download(repo, endpoint=hub.url, token=hub.token_for("alice"), local_dir=root / repo.split("/")[1]))
        for repo in REPOS
    }


def _card(folder: Path) -> tuple[dict, str]:
    _, header, body = (folder / "README.md").read_text().split("---", 2)
    return yaml.safe_load(header), body


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "hubquant.json").read_text())


def test_one_repo_per_target(releases):
    phi3, phi4_mini = releases
    assert "alice/Phi-3-mini-4k-instruct-mlx-4bit" in phi3.stdout
    assert "alice/Phi-3-mini-4k-instruct-mlx-bf16" in phi3.stdout
    assert [release.repo_id for release in phi4_mini.releases] == [PHI4_MINI_REPO]
    assert [release.targets for release in phi4_mini.releases] == [["mlx:bf16"]]


@pytest.mark.parametrize("repo", REPOS)
def test_release_has_model_files(downloaded, repo):
    names = {path.name for path in downloaded[repo].iterdir() if path.is_file()}
    for name in ("config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
                 "tokenizer.json", "tokenizer_config.json", "README.md", "hubquant.json", "LICENSE"):  # fmt: skip
        assert name in names, name


@pytest.mark.parametrize("repo", REPOS)
def test_download_runs_with_mlx_lm(downloaded, mlx_toolchain, repo):
    result = subprocess.run(
        [str(mlx_toolchain.python), "-m", "mlx_lm", "generate", "--model", str(downloaded[repo]),
         "--prompt", "Hello", "--max-tokens", "4"],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(downloaded[repo].parent)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Prompt:" in result.stdout
    assert "Generation:" in result.stdout


def test_served_release_answers_chat(downloaded, mlx_toolchain):
    folder = downloaded["alice/Phi-3-mini-4k-instruct-mlx-4bit"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [str(mlx_toolchain.python), "-m", "mlx_lm", "server", "--model", str(folder), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(folder.parent)},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5):
                    break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "mlx_lm server did not start within 120 s"
                time.sleep(1)
        body = json.dumps({"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 4}).encode()
        request = urllib.request.Request(f"{base}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            reply = json.loads(response.read())
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert reply["choices"][0]["message"]["role"] == "assistant"
    assert reply["usage"]["completion_tokens"] >= 1


@pytest.mark.parametrize("repo", REPOS)
def test_release_is_one_commit(alice, releases, repo):
    # The Hub itself makes an "initial commit" when a repo is created.
    commits = [commit for commit in alice.list_repo_commits(repo) if commit.title != "initial commit"]
    assert len(commits) == 1


@pytest.mark.parametrize("repo", PHI3_REPOS)
def test_commit_names_source_sha(alice, phi3_mlx_source, releases, repo):
    commit = alice.list_repo_commits(repo)[0]
    assert phi3_mlx_source in commit.title + commit.message


@pytest.mark.parametrize("repo", REPOS)
def test_card_metadata(downloaded, repo):
    metadata, _ = _card(downloaded[repo])
    assert metadata["base_model"] == (PHI3 if "Phi-3" in repo else PHI4_MINI)
    assert metadata["base_model_relation"] == "quantized"
    assert metadata["library_name"] == "mlx"
    assert metadata["pipeline_tag"] == "text-generation"
    assert metadata["license"] == "mit"
    for tag in ("mlx", "mlx-lm", "apple-silicon"):
        assert tag in metadata["tags"], tag
    assert ("4-bit" in metadata["tags"]) == repo.endswith("4bit")
    assert ("bf16" in metadata["tags"]) == repo.endswith("bf16")
    assert "transformers" not in metadata["tags"]
    assert len(metadata["tags"]) == len(set(metadata["tags"]))


@pytest.mark.parametrize("repo", REPOS)
def test_card_passes_hub_metadata_check(downloaded, repo):
    assert validate_card_metadata((downloaded[repo] / "README.md").read_text()) == []


@pytest.mark.parametrize("repo", REPOS)
def test_card_states_measured_format(downloaded, repo):
    folder = downloaded[repo]
    artifact = _manifest(folder)["artifacts"][0]
    _, body = _card(folder)
    assert f"| Bits per weight | {artifact['bits_per_weight']:.3f} |" in body
    assert "| Stored float dtype | `bfloat16` |" in body
    # The size is what the downloaded files measure, not an estimate.
    files = artifact["files"]
    measured = sum((folder / name).stat().st_size for name in files)
    assert artifact["size_bytes"] == measured
    assert f"| Size | {human_size(measured)} in {len(files)} files |" in body
    if repo.endswith("4bit"):
        assert "4-bit affine (a scale and a bias per group), group size 64" in body
        assert "| 4-bit affine, group size 64 |" in body
        assert 4.4 < artifact["bits_per_weight"] < 4.6
    else:
        assert "none, weights stored as `bfloat16`" in body
        # mlx-lm also counts the bytes of the LongRoPE frequency arrays
        # (48 float32 values per layer in Phi-4-mini), which are not weights.
        assert artifact["bits_per_weight"] == pytest.approx(16.0, abs=0.01)


@pytest.mark.parametrize("repo", REPOS)
def test_card_lists_target_hardware(downloaded, repo):
    _, body = _card(downloaded[repo])
    for platform in ("Macs with Apple silicon", "iPhone and iPad", "Linux, CPU", "Linux, NVIDIA GPU"):
        assert f"| {platform} |" in body, platform
    assert "MLX Swift LM" in body
    assert "it did not run it on the other platforms" in body


@pytest.mark.parametrize("repo", REPOS)
def test_card_has_run_instructions(downloaded, repo):
    _, body = _card(downloaded[repo])
    assert f"mlx_lm.generate --model {repo}" in body
    assert f"mlx_lm.server --model {repo}" in body
    assert f'load("{repo}")' in body


@pytest.mark.parametrize("repo", REPOS)
def test_card_has_validation_results(downloaded, repo):
    artifact = _manifest(downloaded[repo])["artifacts"][0]
    _, body = _card(downloaded[repo])
    assert artifact["validation"]["status"] == "passed"
    assert "### The source in mlx-lm against transformers" in body
    assert "| generation stops at EOS | passed |" in body
    assert "| chat template | passed |" in body
    if repo.endswith("4bit"):
        assert f"mean {artifact['validation']['kl_mean']:.4g}" in body
    else:
        assert "| logits match transformers | passed |" in body


def test_card_has_prompt_format(downloaded):
    _, body = _card(downloaded["alice/Phi-3-mini-4k-instruct-mlx-4bit"])
    assert "<|user|>" in body
    assert "`<|end|>` (id 32007)" in body


@pytest.mark.parametrize("repo", REPOS)
def test_manifest_records_source(downloaded, phi3_mlx_source, phi4_mini_mlx_source, repo):
    manifest = _manifest(downloaded[repo])
    sha = phi3_mlx_source if "Phi-3" in repo else phi4_mini_mlx_source
    assert manifest["source"] == {"id": PHI3 if "Phi-3" in repo else PHI4_MINI, "sha": sha, "local": False}
    assert manifest["targets"] == ["mlx:4bit" if repo.endswith("4bit") else "mlx:bf16"]
    assert manifest["tool_versions"]["mlx-lm"] == "0.32.2"


@pytest.mark.parametrize("repo", REPOS)
def test_config_lists_every_eos_id(downloaded, repo):
    expected = [32000, 32001, 32007] if "Phi-3" in repo else [199999, 200020]
    for name in ("config.json", "generation_config.json"):
        assert json.loads((downloaded[repo] / name).read_text())["eos_token_id"] == expected, name


@pytest.mark.parametrize("repo", REPOS)
def test_config_dtype_matches_headers(downloaded, repo):
    folder = downloaded[repo]
    header = read_safetensors_header(folder / "model.safetensors")
    float_types = {entry["dtype"] for entry in header.values()} - {"U32"}
    assert float_types == {"BF16"}
    assert json.loads((folder / "config.json").read_text())["torch_dtype"] == "bfloat16"


@pytest.mark.parametrize("repo", REPOS)
def test_tokenizer_files_are_the_sources(downloaded, hub, repo, tmp_path):
    source = PHI3 if "Phi-3" in repo else PHI4_MINI
    api = HfApi(endpoint=hub.url, token=hub.token_for("alice"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        original = Path(api.hf_hub_download(source, name, local_dir=tmp_path))
        assert (downloaded[repo] / name).read_bytes() == original.read_bytes(), name


def test_rope_keys_at_top_level(downloaded):
    config = json.loads((downloaded[PHI4_MINI_REPO] / "config.json").read_text())
    assert config["partial_rotary_factor"] == 0.75
    assert config["rope_theta"] == 10000.0
    assert config["rope_scaling"]["type"] == "longrope"
    assert config["rope_scaling"]["long_factor"] == config["rope_scaling"]["short_factor"]


def test_rope_parameters_model_matches_transformers(downloaded):
    artifact = _manifest(downloaded[PHI4_MINI_REPO])["artifacts"][0]
    checks = {check["name"]: check["status"] for check in artifact["validation"]["checks"]}
    assert checks["logits match transformers"] == "passed"
    assert checks["greedy continuation"] == "passed"
    assert checks["rope settings"] == "passed"


def test_source_run_of_rope_parameters_model_is_exact(releases):
    _, phi4_mini = releases
    validation = phi4_mini.releases[0].validation
    assert validation["status"] == "passed"
    assert validation["max_abs_diff"] < SOURCE_LOGIT_LIMIT


def test_rope_parameters_card_states_context_limit(downloaded):
    _, body = _card(downloaded[PHI4_MINI_REPO])
    assert "### RoPE settings" in body
    assert "inside `rope_parameters`" in body
    assert "matches the source up to 4096 tokens" in body
    # The drift past that length is measured on the source run, not assumed.
    measured = re.search(
        r"Measured on a 4112-token prompt, the source run in mlx-lm with these factors differs from "
        r"transformers by ([\d.e+-]+) in its largest logit difference, with ([\d.]+)% top-1 agreement", body
    )
    assert measured, body
    assert float(measured.group(1)) > 0.05


def test_long_prompt_measured_not_judged(releases):
    """Past the original context the conversion carries the short factors; the
    check records the difference as skipped, with the reason."""
    _, phi4_mini = releases
    checks = {check["name"]: check for check in phi4_mini.releases[0].validation["checks"]}
    long_check = checks["past the original context"]
    assert long_check["status"] == "skipped"
    assert long_check["detail"].startswith("a 4112-token prompt: max logit difference ")
    assert "uses the short rope factors at every position" in long_check["detail"]


def test_phi3_card_has_no_rope_section(downloaded):
    _, body = _card(downloaded["alice/Phi-3-mini-4k-instruct-mlx-4bit"])
    assert "### RoPE settings" not in body


def test_unnormalised_config_gives_wrong_logits(hub, mlx_toolchain, releases, tmp_path):
    """Control: mlx-lm on the source as published moves the logits far from the normalised run."""
    folder = Path(snapshot_download(PHI4_MINI, endpoint=hub.url, token=hub.token_for("alice"), local_dir=tmp_path / "source"))
    normalised = prepare_input(inspect_folder(folder), tmp_path / "normalised").path

    def evaluate(model_dir: Path, reference_logits: str | None) -> dict:
        request = {
            "op": "evaluate", "model_dir": str(model_dir), "compute_dtype": "float32",
            "out_dir": str(tmp_path / model_dir.name), "eos_ids": [], "max_new_tokens": 1, "stop_prompt": "Hello",
            "prompts": [{"id": "p", "input_ids": [9906, 11, 1495, 374, 264, 3303], "text": "Hello",
                         "reference_logits": reference_logits}],
        }  # fmt: skip
        return toolchains.run_step(mlx_toolchain, "mlx", request).data["prompts"][0]

    raw = evaluate(folder, None)
    comparison = evaluate(normalised, raw["logits_path"])["comparison"]
    assert comparison["max_abs_diff"] > 0.5


def test_token_never_in_output(phi3_mlx_release, downloaded):
    assert ALICE not in phi3_mlx_release.stdout
    assert ALICE not in phi3_mlx_release.stderr
    for folder in downloaded.values():
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix in (".md", ".json"):
                assert ALICE not in path.read_text(), path.name


def test_rerun_same_sha_changes_nothing(hub, alice, releases, tmp_path):
    before = {repo: alice.list_repo_commits(repo) for repo in PHI3_REPOS}
    result = run_cli(["run", PHI3, "--target", "mlx:4bit", "--target", "mlx:bf16", "--push"], hub=hub, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("up to date") == 2
    assert {repo: alice.list_repo_commits(repo) for repo in PHI3_REPOS} == before


def test_bad_target_error(hub, tmp_path):
    result = run_cli(["run", PHI3, "--target", "mlx:7bit"], hub=hub, cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown MLX precision '7bit'" in result.stderr
