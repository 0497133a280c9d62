"""Validation must fail on broken MLX folders, each for the right reason."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hubquant import toolchains
from hubquant.backends import mlx_checks
from hubquant.backends.base import BuildContext
from hubquant.backends.mlx import finalize_folder, parse_precision, prepare_input, source_eos_ids
from hubquant.progress import Reporter
from hubquant.source import inspect_folder, read_safetensors_header

from mlx_helpers import reference_for


@pytest.fixture(scope="module")
def converted(tiny_model, mlx_toolchain, tmp_path_factory):
    """bf16 and 4bit folders of the tiny Phi-3 with everything validation needs."""
    folder = tiny_model("phi-3-mini-4k-instruct")
    work = tmp_path_factory.mktemp("mlx-catch")
    source = inspect_folder(folder)
    context = BuildContext(source=source, reference=reference_for(folder, work), work_dir=work, reporter=Reporter(), max_file_bytes=10**12)
    mlx_input = prepare_input(source, work / "mlx-input")
    source_run = mlx_checks.source_run(context, mlx_toolchain, mlx_input)
    eos_ids = source_eos_ids(folder)
    folders = {}
    for precision in ("bf16", "4bit"):
        fmt = parse_precision(precision)
        out = work / precision
        data = toolchains.run_step(
            mlx_toolchain,
            "mlx",
            {"op": "convert", "source_dir": str(mlx_input.path), "out_dir": str(out),
             "dtype": "bfloat16", "quantization": fmt.quantization()},  # fmt: skip
        ).data
        finalize_folder(out, source, eos_ids)
        folders[precision] = (fmt, out, data)
    return context, mlx_input, source_run, eos_ids, folders


def _failed(converted, mlx_toolchain, precision: str, tamper, tmp_path) -> set[str]:
    context, mlx_input, source_run, eos_ids, folders = converted
    fmt, folder, data = folders[precision]
    copy = tmp_path / precision
    shutil.copytree(folder, copy)
    tamper(copy)
    report, _ = mlx_checks.validate_release(context, mlx_toolchain, copy, fmt, mlx_input, data, source_run, eos_ids)
    return {check.name for check in report.failures}


def _edit_json(path, **changes) -> None:
    document = json.loads(path.read_text())
    document.update(changes)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize("precision", ["bf16", "4bit"])
def test_intact_folder_passes(converted, mlx_toolchain, precision, tmp_path):
    assert _failed(converted, mlx_toolchain, precision, lambda folder: None, tmp_path) == set()


def test_corrupted_weights_fail(converted, mlx_toolchain, tmp_path):
    def corrupt(folder):
        path = folder / "model.safetensors"
        header = read_safetensors_header(path)
        start, end = header["model.layers.0.mlp.down_proj.weight"]["data_offsets"]
        prefix = 8 + int.from_bytes(path.read_bytes()[:8], "little")
        data = bytearray(path.read_bytes())
        noise = np.random.default_rng(0).integers(0, 256, end - start, dtype=np.uint8)
        data[prefix + start : prefix + end] = noise.tobytes()
        path.write_bytes(bytes(data))

    failed = _failed(converted, mlx_toolchain, "bf16", corrupt, tmp_path)
    assert "logits match transformers" in failed


def test_corrupted_quantized_weights_fail(converted, mlx_toolchain, tmp_path):
    def corrupt(folder):
        path = folder / "model.safetensors"
        header = read_safetensors_header(path)
        prefix = 8 + int.from_bytes(path.read_bytes()[:8], "little")
        data = bytearray(path.read_bytes())
        for name in ("model.layers.0.mlp.down_proj.scales", "model.layers.1.mlp.down_proj.scales"):
            start, end = header[name]["data_offsets"]
            data[prefix + start : prefix + end] = np.full((end - start) // 2, 0x4780, dtype=np.uint16).tobytes()
        path.write_bytes(bytes(data))

    failed = _failed(converted, mlx_toolchain, "4bit", corrupt, tmp_path)
    assert "KL divergence to the unquantized conversion" in failed


def test_dropped_eos_ids_fail(converted, mlx_toolchain, tmp_path):
    def drop(folder):
        _edit_json(folder / "config.json", eos_token_id=32000)
        _edit_json(folder / "generation_config.json", eos_token_id=32000)

    failed = _failed(converted, mlx_toolchain, "bf16", drop, tmp_path)
    assert "EOS ids in config" in failed
    assert "every EOS id ends generation" in failed
    assert "generation stops at EOS" in failed


def test_wrong_chat_template_fails(converted, mlx_toolchain, tmp_path):
    def replace(folder):
        _edit_json(folder / "tokenizer_config.json", chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}")

    failed = _failed(converted, mlx_toolchain, "bf16", replace, tmp_path)
    assert "chat template" in failed
    assert "tokenizer agrees with transformers" in failed


def test_wrong_rope_theta_fails(converted, mlx_toolchain, tmp_path):
    failed = _failed(converted, mlx_toolchain, "bf16", lambda folder: _edit_json(folder / "config.json", rope_theta=500000.0), tmp_path)
    assert "rope settings" in failed
    assert "logits match transformers" in failed


def test_wrong_quantization_config_fails(converted, mlx_toolchain, tmp_path):
    def mislabel(folder):
        config = json.loads((folder / "config.json").read_text())
        config["quantization"]["model.layers.0.mlp.down_proj"] = False
        config["quantization_config"] = config["quantization"]
        (folder / "config.json").write_text(json.dumps(config))

    failed = _failed(converted, mlx_toolchain, "4bit", mislabel, tmp_path)
    assert failed == {"loads and runs in mlx-lm"}
