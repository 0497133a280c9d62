"""Source parsing and the cheap checks that run before any heavy work."""

from __future__ import annotations

import json
import struct

import pytest

from hubquant.errors import SourceError, UsageError
from hubquant.source import download_bytes, inspect_folder, parse_source, select_files

ENDPOINT = "http://127.0.0.1:8999"


def test_parse_hub_id():
    ref = parse_source("microsoft/Phi-3-mini-4k-instruct", endpoint=ENDPOINT)
    assert (ref.repo_id, ref.revision) == ("microsoft/Phi-3-mini-4k-instruct", None)


def test_parse_hub_id_with_revision():
    ref = parse_source("microsoft/phi-2@refs/pr/1", endpoint=ENDPOINT)
    assert (ref.repo_id, ref.revision) == ("microsoft/phi-2", "refs/pr/1")


def test_parse_url_of_endpoint():
    ref = parse_source(f"{ENDPOINT}/microsoft/phi-2/tree/abc123", endpoint=ENDPOINT)
    assert (ref.repo_id, ref.revision) == ("microsoft/phi-2", "abc123")


def test_parse_url_of_other_host_rejected():
    with pytest.raises(UsageError, match="does not point to the Hub endpoint in use"):
        parse_source("https://evil.example/microsoft/phi-2", endpoint=ENDPOINT)


def test_parse_dataset_url_rejected():
    with pytest.raises(UsageError, match="not a model repo URL"):
        parse_source(f"{ENDPOINT}/datasets/foo/bar", endpoint=ENDPOINT)


@pytest.mark.parametrize("text", ["not a repo", "a/b/c", "/b"])
def test_parse_invalid_id_rejected(text):
    with pytest.raises(UsageError):
        parse_source(text, endpoint=ENDPOINT)


def test_parse_missing_folder_rejected(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        parse_source(str(tmp_path / "missing"), endpoint=ENDPOINT)


def test_select_files_takes_every_tokenizer_kind():
    files = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
             "tokenizer.model", "vocab.json", "merges.txt", "cl100k_base.tiktoken",
             "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
             "chat_template.json", "LICENSE", "NOTICE.md", "USE_POLICY.md", "README.md",
             "modeling_phi3.py", "sample_finetune.py", "onnx/model.onnx", "pytorch_model.bin"]  # fmt: skip
    selected = select_files(files, allow_pickle=False)
    assert "modeling_phi3.py" not in selected
    assert "pytorch_model.bin" not in selected
    assert "onnx/model.onnx" not in selected
    assert set(files) - set(selected) == {"modeling_phi3.py", "sample_finetune.py", "onnx/model.onnx", "pytorch_model.bin"}


def test_select_files_rejects_pickle_only():
    with pytest.raises(SourceError, match="--allow-pickle"):
        select_files(["config.json", "pytorch_model.bin"], allow_pickle=False)


def test_select_files_accepts_pickle_with_opt_in():
    assert "pytorch_model.bin" in select_files(["config.json", "pytorch_model.bin"], allow_pickle=True)


def _write_safetensors(path, tensors):
    header = {}
    offset = 0
    for name, shape in tensors.items():
        size = 2
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    data = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(data)) + data + b"\0" * offset)


def _model_folder(tmp_path, config=None):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config or {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3"}))
    return folder


def test_folder_without_config_rejected(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(SourceError, match="has no config.json"):
        inspect_folder(folder)


def test_config_without_architectures_rejected(tmp_path):
    folder = _model_folder(tmp_path, {"model_type": "phi3"})
    with pytest.raises(SourceError, match="no 'architectures' list"):
        inspect_folder(folder)


def test_remote_code_model_rejected(tmp_path):
    config = {"architectures": ["SlimMoEForCausalLM"], "model_type": "slimmoe", "auto_map": {"AutoModelForCausalLM": "modeling.X"}}
    folder = _model_folder(tmp_path, config)
    with pytest.raises(SourceError, match="trust_remote_code"):
        inspect_folder(folder)


def test_native_model_with_auto_map_accepted(tmp_path):
    config = {"architectures": ["PhiForCausalLM"], "model_type": "phi", "auto_map": {"AutoConfig": "x.Y"}}
    folder = _model_folder(tmp_path, config)
    _write_safetensors(folder / "model.safetensors", {"w": [2, 2]})
    assert inspect_folder(folder).architecture == "PhiForCausalLM"


def test_index_naming_missing_shard_rejected(tmp_path):
    folder = _model_folder(tmp_path)
    _write_safetensors(folder / "model-00001-of-00002.safetensors", {"a": [2, 2]})
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(SourceError, match="names shard model-00002-of-00002.safetensors"):
        inspect_folder(folder)


def test_index_naming_absent_tensor_rejected(tmp_path):
    folder = _model_folder(tmp_path)
    _write_safetensors(folder / "model-00001-of-00001.safetensors", {"a": [2, 2]})
    index = {"weight_map": {"a": "model-00001-of-00001.safetensors", "lm_head.weight": "model-00001-of-00001.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(SourceError, match="maps tensor lm_head.weight"):
        inspect_folder(folder)


def test_pickle_only_folder_rejected(tmp_path):
    folder = _model_folder(tmp_path)
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(SourceError, match="--allow-pickle"):
        inspect_folder(folder)


def test_header_counts_parameters_and_dtype(tmp_path):
    folder = _model_folder(tmp_path)
    _write_safetensors(folder / "model.safetensors", {"a": [4, 8], "b": [8]})
    source = inspect_folder(folder)
    assert source.parameters == 40
    assert source.dtype == "bfloat16"


def test_invalid_base_model_rejected(tmp_path):
    folder = _model_folder(tmp_path)
    _write_safetensors(folder / "model.safetensors", {"a": [2]})
    with pytest.raises(UsageError, match="invalid --base-model"):
        inspect_folder(folder, declared_base_model="not a repo id")


def test_download_size_counts_only_fetched_files():
    files = {"config.json": 10, "model.safetensors": 1000, "pytorch_model.bin": 1000, "tokenizer.json": 50,
             "README.md": 5, "onnx/model.onnx": 3000, "notes.txt": 7}
    assert download_bytes(files) == 10 + 1000 + 50 + 5
    pickles = {"config.json": 10, "pytorch_model.bin": 1000}
    assert download_bytes(pickles, allow_pickle=True) == 1010
    # Without --allow-pickle the job rejects such a repo, so the size is not trimmed.
    assert download_bytes(pickles) == 1010
