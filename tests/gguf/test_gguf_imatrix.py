"""Importance matrices: the lowest-bit GGUF types, K-quants with a matrix, and
the calibration text they come from. The release is built once from the tiny
Phi-3 on the local Hub and checked by every test here."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from huggingface_hub import snapshot_download

from hubquant import toolchains
from hubquant.backends.gguf_imatrix import check_coverage, matrix_weights
from hubquant.calibration import CalibrationOptions
from hubquant.cards import validate_card_metadata
from hubquant.errors import SourceError

from gguf_helpers import run_cli

REPO = "alice/Phi-3-mini-imatrix-GGUF"
MATRIX = "Phi-3-mini-4k-instruct.imatrix.gguf"
LOW_BIT = ["IQ2_XXS", "IQ1_S"]
K_QUANT = "Phi-3-mini-4k-instruct-Q4_K_M-imatrix-output-Q8_0.gguf"


@pytest.fixture(scope="module")
def imatrix_release(hub, phi3_source, tmp_path_factory) -> subprocess.CompletedProcess:
    workdir = tmp_path_factory.mktemp("imatrix-release")
    return run_cli(
        ["run", "microsoft/Phi-3-mini-4k-instruct", "--repo-name", "Phi-3-mini-imatrix", "--push",
         "--target", "gguf:IQ2_XXS", "--target", "gguf:IQ1_S", "--target", "gguf:Q4_K_M:imatrix,output=Q8_0"],
        hub=hub, cwd=workdir,
    )  # fmt: skip


@pytest.fixture(scope="module")
def downloaded(imatrix_release, hub, tmp_path_factory) -> Path:
    assert imatrix_release.returncode == 0, imatrix_release.stderr[-3000:]
    return Path(snapshot_download(REPO, endpoint=hub.url, token=hub.token_for("alice"), local_dir=tmp_path_factory.mktemp("dl")))


@pytest.fixture(scope="module")
def manifest(downloaded) -> dict:
    return json.loads((downloaded / "hubquant.json").read_text())


def _card(downloaded: Path) -> tuple[dict, str]:
    _, header, body = (downloaded / "README.md").read_text().split("---", 2)
    return yaml.safe_load(header), body


def test_release_holds_matrix_and_files(downloaded):
    for type_name in LOW_BIT:
        assert (downloaded / f"Phi-3-mini-4k-instruct-{type_name}.gguf").is_file(), type_name
    assert (downloaded / K_QUANT).is_file()
    assert (downloaded / MATRIX).is_file()


@pytest.mark.parametrize("type_name", LOW_BIT)
def test_low_bit_file_loads_and_generates(downloaded, gguf_toolchain, type_name, tmp_path):
    path = downloaded / f"Phi-3-mini-4k-instruct-{type_name}.gguf"
    described = toolchains.run_step(gguf_toolchain, "gguf", {"op": "inspect", "file": str(path)}).data
    assert type_name in described["tensor_types"]
    # "<s> Hello world" in the Phi-3 vocabulary, then 8 greedy tokens.
    evaluation = toolchains.run_step(
        gguf_toolchain, "gguf",
        {"op": "evaluate", "file": str(path), "max_new_tokens": 8, "out_dir": str(tmp_path), "eos_ids": [32000],
         "prompts": [{"id": "hello", "text": None, "input_ids": [1, 15043, 3186], "reference_logits": None, "continuation": []}]},
    ).data  # fmt: skip
    prompt = evaluation["prompts"][0]
    assert len(prompt["continuation"]["tokens"]) >= 1
    logits = np.load(prompt["logits_path"])
    assert logits.shape == (3, evaluation["n_vocab"])
    assert np.isfinite(logits).all()


def test_files_record_matrix(downloaded, gguf_toolchain):
    for name in [K_QUANT, *(f"Phi-3-mini-4k-instruct-{t}.gguf" for t in LOW_BIT)]:
        metadata = toolchains.run_step(gguf_toolchain, "gguf", {"op": "inspect", "file": str(downloaded / name)}).data["metadata"]
        assert metadata["quantize.imatrix.file"] == MATRIX, name
        assert metadata["quantize.imatrix.chunks_count"] >= CalibrationOptions().min_chunks, name
        assert metadata["quantize.imatrix.dataset"] == "hubquant-calibration-v1", name


def test_output_tensor_type_applied(downloaded, gguf_toolchain):
    tensors = toolchains.run_step(gguf_toolchain, "gguf", {"op": "inspect", "file": str(downloaded / K_QUANT)}).data["tensors"]
    types = {tensor["name"]: tensor["type"] for tensor in tensors}
    assert types["output.weight"] == "Q8_0"
    assert types["blk.0.ffn_up.weight"] == "Q4_K"


def test_matrix_file_format(downloaded, gguf_toolchain):
    summary = toolchains.run_step(gguf_toolchain, "gguf", {"op": "read_imatrix", "file": str(downloaded / MATRIX)}).data
    tensors = toolchains.run_step(gguf_toolchain, "gguf", {"op": "inspect", "file": str(downloaded / K_QUANT)}).data["tensors"]
    assert summary["chunk_size"] == 512
    assert summary["datasets"] == ["hubquant-calibration-v1"]
    assert sorted(summary["entries"]) == matrix_weights(tensors)
    for name, rows in summary["entries"].items():
        assert rows == summary["chunk_count"] * summary["chunk_size"], name
    header = toolchains.run_step(gguf_toolchain, "gguf", {"op": "inspect", "file": str(downloaded / MATRIX)}).data["metadata"]
    assert header["general.type"] == "imatrix"
    assert "general.architecture" not in header


def test_manifest_records_matrix(manifest):
    by_target = {entry["target"]: entry for entry in manifest["artifacts"]}
    assert sorted(by_target) == ["gguf:IQ1_S", "gguf:IQ2_XXS", "gguf:Q4_K_M:imatrix,output=Q8_0"]
    for entry in by_target.values():
        assert entry["shared_files"] == [MATRIX]
        assert entry["facts"]["imatrix"]["file"] == MATRIX
        assert entry["facts"]["imatrix"]["calibration"]["license"] == "cc0-1.0"


def test_data_free_comparison_measured(manifest):
    by_target = {entry["target"]: entry for entry in manifest["artifacts"]}
    data_free = by_target["gguf:Q4_K_M:imatrix,output=Q8_0"]["facts"]["data_free"]
    assert data_free["target"] == "gguf:Q4_K_M:output=Q8_0"
    assert data_free["kl_mean"] > 0
    assert 0 <= data_free["top1_agreement"] <= 1
    # The matrix changes the quantized weights, so the two files measure differently.
    assert data_free["kl_mean"] != by_target["gguf:Q4_K_M:imatrix,output=Q8_0"]["validation"]["kl_mean"]
    assert by_target["gguf:IQ1_S"]["facts"]["data_free"] is None


def test_card_describes_calibration(downloaded, manifest):
    metadata, body = _card(downloaded)
    imatrix = manifest["artifacts"][0]["facts"]["imatrix"]
    assert validate_card_metadata((downloaded / "README.md").read_text()) == []
    for tag in ("iq2_xxs", "iq1_s", "q4_k_m-imatrix-output-q8_0"):
        assert tag in metadata["tags"], tag
    assert "## Importance matrix and calibration data" in body
    assert f"over {imatrix['chunks']} chunks of 512 tokens" in body
    assert imatrix["calibration"]["sha256"] in body
    assert "License of the text: cc0-1.0" in body
    assert "Phi-3-mini-4k-instruct-IQ1\\_S.gguf has no data-free counterpart" in body
    assert "| Phi-3-mini-4k-instruct-Q4\\_K\\_M-imatrix-output-Q8\\_0.gguf |" in body
    assert "the output tensor is stored as Q8\\_0" in body


def test_truncated_matrix_rejected(tiny_model, tmp_path):
    from hubquant.pipeline import JobRequest, run_job

    folder = tiny_model("phi-3-mini-4k-instruct")
    request = JobRequest(
        source=str(folder), targets=["gguf:IQ2_XXS", "gguf:Q8_0"], output_dir=tmp_path / "out",
        calibration_options=CalibrationOptions(max_chunks=2),
    )  # fmt: skip
    result = run_job(request)
    release = result.releases[0]
    assert "below the minimum of 8" in release.failed["gguf:IQ2_XXS"]
    assert "covers 2 chunks" in release.failed["gguf:IQ2_XXS"]
    staged = sorted(path.name for path in (tmp_path / "out").rglob("*.gguf"))
    assert staged == [f"{folder.name}-Q8_0.gguf"]


def test_matrix_missing_weight_rejected():
    tensors = [{"name": "blk.0.attn_qkv.weight", "shape": [256, 768]}, {"name": "blk.0.ffn_down.weight", "shape": [768, 256]},
               {"name": "blk.0.attn_norm.weight", "shape": [256]}, {"name": "token_embd.weight", "shape": [256, 32064]}]  # fmt: skip
    summary = {"chunk_count": 8, "chunk_size": 512, "entries": {"blk.0.attn_qkv.weight": 4096.0}}
    with pytest.raises(SourceError, match=r"no data for 1 weights \(blk.0.ffn_down.weight\)"):
        check_coverage(summary, tensors, CalibrationOptions())


def test_matrix_short_rows_rejected():
    tensors = [{"name": "blk.0.attn_qkv.weight", "shape": [256, 768]}]
    summary = {"chunk_count": 8, "chunk_size": 512, "entries": {"blk.0.attn_qkv.weight": 1024.0}}
    with pytest.raises(SourceError, match="saw 1024 token rows"):
        check_coverage(summary, tensors, CalibrationOptions())


def test_complete_matrix_accepted():
    tensors = [{"name": "blk.0.attn_qkv.weight", "shape": [256, 768]}, {"name": "blk.0.attn_norm.weight", "shape": [256]}]
    summary = {"chunk_count": 8, "chunk_size": 512, "entries": {"blk.0.attn_qkv.weight": 4096.0}}
    check_coverage(summary, tensors, CalibrationOptions())
