"""Every tiny Phi-family model converts, quantizes and validates; the file keeps
rope factors, chat template and every EOS id. Also fallbacks, splitting and the
F16 range."""

from __future__ import annotations

import json
import logging

import pytest

from hubquant import toolchains
from hubquant.pipeline import JobRequest, run_job

MODELS = [
    "phi-3-mini-128k-instruct",
    "phi-3-mini-128k-instruct-2024-05",
    "phi-3.5-mini-instruct",
    "phi-4-mini-instruct",
    "phi-4",
    "phi-3-mini-4k-instruct-sharded",
    "phi-2",
]


def _local_job(folder, targets, out_dir, **options):
    request = JobRequest(source=str(folder), targets=targets, output_dir=out_dir, **options)
    return run_job(request)


def _manifest(result) -> dict:
    from pathlib import Path

    return json.loads((Path(result.releases[0].url) / "hubquant.json").read_text())


@pytest.mark.parametrize("name", MODELS)
def test_model_converts_and_validates(name, tiny_model, tmp_path):
    folder = tiny_model(name)
    result = _local_job(folder, ["gguf:Q8_0"], tmp_path)
    release = result.releases[0]
    assert release.failed == {}
    checks = {check["name"]: check["status"] for check in release.validation["checks"]}
    assert checks["every EOS id ends generation"] == "passed"
    assert checks["chat template"] == "passed"
    assert checks["logits match transformers"] == "passed"
    assert checks["greedy continuation"] == "passed"
    if "128k" in name or "3.5" in name or "4-mini" in name:
        assert checks["rope long factors"] == "passed"
        assert checks["rope short factors"] == "passed"


def test_phimoe_rejected_before_work(tiny_model, tmp_path):
    from hubquant.errors import SourceError

    folder = tiny_model("phi-tiny-moe-instruct")
    with pytest.raises(SourceError) as raised:
        _local_job(folder, ["gguf:Q8_0"], tmp_path)
    message = str(raised.value)
    # The reason names the routing difference and the ways out.
    assert message.startswith("gguf:Q8_0: llama.cpp b11312 routes PhiMoE's experts")
    assert "sparsemixer" in message
    assert "choose openvino: or mlx: targets for PhiMoEForCausalLM" in message
    assert "Phi3ForCausalLM" in message
    assert not list(tmp_path.rglob("*.gguf"))


def test_fallback_types_reported(tiny_model, tmp_path, caplog):
    folder = tiny_model("phi-3-mini-4k-instruct", intermediate_size=640)
    caplog.set_level(logging.WARNING, logger="hubquant.toolchains.runner")
    result = _local_job(folder, ["gguf:Q4_K_M"], tmp_path)
    assert result.ok
    # The run itself logs it as a warning, not only the card.
    assert any("640" in record.getMessage() and record.levelno == logging.WARNING for record in caplog.records)
    artifact = _manifest(result)["artifacts"][0]
    fallbacks = artifact["facts"]["fallbacks"]
    assert any(item["columns"] == 640 for item in fallbacks)
    assert "640" in result.releases[0].card


def test_large_file_is_split(tiny_model, tmp_path, gguf_toolchain):
    folder = tiny_model("phi-3-mini-4k-instruct")
    result = _local_job(folder, ["gguf:Q8_0"], tmp_path, max_file_bytes=10_000_000)
    release = result.releases[0]
    count = len(release.files)
    assert count >= 2
    assert release.files == [f"{folder.name}-Q8_0-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]
    for name in release.files:
        assert (tmp_path / f"{folder.name}-GGUF" / name).stat().st_size <= 10_000_000, name
    first = tmp_path / f"{folder.name}-GGUF" / release.files[0]
    outcome = toolchains.run_step(
        gguf_toolchain, "gguf", {"op": "forced_stop", "file": str(first), "eos_ids": [32000], "prompt": "Hi"}
    ).data["outcomes"][0]
    assert outcome["finish_reason"] == "stop"
    assert release.files[-1] in release.card


def test_tensor_larger_than_part_limit_fails_target(tiny_model, tmp_path):
    # The Q8_0 output matrix alone is 8.7 MB, and split parts cannot divide a tensor.
    folder = tiny_model("phi-3-mini-4k-instruct")
    result = _local_job(folder, ["gguf:Q8_0"], tmp_path, max_file_bytes=8_000_000)
    release = result.releases[0]
    assert release.files == []
    assert "tensor output.weight takes 8721408 bytes" in release.failed["gguf:Q8_0"]
    assert "cannot split one tensor" in release.failed["gguf:Q8_0"]


def test_bf16_keeps_weight_beyond_f16_range(tiny_model, tmp_path, gguf_toolchain):
    folder = tiny_model("phi-3-mini-4k-instruct", extreme_weight=1e5)
    # The planted weight makes activations huge, so bf16 rounding moves the
    # logits past the comparison limit; force keeps the file for the check.
    result = _local_job(folder, ["gguf:BF16", "gguf:F16"], tmp_path, force=True)
    release = result.releases[0]
    assert "beyond the F16 range" in release.failed["gguf:F16"]
    path = tmp_path / f"{folder.name}-GGUF" / f"{folder.name}-BF16.gguf"
    peak = toolchains.run_step(gguf_toolchain, "gguf", {"op": "max_abs", "file": str(path)}).data["max_abs"]
    assert peak == pytest.approx(99840.0)


def test_local_card_has_no_base_model(tiny_model, tmp_path):
    folder = tiny_model("phi-3-mini-4k-instruct")
    result = _local_job(folder, ["gguf:Q8_0"], tmp_path)
    card = result.releases[0].card
    assert "base_model:" not in card.split("---")[1]
    assert "no Hub identity" in card


def test_local_card_with_declared_base_model(tiny_model, tmp_path):
    folder = tiny_model("phi-3-mini-4k-instruct")
    result = _local_job(folder, ["gguf:Q8_0"], tmp_path, base_model="microsoft/Phi-3-mini-4k-instruct")
    header = result.releases[0].card.split("---")[1]
    assert "base_model: microsoft/Phi-3-mini-4k-instruct" in header
