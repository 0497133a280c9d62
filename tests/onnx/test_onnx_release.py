"""The main job as a new user runs it: a tiny Phi-3 on the local Hub is built as
int4 and fp32 for the CPU and fp16 for CUDA, validated, and pushed as one repo
with one folder per variant."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from hubquant import toolchains
from hubquant.cards import validate_card_metadata

from onnx_helpers import ALICE, PHI3, RELEASE_REPO, checks_of, run_cli

REPO = RELEASE_REPO
INT4 = "cpu-int4-rtn-block-32-acc-level-4"
FOLDERS = [INT4, "cpu-fp32", "cuda-fp16"]
FOLDER_FILES = ["chat_template.jinja", "genai_config.json", "model.onnx", "model.onnx.data", "tokenizer.json", "tokenizer_config.json"]


@pytest.fixture(scope="module")
def downloaded(phi3_onnx_download) -> Path:
    return phi3_onnx_download


@pytest.fixture(scope="module")
def manifest(downloaded) -> dict:
    return json.loads((downloaded / "hubquant.json").read_text())


def _artifact(manifest: dict, folder: str) -> dict:
    return next(entry for entry in manifest["artifacts"] if entry["facts"]["folder"] == folder)


def _card(downloaded: Path) -> tuple[dict, str]:
    _, header, body = (downloaded / "README.md").read_text().split("---", 2)
    return yaml.safe_load(header), body


def test_every_folder_is_complete(downloaded):
    for folder in FOLDERS:
        for name in FOLDER_FILES:
            assert (downloaded / folder / name).is_file(), f"{folder}/{name}"


def test_release_has_one_commit(alice, phi3_onnx_release):
    commits = [commit for commit in alice.list_repo_commits(REPO) if commit.title != "initial commit"]
    assert len(commits) == 1


def test_manifest_targets(manifest, phi3_onnx_source):
    assert manifest["targets"] == ["onnx:cpu-fp32", f"onnx:{INT4}", "onnx:cuda-fp16"]
    assert manifest["source"] == {"id": PHI3, "sha": phi3_onnx_source, "local": False}
    assert manifest["backend"] == "onnx"
    assert manifest["tool_versions"]["onnxruntime-genai"] == "0.18.0"


def test_cpu_variants_validate(manifest):
    for folder in (INT4, "cpu-fp32"):
        validation = _artifact(manifest, folder)["validation"]
        assert validation["status"] == "passed", folder
        checks = checks_of(validation)
        assert checks["generation stops at EOS"] == "passed", folder
        assert checks["tokenizer agrees with transformers"] == "passed", folder
        assert checks["chat template renders as in transformers"] == "passed", folder


def test_fp32_matches_transformers(manifest):
    checks = checks_of(_artifact(manifest, "cpu-fp32")["validation"])
    assert checks["logits match transformers"] == "passed"
    assert checks["greedy continuation"] == "passed"


def test_int4_compared_with_fp32(manifest):
    validation = _artifact(manifest, INT4)["validation"]
    checks = checks_of(validation)
    assert checks["KL divergence to the fp32 variant"] == "passed"
    assert validation["kl_mean"] > 0


def test_cuda_variant_checked_structurally(manifest):
    checks = checks_of(_artifact(manifest, "cuda-fp16")["validation"])
    assert checks["runs in onnxruntime-genai"] == "skipped"
    assert checks["operators implemented by the CUDA execution provider"] == "passed"
    assert checks["genai_config.json provider"] == "passed"
    assert checks["input and output types"] == "passed"
    assert checks["genai_config.json EOS ids"] == "passed"


def test_int4_facts_from_graph(manifest):
    facts = _artifact(manifest, INT4)["facts"]
    quantization = facts["quantization"]
    assert quantization["bits"] == [4]
    assert quantization["block_size"] == 32
    assert quantization["accuracy_level"] == 4
    assert quantization["symmetric"] is True
    assert quantization["lm_head_bits"] == 4
    assert quantization["embeddings"] == "float"
    assert quantization["matrices"] == {"attn/qkv_proj": 2, "attn/o_proj": 2, "mlp/gate_proj": 2, "mlp/up_proj": 2, "mlp/down_proj": 2, "lm_head": 1}
    assert facts["shared_embeddings"] is False
    assert facts["producer"].startswith("onnxruntime-genai 0.18.0")
    assert facts["opsets"]["ai.onnx"] >= 17


def test_sizes_are_measured(manifest, downloaded):
    for entry in manifest["artifacts"]:
        folder = entry["facts"]["folder"]
        on_disk = sum(path.stat().st_size for path in (downloaded / folder).iterdir())
        assert entry["size_bytes"] == on_disk, folder
    fp32 = _artifact(manifest, "cpu-fp32")["bits_per_weight"]
    assert fp32 == pytest.approx(32.0)
    assert _artifact(manifest, "cuda-fp16")["bits_per_weight"] == pytest.approx(16.0)
    assert _artifact(manifest, INT4)["bits_per_weight"] < fp32


def test_card_passes_hub_metadata_check(downloaded):
    assert validate_card_metadata((downloaded / "README.md").read_text()) == []


def test_card_metadata(downloaded):
    metadata, _ = _card(downloaded)
    assert metadata["base_model"] == PHI3
    assert metadata["base_model_relation"] == "quantized"
    assert metadata["library_name"] == "onnx"
    for tag in ("onnx", "onnxruntime-genai", "cpu", "cuda", "int4", "fp16", "nvidia-gpu", "any-cpu"):
        assert tag in metadata["tags"], tag
    assert "transformers" not in metadata["tags"]


def test_card_says_cuda_not_run(downloaded):
    _, body = _card(downloaded)
    assert "**Not run:** cuda-fp16 was built for CUDA" in body
    assert "pip install onnxruntime-genai-cuda" in body


def test_card_lists_quantization_facts(downloaded, manifest):
    _, body = _card(downloaded)
    row = next(line for line in body.splitlines() if line.startswith(f"| {INT4} | 4 |"))
    assert "| 32 | yes | 4 |" in row
    assert "lm\\_head (1)" in row
    for entry in manifest["artifacts"]:
        assert f"{entry['bits_per_weight']:.2f}" in body, entry["target"]
    assert "onnxruntime-genai 0.18.0+" in body


def test_card_lists_graph_versions(downloaded, manifest):
    _, body = _card(downloaded)
    for entry in manifest["artifacts"]:
        facts = entry["facts"]
        row = next(line for line in body.splitlines() if line.startswith(f"| {facts['folder']} | ") and "ai.onnx" in line)
        assert f"| ai.onnx {facts['opsets']['ai.onnx']}, com.microsoft {facts['opsets']['com.microsoft']} |" in row, row
        assert f"| {facts['ir_version']} |" in row, row
        assert f"| {facts['producer']} |" in row, row


def test_card_names_source_sha(downloaded, phi3_onnx_source):
    _, body = _card(downloaded)
    assert phi3_onnx_source in body


def test_downloaded_variants_run(downloaded, onnx_toolchain, tmp_path):
    """A fresh download of each CPU folder runs and stops at an EOS id."""
    for folder in (INT4, "cpu-fp32"):
        result = toolchains.run_step(
            onnx_toolchain,
            "onnx",
            {
                "op": "evaluate",
                "folder": str(downloaded / folder),
                "prompts": [{"id": "p", "text": "Hello", "input_ids": [15043], "reference_logits": None, "messages": None}],
                "eos_ids": [32000, 32007],
                "max_new_tokens": 4,
                "out_dir": str(tmp_path / folder),
            },
        ).data
        assert len(result["prompts"][0]["continuation"]["tokens"]) == 4, folder
        assert all(stop["done"] for stop in result["stops"]), folder


def test_downloaded_cuda_variant_describes(downloaded, onnx_toolchain):
    described = toolchains.run_step(onnx_toolchain, "onnx", {"op": "describe", "folder": str(downloaded / "cuda-fp16")}).data
    assert described["checker_error"] is None
    assert described["genai_config"]["providers"] == ["cuda"]


def test_card_example_runs(downloaded, onnx_toolchain, tmp_path):
    """The card's Python example, with the download replaced by the local copy."""
    _, body = _card(downloaded)
    code = re.search(r"```python\n(.*?)```", body, re.S).group(1)
    code = code.replace("params.set_search_options(max_length=256)", "params.set_search_options(max_length=40)")
    download_line = next(line for line in code.splitlines() if "snapshot_download(" in line and "import" not in line)
    code = code.replace(download_line, f"root = {str(downloaded)!r}")
    script = tmp_path / "example.py"
    script.write_text(code)
    result = subprocess.run([str(onnx_toolchain.python), str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_rerun_same_sha_changes_nothing(hub, alice, phi3_onnx_release, downloaded, tmp_path):
    before = alice.list_repo_commits(REPO)
    result = run_cli(["run", PHI3, "--target", "onnx:int4", "--target", "onnx:cuda-fp16", "--push"], hub=hub, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "up to date" in result.stdout
    assert alice.list_repo_commits(REPO) == before


def test_token_never_in_output(phi3_onnx_release, downloaded):
    assert ALICE not in phi3_onnx_release.stdout
    assert ALICE not in phi3_onnx_release.stderr
    for path in downloaded.rglob("*"):
        if path.is_file() and path.suffix in (".md", ".json", ".jinja"):
            assert ALICE not in path.read_text(), path.name

