"""The main job as a user runs it: a tiny Phi-3.5-mini on the local Hub is
exported to OpenVINO int4 and fp16, validated and pushed, one repo per
precision, and a fresh download runs in openvino-genai."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from huggingface_hub import snapshot_download

from hubquant import toolchains
from hubquant.backends.openvino import REQUIRED_FILES
from hubquant.cards import validate_card_metadata
from hubquant.paths import cache_home
from hubquant.tinymodels import publish_tiny_model

from openvino_helpers import ALICE, check_statuses, run_cli

SOURCE = "microsoft/Phi-3.5-mini-instruct"
INT4_REPO = "alice/Phi-3.5-mini-instruct-int4-ov"
FP16_REPO = "alice/Phi-3.5-mini-instruct-fp16-ov"
EOS_IDS = [32000, 32001, 32007]


@pytest.fixture(scope="module")
def source_sha(ov_alice, tiny_model) -> str:
    # Phi-3.5-mini's tiny model keeps its chat template only in chat_template.jinja.
    return publish_tiny_model(ov_alice, "phi-3.5-mini-instruct", repo_id=SOURCE, cache=tiny_model)


@pytest.fixture(scope="module")
def user_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("user-home")


@pytest.fixture(scope="module")
def job(ov_hub, source_sha, user_home, tmp_path_factory):
    """The CLI run, with HOME pointing at an empty folder to see what lands there."""
    result = run_cli(
        ["run", SOURCE, "--target", "openvino:int4", "--target", "openvino:fp16", "--push"],
        hub=ov_hub,
        cwd=tmp_path_factory.mktemp("cwd"),
        extra_env={"HOME": str(user_home), "HUBQUANT_HOME": str(cache_home())},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def downloads(job, ov_hub, tmp_path_factory) -> dict[str, Path]:
    return {
        repo: Path(snapshot_download(repo, endpoint=ov_hub.url, token=ov_hub.token_for("alice"), local_dir=tmp_path_factory.mktemp("dl")))
        for repo in (INT4_REPO, FP16_REPO)
    }


def _card(folder: Path) -> tuple[dict, str]:
    _, header, body = (folder / "README.md").read_text().split("---", 2)
    return yaml.safe_load(header), body


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "hubquant.json").read_text())


@pytest.mark.parametrize("repo", [INT4_REPO, FP16_REPO])
def test_release_has_every_file(downloads, repo):
    names = {path.name for path in downloads[repo].iterdir() if path.is_file()}
    for name in (*REQUIRED_FILES, "chat_template.jinja", "README.md", "hubquant.json", "LICENSE"):
        assert name in names, name
    # optimum-intel's openvino_config.json loses the compression settings.
    assert "openvino_config.json" not in names


def test_both_releases_published(job):
    assert job.stdout.count("published: ") == 2
    assert INT4_REPO in job.stdout
    assert FP16_REPO in job.stdout


@pytest.mark.parametrize("repo", [INT4_REPO, FP16_REPO])
def test_release_is_one_commit(ov_alice, job, repo, source_sha):
    commits = [commit for commit in ov_alice.list_repo_commits(repo) if commit.title != "initial commit"]
    assert len(commits) == 1
    assert source_sha in commits[0].title + commits[0].message


@pytest.mark.parametrize("repo", [INT4_REPO, FP16_REPO])
def test_release_runs_after_download(downloads, openvino_toolchain, repo):
    outcome = toolchains.run_step(
        openvino_toolchain,
        "openvino",
        {"op": "generate", "folder": str(downloads[repo]), "prompt": "The capital of France is", "max_new_tokens": 8},
    ).data
    assert outcome["tokens"], outcome


@pytest.mark.parametrize("repo", [INT4_REPO, FP16_REPO])
def test_validation_passed(downloads, repo):
    artifact = _manifest(downloads[repo])["artifacts"][0]
    assert artifact["validation"]["status"] == "passed"
    statuses = check_statuses(artifact["validation"])
    for name in (
        "release files",
        "weight format",
        "compression settings in the IR",
        "rope long factors",
        "rope short factors",
        "past the original context",
        "OpenVINO tokenizer agrees with transformers",
        "chat template (HF tokenizer)",
        "chat template (OpenVINO tokenizer)",
        "generation stops at EOS (optimum-intel)",
        "generation stops at EOS (openvino-genai)",
        "openvino-genai agrees with optimum-intel",
    ):
        assert statuses[name] == "passed", name


def test_fp16_checked_against_transformers(downloads):
    statuses = check_statuses(_manifest(downloads[FP16_REPO])["artifacts"][0]["validation"])
    assert statuses["logits match transformers"] == "passed"
    assert statuses["greedy continuation in optimum-intel"] == "passed"
    assert statuses["greedy continuation in openvino-genai"] == "passed"


def test_int4_checked_against_unquantized(downloads):
    validation = _manifest(downloads[INT4_REPO])["artifacts"][0]["validation"]
    assert check_statuses(validation)["KL divergence to the unquantized IR"] == "passed"
    assert validation["kl_mean"] > 0


def test_int4_uses_cookbook_recipe(downloads, openvino_toolchain):
    described = toolchains.run_step(openvino_toolchain, "openvino", {"op": "inspect", "folder": str(downloads[INT4_REPO])}).data
    rt_info = described["rt_info"]
    assert rt_info["nncf.weight_compression.mode"] == "int4_sym"
    assert rt_info["nncf.weight_compression.group_size"] == "128"
    assert rt_info["nncf.weight_compression.ratio"] == "0.6"
    assert rt_info["nncf.weight_compression.backup_mode"] == "int8_asym"


def test_fp16_weights_stay_fp16(downloads):
    facts = _manifest(downloads[FP16_REPO])["artifacts"][0]["facts"]
    assert set(facts["weight_formats"]) == {"fp16"}
    assert facts["weight_compression"] == {}


def test_card_metadata(downloads):
    metadata, _ = _card(downloads[INT4_REPO])
    assert metadata["base_model"] == SOURCE
    assert metadata["base_model_relation"] == "quantized"
    assert metadata["library_name"] == "openvino"
    assert metadata["license"] == "mit"
    for tag in ("openvino", "nncf", "optimum-intel", "quantized", "int4"):
        assert tag in metadata["tags"], tag
    assert "quantized" not in _card(downloads[FP16_REPO])[0]["tags"]


@pytest.mark.parametrize("repo", [INT4_REPO, FP16_REPO])
def test_card_passes_hub_metadata_check(downloads, repo):
    assert validate_card_metadata((downloads[repo] / "README.md").read_text()) == []


def test_card_states_ir_settings(downloads):
    _, body = _card(downloads[INT4_REPO])
    assert "| Mode | `int4_sym` |" in body
    assert "| Group size | `128` | Phi Cookbook" in body
    assert "| Ratio (share of layers in 4-bit) | `0.6` | Phi Cookbook" in body
    assert "PhiCookBook" in body
    assert "--group-size 128 --ratio 0.6 --backup-precision int8_asym --group-size-fallback adjust --sym" in body


def test_card_names_hardware(downloads):
    _, body = _card(downloads[INT4_REPO])
    for device in ("| CPU |", "| GPU |", "| NPU |"):
        assert device in body
    assert "This release suits the NPU" in body
    _, fp16_body = _card(downloads[FP16_REPO])
    assert "This fp16 release is not in the NPU's preferred format" in fp16_body


def test_card_has_run_instructions(downloads):
    _, body = _card(downloads[INT4_REPO])
    assert 'openvino_genai.LLMPipeline(path, "CPU")' in body
    assert f'OVModelForCausalLM.from_pretrained("{INT4_REPO}"' in body


def test_card_has_versions_and_validation(downloads):
    _, body = _card(downloads[INT4_REPO])
    assert "| optimum-intel | 2.2.0 |" in body
    assert "| nncf | 3.4.0 |" in body
    assert "`INFERENCE_PRECISION_HINT=f32`" in body
    assert "KL mean" in body


def test_card_has_prompt_format(downloads):
    _, body = _card(downloads[FP16_REPO])
    assert "<|user|>" in body
    for token in EOS_IDS:
        assert f"(id {token})" in body


def test_home_untouched(job, user_home):
    # Toolchain steps get a scratch HOME, so OpenVINO's ~/intel never appears.
    assert sorted(path.name for path in user_home.iterdir()) == []


def test_telemetry_declined(openvino_toolchain):
    status = toolchains.run_step(openvino_toolchain, "openvino", {"op": "telemetry_status"}).data
    assert status["in_ci"] == "DECLINED"
    assert status["without_ci_switch"] == "DECLINED"
    assert status["consent_file"].startswith(status["home"])


def test_token_never_in_output(job, downloads):
    assert ALICE not in job.stdout
    assert ALICE not in job.stderr
    for folder in downloads.values():
        for path in folder.glob("*.json"):
            assert ALICE not in path.read_text(), path.name


def test_rerun_same_sha_changes_nothing(ov_hub, ov_alice, job, tmp_path):
    before = {repo: ov_alice.list_repo_commits(repo) for repo in (INT4_REPO, FP16_REPO)}
    result = run_cli(["run", SOURCE, "--target", "openvino:int4", "--target", "openvino:fp16", "--push"], hub=ov_hub, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("up to date") == 2
    assert {repo: ov_alice.list_repo_commits(repo) for repo in before} == before


def test_card_versions_come_from_ir(downloads, openvino_toolchain):
    described = toolchains.run_step(openvino_toolchain, "openvino", {"op": "inspect", "folder": str(downloads[INT4_REPO])}).data
    rt_info = described["rt_info"]
    _, body = _card(downloads[INT4_REPO])
    line = next(line for line in body.splitlines() if line.startswith("Versions recorded in the IR's runtime info:"))
    assert f"NNCF `{rt_info['nncf.version']}`" in line
    assert f"optimum-intel `{rt_info['optimum.optimum_intel_version']}`" in line
    assert f"transformers `{rt_info['optimum.transformers_version']}`" in line
    assert "none." not in line


def test_other_variant_replaces_only_on_request(ov_hub, ov_alice, job, downloads, tmp_path):
    """An int4 repo contains one variant, whose files keep their names. Another
    group size is rejected before any work, and replaces it with --update-existing."""
    commits = len(ov_alice.list_repo_commits(INT4_REPO))
    existing = _manifest(downloads[INT4_REPO])["targets"]
    command = ["run", SOURCE, "--target", "openvino:int4:group-size=64", "--push"]

    rejected = run_cli(command, hub=ov_hub, cwd=tmp_path)
    assert rejected.returncode != 0
    assert f"{INT4_REPO} contains {existing[0]}, and this run builds openvino:int4:" in rejected.stderr
    assert "pass --update-existing to replace it, or --repo-name" in rejected.stderr
    assert "converting" not in rejected.stderr
    assert len(ov_alice.list_repo_commits(INT4_REPO)) == commits

    replaced = run_cli([*command, "--update-existing"], hub=ov_hub, cwd=tmp_path)
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    folder = Path(snapshot_download(INT4_REPO, endpoint=ov_hub.url, token=ov_hub.token_for("alice"), local_dir=tmp_path / "after"))
    manifest = _manifest(folder)
    assert len(manifest["targets"]) == 1
    assert manifest["targets"] != existing
    assert "group-size=64" in manifest["targets"][0]
    assert [entry["target"] for entry in manifest["artifacts"]] == manifest["targets"]
    assert len(ov_alice.list_repo_commits(INT4_REPO)) == commits + 1


def test_card_states_what_runs_past_the_original_context(downloads, openvino_toolchain):
    """Phi-3.5-mini uses LongRoPE: its releases were run past the original
    context, and the card's word on optimum-intel matches what a user gets when
    generating from a 4112-token prompt with the release."""
    import subprocess

    from hubquant.toolchains.runner import worker_environment

    folder = downloads[INT4_REPO]
    statuses = check_statuses(_manifest(folder)["artifacts"][0]["validation"])
    assert statuses["past the original context"] == "passed"
    assert statuses["openvino-genai past the original context"] == "passed"
    script = (
        "import sys, torch\n"
        "from optimum.intel import OVModelForCausalLM\n"
        "model = OVModelForCausalLM.from_pretrained(sys.argv[1])\n"
        "ids = torch.tensor([[450 + i % 7 for i in range(4112)]])\n"
        "try:\n"
        "    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False, pad_token_id=0)\n"
        "    print('generated')\n"
        "except Exception as error:\n"
        "    print(type(error).__name__)\n"
    )
    run = subprocess.run(
        [str(openvino_toolchain.python), "-c", script, str(folder)],
        capture_output=True, text=True, env=worker_environment(folder.parent / "home"), timeout=600,
    )
    outcome = run.stdout.strip().splitlines()[-1]
    _, body = _card(folder)
    section = body.split("### Past the original context", 1)[1].split("###", 1)[0]
    assert "short rope factors apply up to 4096 tokens" in section
    if outcome == "generated":
        assert "generated from that prompt" in section
    else:
        assert "optimum-intel cannot generate from prompts that long" in section
        assert f"failed with `{outcome}" in section
