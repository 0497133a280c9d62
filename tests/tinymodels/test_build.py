"""Tiny model folders: files, shrunk configs, safetensors layout, determinism."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from hubquant.tinymodels import TINY_MODELS, build_tiny_model
from hubquant.tinymodels.build import FILES_DIR
from hubquant.tinymodels.safetensors_io import read_safetensors_header, read_safetensors_tensor

# What each default build must look like, written out here rather than
# derived from the specs, so a change in the catalogue fails loudly.
EXPECTED = {
    "phi-3-mini-4k-instruct": {
        "architecture": "Phi3ForCausalLM",
        "vocab": 32064,
        "hidden": 256,
        "intermediate": 768,
        "heads": 4,
        "kv_heads": 4,
        "head_dim": 64,
        "rope_type": None,
        "max_positions": 4096,
        "sliding_window": 2047,
    },
    "phi-3-mini-4k-instruct-sharded": {
        "architecture": "Phi3ForCausalLM",
        "vocab": 32064,
        "hidden": 256,
        "intermediate": 768,
        "heads": 4,
        "kv_heads": 4,
        "head_dim": 64,
        "rope_type": None,
        "max_positions": 4096,
        "sliding_window": 2047,
        "shards": 3,
    },
    "phi-3-mini-128k-instruct": {
        "architecture": "Phi3ForCausalLM",
        "vocab": 32064,
        "hidden": 256,
        "intermediate": 768,
        "heads": 4,
        "kv_heads": 4,
        "head_dim": 64,
        "rope_type": "longrope",
        "factors": 32,
        "max_positions": 131072,
        "sliding_window": 262144,
    },
    "phi-3-mini-128k-instruct-2024-05": {
        "architecture": "Phi3ForCausalLM",
        "vocab": 32064,
        "hidden": 256,
        "intermediate": 768,
        "heads": 4,
        "kv_heads": 4,
        "head_dim": 64,
        "rope_type": "su",
        "factors": 32,
        "max_positions": 131072,
        "sliding_window": 262144,
    },
    "phi-3.5-mini-instruct": {
        "architecture": "Phi3ForCausalLM",
        "vocab": 32064,
        "hidden": 256,
        "intermediate": 768,
        "heads": 4,
        "kv_heads": 4,
        "head_dim": 64,
        "rope_type": "longrope",
        "factors": 32,
        "max_positions": 131072,
        "sliding_window": 262144,
    },
    "phi-4-mini-instruct": {
        "architecture": "Phi3ForCausalLM",
        "vocab": 200064,
        "hidden": 256,
        "intermediate": 768,
        "heads": 2,
        "kv_heads": 1,
        "head_dim": 128,
        "rope_type": "longrope",
        "factors": 48,
        "max_positions": 131072,
        "sliding_window": 262144,
        "tied": True,
    },
    "phi-4": {
        "architecture": "Phi3ForCausalLM",
        "vocab": 100352,
        "hidden": 256,
        "intermediate": 1024,
        "heads": 4,
        "kv_heads": 1,
        "head_dim": 64,
        "rope_type": None,
        "max_positions": 16384,
        "sliding_window": 16384,
    },
    "phi-tiny-moe-instruct": {
        "architecture": "PhiMoEForCausalLM",
        "vocab": 32064,
        "hidden": 512,
        "intermediate": 256,
        "heads": 4,
        "kv_heads": 1,
        "head_dim": 128,
        "rope_type": None,
        "max_positions": 4096,
        "sliding_window": 2047,
        "experts": 4,
    },
    "phi-2": {
        "architecture": "PhiForCausalLM",
        "vocab": 51200,
        "hidden": 256,
        "intermediate": 1024,
        "heads": 4,
        "kv_heads": 4,
        "head_dim": 64,
        "rope_type": None,
        "max_positions": 2048,
    },
}

COMMON_FILES = {"config.json", "generation_config.json", "tokenizer_config.json", "tokenizer.json", "README.md", "LICENSE"}
EXTRA_FILES = {
    "phi-3-mini-4k-instruct": {"tokenizer.model", "added_tokens.json", "special_tokens_map.json"},
    "phi-3-mini-4k-instruct-sharded": {"tokenizer.model", "added_tokens.json", "special_tokens_map.json"},
    "phi-3-mini-128k-instruct": {"tokenizer.model", "added_tokens.json", "special_tokens_map.json"},
    "phi-3-mini-128k-instruct-2024-05": {"tokenizer.model", "added_tokens.json", "special_tokens_map.json"},
    "phi-3.5-mini-instruct": {"tokenizer.model", "added_tokens.json", "special_tokens_map.json", "chat_template.jinja"},
    "phi-4-mini-instruct": {"vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json"},
    "phi-4": {"vocab.json", "merges.txt", "added_tokens.json"},
    "phi-tiny-moe-instruct": {"tokenizer.model", "added_tokens.json", "special_tokens_map.json"},
    "phi-2": {"vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json"},
}

MODEL_NAMES = list(EXPECTED)


def test_catalogue_names() -> None:
    assert set(TINY_MODELS) == set(EXPECTED)


def expected_tensor_names(name: str) -> set[str]:
    """Write out the Hub checkpoint tensor names of each architecture."""
    facts = EXPECTED[name]
    names = {"model.embed_tokens.weight"}
    for layer in range(2):
        prefix = f"model.layers.{layer}"
        if facts["architecture"] == "Phi3ForCausalLM":
            names |= {
                f"{prefix}.input_layernorm.weight",
                f"{prefix}.post_attention_layernorm.weight",
                f"{prefix}.self_attn.qkv_proj.weight",
                f"{prefix}.self_attn.o_proj.weight",
                f"{prefix}.mlp.gate_up_proj.weight",
                f"{prefix}.mlp.down_proj.weight",
            }
        elif facts["architecture"] == "PhiMoEForCausalLM":
            for part in ("input_layernorm", "post_attention_layernorm"):
                names |= {f"{prefix}.{part}.weight", f"{prefix}.{part}.bias"}
            for projection in ("q_proj", "k_proj", "v_proj", "o_proj"):
                names |= {f"{prefix}.self_attn.{projection}.weight", f"{prefix}.self_attn.{projection}.bias"}
            names.add(f"{prefix}.block_sparse_moe.gate.weight")
            for expert in range(facts["experts"]):
                for matrix in ("w1", "w2", "w3"):
                    names.add(f"{prefix}.block_sparse_moe.experts.{expert}.{matrix}.weight")
        else:
            for part in ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                         "self_attn.dense", "mlp.fc1", "mlp.fc2"):
                names |= {f"{prefix}.{part}.weight", f"{prefix}.{part}.bias"}
    if facts["architecture"] == "Phi3ForCausalLM":
        names.add("model.norm.weight")
    elif facts["architecture"] == "PhiMoEForCausalLM":
        names |= {"model.norm.weight", "model.norm.bias", "lm_head.bias"}
    else:
        names |= {"model.final_layernorm.weight", "model.final_layernorm.bias", "lm_head.bias"}
    if not facts.get("tied"):
        names.add("lm_head.weight")
    return names


def read_all_headers(folder: Path) -> dict[str, dict]:
    """Merge the headers of every safetensors file in ``folder`` (name -> entry with its file)."""
    tensors: dict[str, dict] = {}
    for path in sorted(folder.glob("*.safetensors")):
        header = read_safetensors_header(path)
        assert header.pop("__metadata__") == {"format": "pt"}, path.name
        for tensor_name, entry in header.items():
            assert tensor_name not in tensors, f"{tensor_name} appears in two files"
            tensors[tensor_name] = dict(entry, file=path.name)
    return tensors


def file_hashes(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_folder_files(all_tiny_models, name: str) -> None:
    folder = all_tiny_models[name]
    present = {path.name for path in folder.iterdir()}
    expected = COMMON_FILES | EXTRA_FILES[name]
    shards = EXPECTED[name].get("shards", 1)
    if shards == 1:
        expected = expected | {"model.safetensors"}
    else:
        expected = expected | {f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)}
        expected = expected | {"model.safetensors.index.json"}
    assert present == expected


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_config_shrunk(all_tiny_models, name: str) -> None:
    facts = EXPECTED[name]
    config = json.loads((all_tiny_models[name] / "config.json").read_text())
    assert config["architectures"] == [facts["architecture"]]
    assert config["num_hidden_layers"] == 2
    assert config["hidden_size"] == facts["hidden"]
    assert config["intermediate_size"] == facts["intermediate"]
    assert config["hidden_size"] % 256 == 0
    assert config["intermediate_size"] % 256 == 0
    assert config["num_attention_heads"] == facts["heads"]
    assert config["num_key_value_heads"] == facts["kv_heads"]
    assert config.get("head_dim", config["hidden_size"] // config["num_attention_heads"]) == facts["head_dim"]
    assert config["vocab_size"] == facts["vocab"]
    assert config["max_position_embeddings"] == facts["max_positions"]
    assert config.get("sliding_window") == facts.get("sliding_window")
    assert config["torch_dtype"] == "bfloat16"
    assert config.get("tie_word_embeddings", False) == facts.get("tied", False)
    if "experts" in facts:
        assert config["num_local_experts"] == facts["experts"]
        assert config["num_experts_per_tok"] == 2


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_config_keeps_real_keys(all_tiny_models, name: str) -> None:
    spec = TINY_MODELS[name]
    real = json.loads((FILES_DIR / spec.config_file).read_text(encoding="utf-8"))
    config = json.loads((all_tiny_models[name] / "config.json").read_text())
    shrunk_keys = {
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "head_dim", "num_local_experts", "torch_dtype", "rope_scaling", "partial_rotary_factor",
    }
    dropped = {"auto_map"} if name in ("phi-tiny-moe-instruct", "phi-2") else set()
    assert set(config) == set(real) - dropped
    for key in set(real) - shrunk_keys - dropped:
        assert config[key] == real[key], key


@pytest.mark.parametrize("name", [name for name, facts in EXPECTED.items() if facts.get("factors")])
def test_rope_factors_resized(all_tiny_models, name: str) -> None:
    facts = EXPECTED[name]
    spec = TINY_MODELS[name]
    real = json.loads((FILES_DIR / spec.config_file).read_text(encoding="utf-8"))["rope_scaling"]
    config = json.loads((all_tiny_models[name] / "config.json").read_text())
    rope = config["rope_scaling"]
    assert rope["type"] == facts["rope_type"]
    assert config["original_max_position_embeddings"] == 4096
    for key in ("long_factor", "short_factor"):
        assert len(rope[key]) == facts["factors"], key
        assert rope[key][0] == real[key][0], key
        assert rope[key][-1] == real[key][-1], key
        if facts["factors"] == len(real[key]):
            assert rope[key] == real[key], key


def test_phi_4_mini_rotary_dims(all_tiny_models) -> None:
    config = json.loads((all_tiny_models["phi-4-mini-instruct"] / "config.json").read_text())
    assert config["partial_rotary_factor"] == 0.75
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    assert int(head_dim * config["partial_rotary_factor"]) == 96


def test_phi_2_rotary_dims(all_tiny_models) -> None:
    config = json.loads((all_tiny_models["phi-2"] / "config.json").read_text())
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    # The real phi-2 rotates 32 dims per head (80 * 0.4), and the tiny one keeps 32.
    assert head_dim * config["partial_rotary_factor"] == 32


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_safetensors_tensors(all_tiny_models, name: str) -> None:
    facts = EXPECTED[name]
    tensors = read_all_headers(all_tiny_models[name])
    assert set(tensors) == expected_tensor_names(name)
    for tensor_name, entry in tensors.items():
        assert entry["dtype"] == "BF16", tensor_name
    hidden, vocab = facts["hidden"], facts["vocab"]
    assert tensors["model.embed_tokens.weight"]["shape"] == [vocab, hidden]
    if facts["architecture"] == "Phi3ForCausalLM":
        qkv_rows = (facts["heads"] + 2 * facts["kv_heads"]) * facts["head_dim"]
        assert tensors["model.layers.0.self_attn.qkv_proj.weight"]["shape"] == [qkv_rows, hidden]
        assert tensors["model.layers.1.mlp.gate_up_proj.weight"]["shape"] == [2 * facts["intermediate"], hidden]
        assert tensors["model.layers.1.mlp.down_proj.weight"]["shape"] == [hidden, facts["intermediate"]]
    if facts["architecture"] == "PhiMoEForCausalLM":
        assert tensors["model.layers.0.block_sparse_moe.gate.weight"]["shape"] == [facts["experts"], hidden]
        assert tensors["model.layers.0.self_attn.k_proj.weight"]["shape"] == [facts["kv_heads"] * facts["head_dim"], hidden]
        assert tensors["model.layers.0.block_sparse_moe.experts.3.w2.weight"]["shape"] == [hidden, facts["intermediate"]]


def test_phi_4_mini_has_no_lm_head(all_tiny_models) -> None:
    tensors = read_all_headers(all_tiny_models["phi-4-mini-instruct"])
    assert not any(tensor_name.startswith("lm_head") for tensor_name in tensors)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_safetensors_offsets_contiguous(all_tiny_models, name: str) -> None:
    for path in all_tiny_models[name].glob("*.safetensors"):
        header = read_safetensors_header(path)
        header.pop("__metadata__")
        spans = sorted(tuple(entry["data_offsets"]) for entry in header.values())
        assert spans[0][0] == 0
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert end == start, path.name
        header_length = int.from_bytes(path.read_bytes()[:8], "little")
        assert path.stat().st_size == 8 + header_length + spans[-1][1]
        for entry in header.values():
            elements = 1
            for dimension in entry["shape"]:
                elements *= dimension
            assert entry["data_offsets"][1] - entry["data_offsets"][0] == 2 * elements


def test_sharded_index(all_tiny_models) -> None:
    folder = all_tiny_models["phi-3-mini-4k-instruct-sharded"]
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    tensors = read_all_headers(folder)
    weight_map = index["weight_map"]
    assert set(weight_map) == set(tensors)
    assert set(weight_map.values()) == {path.name for path in folder.glob("*.safetensors")}
    for tensor_name, file_name in weight_map.items():
        assert tensors[tensor_name]["file"] == file_name, tensor_name
    data_bytes = sum(entry["data_offsets"][1] - entry["data_offsets"][0] for entry in tensors.values())
    assert index["metadata"]["total_size"] == data_bytes


def test_sharded_matches_single_file(all_tiny_models) -> None:
    single = all_tiny_models["phi-3-mini-4k-instruct"]
    sharded = all_tiny_models["phi-3-mini-4k-instruct-sharded"]
    tensors = read_all_headers(sharded)
    for tensor_name in ("model.embed_tokens.weight", "model.layers.1.mlp.down_proj.weight", "lm_head.weight"):
        in_shard = read_safetensors_tensor(sharded / tensors[tensor_name]["file"], tensor_name)
        in_single = read_safetensors_tensor(single / "model.safetensors", tensor_name)
        assert (in_shard == in_single).all(), tensor_name


def test_build_deterministic(all_tiny_models, tmp_path) -> None:
    again = build_tiny_model("phi-4", tmp_path / "again", seed=0)
    assert file_hashes(again) == file_hashes(all_tiny_models["phi-4"])


def test_seed_changes_only_weights(all_tiny_models, tmp_path) -> None:
    other = file_hashes(build_tiny_model("phi-3-mini-4k-instruct", tmp_path / "seed1", seed=1))
    default = file_hashes(all_tiny_models["phi-3-mini-4k-instruct"])
    assert other["model.safetensors"] != default["model.safetensors"]
    assert other["README.md"] != default["README.md"]
    for file_name in set(default) - {"model.safetensors", "README.md"}:
        assert other[file_name] == default[file_name], file_name


@pytest.mark.parametrize(
    ("name", "tensor_name"),
    [
        ("phi-3-mini-4k-instruct", "model.layers.0.mlp.down_proj.weight"),
        ("phi-tiny-moe-instruct", "model.layers.0.block_sparse_moe.experts.0.w2.weight"),
        ("phi-2", "model.layers.0.mlp.fc2.weight"),
    ],
)
def test_extreme_weight_in_file(tiny_model_dir, name: str, tensor_name: str) -> None:
    folder = tiny_model_dir(name, extreme_weight=1e5)
    assert TINY_MODELS[name].extreme_weight_tensor == tensor_name
    values = read_safetensors_tensor(folder / "model.safetensors", tensor_name)
    # bfloat16 keeps 8 significant bits: 1e5 is stored as 99840.
    assert values[0, 0] == 99840.0
    assert values[0, 0] > 65504.0  # beyond the float16 maximum
    assert abs(values[1:, :]).max() < 1.0


def test_copied_files_byte_identical(all_tiny_models) -> None:
    for name, folder in all_tiny_models.items():
        for target, source in TINY_MODELS[name].copied_files.items():
            assert (folder / target).read_bytes() == (FILES_DIR / source).read_bytes(), f"{name}/{target}"


def test_phi_3_5_template_only_in_jinja(all_tiny_models) -> None:
    folder = all_tiny_models["phi-3.5-mini-instruct"]
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert "chat_template" not in tokenizer_config
    assert "{% for message in messages %}" in (folder / "chat_template.jinja").read_text()
    assert tokenizer_config["model_max_length"] == 131072


def test_phi_4_tokenizer_files(all_tiny_models) -> None:
    folder = all_tiny_models["phi-4"]
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 100256
    assert vocab["Hello"] == 9906
    assert vocab["Ġworld"] == 1917
    tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    added = {entry["content"]: entry["id"] for entry in tokenizer["added_tokens"]}
    assert len(added) == 96
    assert added["<|endoftext|>"] == 100257
    assert added["<|im_start|>"] == 100264
    assert added["<|im_end|>"] == 100265
    assert added["<|im_sep|>"] == 100266
    assert min(added.values()) == 100256
    assert max(added.values()) == 100351
    merges = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0] == "#version: 0.2"
    assert merges[1] == "Ġ Ġ"


def test_phi_4_mini_tokenizer_json(all_tiny_models) -> None:
    tokenizer = json.loads((all_tiny_models["phi-4-mini-instruct"] / "tokenizer.json").read_text(encoding="utf-8"))
    assert tokenizer["normalizer"] is None
    split, byte_level = tokenizer["pre_tokenizer"]["pretokenizers"]
    assert split["type"] == "Split"
    assert split["behavior"] == "Isolated"
    assert byte_level == {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    assert tokenizer["decoder"]["type"] == "ByteLevel"
    vocab = tokenizer["model"]["vocab"]
    assert vocab["Hello"] == 13225
    assert vocab["Ġworld"] == 2375
    added = {entry["content"]: entry for entry in tokenizer["added_tokens"]}
    assert added["<|endoftext|>"]["id"] == 199999
    assert added["<|endoftext|>"]["special"] is True
    assert added["<|endofprompt|>"]["id"] == 200018
    assert added["<|end|>"]["id"] == 200020
    # <|tool_response|> is an added token that is not special in the real config.
    assert added["<|tool_response|>"]["special"] is False


@pytest.mark.parametrize(
    ("name", "license_line"),
    [
        ("phi-3-mini-128k-instruct-2024-05", "license_link: https://huggingface.co/microsoft/Phi-3-mini-128k-instruct/resolve/main/LICENSE"),
        ("phi-3.5-mini-instruct", "license_link: https://huggingface.co/microsoft/Phi-3.5-mini-instruct/resolve/main/LICENSE"),
        ("phi-2", "license_link: https://huggingface.co/microsoft/phi-2/resolve/main/LICENSE"),
        ("phi-tiny-moe-instruct", "library_name: transformers"),
        ("phi-4", "library_name: transformers"),
    ],
)
def test_model_card_header(all_tiny_models, name: str, license_line: str) -> None:
    card = (all_tiny_models[name] / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", card, re.DOTALL)
    assert match, "README.md has no YAML header"
    assert license_line in match.group(1).splitlines()
    metadata = yaml.safe_load(match.group(1))
    assert metadata["license"] == "mit"
    assert metadata["pipeline_tag"] == "text-generation"
    assert f"# Tiny random {TINY_MODELS[name].hub_id}" in card


def test_config_overrides_apply(tiny_model_dir) -> None:
    folder = tiny_model_dir("phi-tiny-moe-instruct", config_overrides={"original_max_position_embeddings": 4096})
    config = json.loads((folder / "config.json").read_text())
    assert config["original_max_position_embeddings"] == 4096


def test_hidden_size_option(tmp_path) -> None:
    folder = build_tiny_model("phi-4-mini-instruct", tmp_path / "wide", hidden_size=512, num_layers=1)
    config = json.loads((folder / "config.json").read_text())
    assert config["num_attention_heads"] == 4
    assert config["num_key_value_heads"] == 1
    assert config["num_hidden_layers"] == 1
    assert len(config["rope_scaling"]["long_factor"]) == 48
    tensors = read_all_headers(folder)
    assert tensors["model.layers.0.self_attn.qkv_proj.weight"]["shape"] == [(4 + 2) * 128, 512]
    assert "model.layers.1.mlp.down_proj.weight" not in tensors


def test_float32_dtype(tmp_path) -> None:
    folder = build_tiny_model("phi-3-mini-4k-instruct", tmp_path / "f32", dtype="float32")
    assert json.loads((folder / "config.json").read_text())["torch_dtype"] == "float32"
    header = read_safetensors_header(folder / "model.safetensors")
    assert header["model.norm.weight"]["dtype"] == "F32"


def test_rejects_non_empty_folder(tmp_path) -> None:
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        build_tiny_model("phi-2", tmp_path / "existing")


def test_builds_into_empty_folder(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    folder = build_tiny_model("phi-3-mini-4k-instruct", tmp_path / "empty", num_layers=1)
    assert (folder / "model.safetensors").is_file()
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dtype": "int8"}, "unsupported dtype"),
        ({"hidden_size": 300}, "not a positive multiple of head_dim"),
        ({"intermediate_size": 32064}, "equals a dimension"),
        ({"num_layers": 0}, "at least 1"),
        ({"dtype": "float16", "extreme_weight": 1e5}, "beyond the float16 range"),
    ],
)
def test_rejects_invalid_options(tmp_path, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_tiny_model("phi-3-mini-4k-instruct", tmp_path / "bad", **options)
    assert not (tmp_path / "bad").exists()


def test_unknown_name(tmp_path) -> None:
    with pytest.raises(KeyError, match="unknown tiny model"):
        build_tiny_model("phi-5", tmp_path / "x")


def test_provenance_lists_every_file() -> None:
    text = (FILES_DIR / "PROVENANCE.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([^`]+)` \| (\d+) \| `([0-9a-f]{64})` \|", text, re.MULTILINE)
    listed = {path: (int(size), digest) for path, size, digest in rows}
    shipped = {
        path.relative_to(FILES_DIR).as_posix()
        for path in FILES_DIR.rglob("*")
        if path.is_file() and path.name not in ("PROVENANCE.md", ".gitattributes")
    }
    assert set(listed) == shipped
    for path, (size, digest) in listed.items():
        data = (FILES_DIR / path).read_bytes()
        assert len(data) == size, path
        assert hashlib.sha256(data).hexdigest() == digest, path


def test_specs_use_only_shipped_files() -> None:
    for spec in TINY_MODELS.values():
        sources = [spec.config_file, *spec.copied_files.values()]
        sources += [path for path in (spec.tokenizer_config_file, spec.card_file) if path]
        for source in sources:
            assert (FILES_DIR / source).is_file(), f"{spec.name}: {source}"
