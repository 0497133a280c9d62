"""The config.json handed to mlx-lm and the published folder, without running mlx-lm."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hubquant.backends.mlx import (
    describe_tensors,
    finalize_folder,
    normalise_config,
    parse_precision,
    prepare_input,
    quantized_float_dtype,
    source_eos_ids,
    summarise_layers,
)
from hubquant.errors import SourceError
from hubquant.source import inspect_folder

from mlx_helpers import move_rope_keys


def _config(tiny_model, name: str, *, moved: bool, tmp_path) -> dict:
    folder = tiny_model(name)
    config = json.loads((folder / "config.json").read_text())
    if not moved:
        return config
    (tmp_path / "config.json").write_text(json.dumps(config))
    move_rope_keys(tmp_path)
    return json.loads((tmp_path / "config.json").read_text())


def test_nested_rope_keys_hoisted(tiny_model, tmp_path):
    original = _config(tiny_model, "phi-4-mini-instruct", moved=False, tmp_path=tmp_path)
    moved = _config(tiny_model, "phi-4-mini-instruct", moved=True, tmp_path=tmp_path)
    assert "rope_scaling" not in moved
    config, facts = normalise_config(moved, "Phi3ForCausalLM")
    assert config["rope_theta"] == original["rope_theta"]
    assert config["partial_rotary_factor"] == 0.75
    assert config["original_max_position_embeddings"] == 4096
    assert config["rope_scaling"]["type"] == "longrope"
    assert config["rope_scaling"]["short_factor"] == original["rope_scaling"]["short_factor"]
    assert set(facts["hoisted"]) == {"rope_theta", "partial_rotary_factor", "original_max_position_embeddings", "rope_scaling"}


def test_rope_theta_of_phi4_hoisted(tiny_model, tmp_path):
    moved = _config(tiny_model, "phi-4", moved=True, tmp_path=tmp_path)
    config, facts = normalise_config(moved, "Phi3ForCausalLM")
    assert config["rope_theta"] == 250000
    assert config["rope_scaling"] is None
    assert facts["type"] == "default"
    assert facts["context_limit"] is None


def test_partial_rotary_of_phi2_hoisted(tiny_model, tmp_path):
    moved = _config(tiny_model, "phi-2", moved=True, tmp_path=tmp_path)
    config, _ = normalise_config(moved, "PhiForCausalLM")
    assert config["partial_rotary_factor"] == 0.5


def test_top_level_config_unchanged(tiny_model, tmp_path):
    original = _config(tiny_model, "phi-3-mini-4k-instruct", moved=False, tmp_path=tmp_path)
    config, facts = normalise_config(original, "Phi3ForCausalLM")
    assert config == original
    assert facts == {"hoisted": [], "type": "default", "context_limit": None}


def test_longrope_uses_short_factors(tiny_model, tmp_path):
    original = _config(tiny_model, "phi-3-mini-128k-instruct", moved=False, tmp_path=tmp_path)
    assert original["rope_scaling"]["long_factor"] != original["rope_scaling"]["short_factor"]
    config, facts = normalise_config(original, "Phi3ForCausalLM")
    assert config["rope_scaling"]["long_factor"] == original["rope_scaling"]["short_factor"]
    assert facts["context_limit"] == 4096
    assert original["rope_scaling"]["long_factor"] != config["rope_scaling"]["long_factor"]


def test_longrope_nested_copy_kept_consistent(tiny_model, tmp_path):
    moved = _config(tiny_model, "phi-4-mini-instruct", moved=True, tmp_path=tmp_path)
    config, _ = normalise_config(moved, "Phi3ForCausalLM")
    assert config["rope_parameters"]["long_factor"] == config["rope_parameters"]["short_factor"]
    assert moved["rope_parameters"]["long_factor"] != moved["rope_parameters"]["short_factor"]


def test_phimoe_longrope_copies_short_mscale():
    scaling = {"type": "longrope", "long_factor": [2.0], "short_factor": [1.0], "short_mscale": 1.2, "long_mscale": 1.4}
    config, facts = normalise_config({"rope_scaling": scaling, "original_max_position_embeddings": 4096}, "PhiMoEForCausalLM")
    assert config["rope_scaling"]["long_mscale"] == 1.2
    assert facts["context_limit"] == 4096


def test_linear_factor_made_float():
    config, facts = normalise_config({"rope_scaling": {"type": "linear", "factor": 2}}, "Phi3ForCausalLM")
    assert config["rope_scaling"]["factor"] == 2.0
    assert isinstance(config["rope_scaling"]["factor"], float)
    assert facts["context_limit"] is None


@pytest.mark.parametrize(
    ("config", "architecture", "message"),
    [
        ({"rope_scaling": {"type": "yarn", "factor": 4.0}}, "Phi3ForCausalLM", "RoPE type 'yarn'.*implements default, linear, su, longrope"),
        ({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}, "Phi3ForCausalLM", "RoPE type 'dynamic'"),
        ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "PhiForCausalLM", "does not implement for PhiForCausalLM"),
        ({"rope_scaling": {"type": "longrope", "long_factor": [1.0], "short_factor": [1.0]}}, "PhiMoEForCausalLM", "lack short_mscale and long_mscale"),
    ],
)
def test_unsupported_rope_rejected(config, architecture, message):
    with pytest.raises(SourceError, match=message):
        normalise_config(config, architecture)


def test_input_folder_links_only_model_files(tiny_model, tmp_path):
    folder = tiny_model("phi-3-mini-4k-instruct")
    source = inspect_folder(folder)
    mlx_input = prepare_input(source, tmp_path / "input")
    names = sorted(path.name for path in mlx_input.path.iterdir())
    assert "README.md" not in names
    assert "LICENSE" not in names
    assert "model.safetensors" in names
    assert "tokenizer.json" in names
    assert (mlx_input.path / "model.safetensors").is_symlink()
    assert json.loads((mlx_input.path / "config.json").read_text()) == mlx_input.config


def test_input_folder_leaves_python_files_out(tiny_model, tmp_path):
    import shutil

    folder = tmp_path / "with-code"
    shutil.copytree(tiny_model("phi-3-mini-4k-instruct"), folder)
    (folder / "modeling_phi3.py").write_text("raise SystemExit\n")
    mlx_input = prepare_input(inspect_folder(folder), tmp_path / "input")
    assert not list(mlx_input.path.glob("*.py"))


def test_input_folder_needs_safetensors(tiny_model, tmp_path):
    import shutil

    folder = tmp_path / "renamed"
    shutil.copytree(tiny_model("phi-3-mini-4k-instruct"), folder)
    (folder / "model.safetensors").rename(folder / "weights.safetensors")
    with pytest.raises(SourceError, match="no model\\*.safetensors files"):
        prepare_input(inspect_folder(folder), tmp_path / "input")


def test_source_eos_ids_merge_both_configs(tiny_model):
    assert source_eos_ids(tiny_model("phi-4-mini-instruct")) == [199999, 200020]
    assert source_eos_ids(tiny_model("phi-3-mini-4k-instruct")) == [32000, 32001, 32007]


@pytest.mark.parametrize(("source", "stored"), [("bfloat16", "bfloat16"), ("float16", "float16"), ("float32", "bfloat16")])
def test_quantized_float_dtype(source, stored):
    assert quantized_float_dtype(source) == stored


def _write_safetensors(path, tensors: dict) -> None:
    """Write arrays of mixed dtypes, which the tiny-model writer does not do."""
    codes = {np.dtype(np.float16): "F16", np.dtype(np.uint32): "U32"}
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        data = array.tobytes()
        header[name] = {"dtype": codes[array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    encoded = json.dumps(header).encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + b"".join(blobs))


def _fake_release(folder, source_folder):
    """A folder shaped like mlx-lm's output: its own tokenizer re-save and README."""
    folder.mkdir()
    tensors = {
        "model.embed_tokens.weight": np.zeros((8, 4), dtype=np.float16),
        "model.layers.0.mlp.down_proj.weight": np.zeros((4, 2), dtype=np.uint32),
        "model.norm.weight": np.zeros(4, dtype=np.float16),
    }
    _write_safetensors(folder / "model.safetensors", tensors)
    config = json.loads((source_folder / "config.json").read_text())
    config["eos_token_id"] = [32000, 32001]
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": 32000}))
    (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "TokenizersBackend"}')
    (folder / "chat_template.jinja").write_text("re-saved")
    (folder / "README.md").write_text("---\nlibrary_name: mlx\n---\n")


def test_finalize_keeps_source_tokenizer(tiny_model, tmp_path):
    source_folder = tiny_model("phi-3-mini-4k-instruct")
    release = tmp_path / "release"
    _fake_release(release, source_folder)
    finalize_folder(release, inspect_folder(source_folder), [32000, 32001, 32007])
    assert not (release / "README.md").exists()
    assert not (release / "chat_template.jinja").exists()
    for name in ("tokenizer_config.json", "tokenizer.json", "tokenizer.model", "added_tokens.json", "special_tokens_map.json"):
        assert (release / name).read_bytes() == (source_folder / name).read_bytes(), name


def test_finalize_lists_every_eos_id(tiny_model, tmp_path):
    source_folder = tiny_model("phi-3-mini-4k-instruct")
    release = tmp_path / "release"
    _fake_release(release, source_folder)
    finalize_folder(release, inspect_folder(source_folder), [32000, 32001, 32007])
    assert json.loads((release / "config.json").read_text())["eos_token_id"] == [32000, 32001, 32007]
    assert json.loads((release / "generation_config.json").read_text())["eos_token_id"] == [32000, 32001, 32007]


def test_finalize_writes_stored_dtype(tiny_model, tmp_path):
    source_folder = tiny_model("phi-3-mini-4k-instruct")
    release = tmp_path / "release"
    _fake_release(release, source_folder)
    assert json.loads((release / "config.json").read_text())["torch_dtype"] == "bfloat16"
    tensors = finalize_folder(release, inspect_folder(source_folder), [32000])
    assert tensors == {"tensor_dtypes": {"F16": 2, "U32": 1}, "float_dtype": "float16"}
    assert json.loads((release / "config.json").read_text())["torch_dtype"] == "float16"


def test_describe_tensors_of_source(tiny_model):
    described = describe_tensors(tiny_model("phi-3-mini-4k-instruct"))
    assert described["float_dtype"] == "bfloat16"
    assert set(described["tensor_dtypes"]) == {"BF16"}


def test_layer_summary():
    layers = {
        "quantized": [
            {"path": "model.layers.0.mlp.gate_up_proj", "bits": 4, "group_size": 64, "mode": "affine"},
            {"path": "model.layers.1.mlp.gate_up_proj", "bits": 4, "group_size": 64, "mode": "affine"},
            {"path": "lm_head", "bits": 4, "group_size": 32, "mode": "affine"},
        ],
        "unquantized": [{"path": "model.layers.0.mlp.down_proj", "width": 600, "dtype": "bfloat16"}],
    }
    summary = summarise_layers(layers, parse_precision("4bit"))
    assert summary["layer_settings"] == [
        {"bits": 4, "group_size": 32, "mode": "affine", "count": 1, "layers": ["lm_head"]},
        {"bits": 4, "group_size": 64, "mode": "affine", "count": 2, "layers": []},
    ]
    assert summary["fallback_layers"] == [{"path": "lm_head", "group_size": 32}]
    assert summary["unquantized_layers"] == layers["unquantized"]


def test_layer_summary_of_unquantized_target():
    layers = {"quantized": [], "unquantized": [{"path": "lm_head", "width": 256, "dtype": "bfloat16"}]}
    summary = summarise_layers(layers, parse_precision("bf16"))
    assert summary == {"layer_settings": [], "fallback_layers": [], "unquantized_layers": []}
