"""The tiny Phi-family models build and validate, and the builder's traps are
caught: mis-wired LM heads, shared embeddings, PhiMoE, both rope scaling
spellings and configs without rope scaling."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hubquant.backends.onnx import OnnxBackend
from hubquant.errors import SourceError
from hubquant.pipeline import JobRequest, run_job
from hubquant.progress import Reporter
from hubquant.tinymodels import publish_tiny_model

from onnx_helpers import checks_of, local_job, staged_manifest

# Models whose fp32 CPU variant must match transformers. A long-context model
# gets original_max_position_embeddings 4, so every prompt (5 tokens or more)
# runs on the long rope factors in both runtimes, not only the short ones.
LONG_FACTORS = {"config_overrides": {"original_max_position_embeddings": 4}}
MODELS = {
    "phi-3-mini-128k-instruct": LONG_FACTORS,  # rope_scaling type "longrope"
    "phi-3-mini-128k-instruct-2024-05": LONG_FACTORS,  # rope_scaling type "su"
    "phi-4": {},  # rope_scaling null
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def fp32_release(request, tiny_model, tmp_path_factory):
    name = request.param
    folder = tiny_model(name, **MODELS[name])
    result = local_job(folder, ["onnx:fp32"], tmp_path_factory.mktemp(f"fp32-{name}"))
    return name, folder, result


def test_fp32_matches_transformers(fp32_release):
    name, _, result = fp32_release
    release = result.releases[0]
    assert release.failed == {}, name
    checks = checks_of(release.validation)
    for check in ("logits match transformers", "greedy continuation", "generation stops at EOS", "chat template", "genai_config.json EOS ids", "embedding and LM head weights"):
        assert checks[check] == "passed", f"{name}: {check}"


def test_rope_scaling_spellings(tiny_model):
    assert json.loads((tiny_model("phi-3-mini-128k-instruct", **LONG_FACTORS) / "config.json").read_text())["rope_scaling"]["type"] == "longrope"
    assert json.loads((tiny_model("phi-3-mini-128k-instruct-2024-05", **LONG_FACTORS) / "config.json").read_text())["rope_scaling"]["type"] == "su"
    config = json.loads((tiny_model("phi-4") / "config.json").read_text())
    assert "rope_scaling" in config
    assert config["rope_scaling"] is None


@pytest.fixture(scope="module")
def phi4_mini_release(tiny_model, tmp_path_factory):
    """Phi-4-mini: partial rotary 0.75, tied embeddings without an lm_head tensor."""
    folder = tiny_model("phi-4-mini-instruct")
    result = local_job(folder, ["onnx:fp32", "onnx:int4"], tmp_path_factory.mktemp("phi4-mini"))
    return result


def _facts(result, folder: str) -> dict:
    return next(entry for entry in staged_manifest(result)["artifacts"] if entry["facts"]["folder"] == folder)


def test_phi4_mini_validates(phi4_mini_release):
    release = phi4_mini_release.releases[0]
    assert release.failed == {}
    checks = checks_of(release.validation)
    assert checks["logits match transformers"] == "passed"
    assert checks["greedy continuation"] == "passed"
    config = json.loads((Path(release.url) / "cpu-fp32" / "genai_config.json").read_text())
    assert sorted(config["model"]["eos_token_id"]) == [199999, 200020]


def test_phi4_mini_int4_shares_quantized_embedding(phi4_mini_release):
    entry = _facts(phi4_mini_release, "cpu-int4-rtn-block-32-acc-level-4")
    assert entry["validation"]["status"] == "passed"
    assert entry["facts"]["shared_embeddings"] is True
    assert entry["facts"]["quantization"]["embeddings"] == "int4"


def test_untied_model_never_shares(fp32_release):
    name, _, result = fp32_release
    entry = staged_manifest(result)["artifacts"][0]
    assert entry["facts"]["shared_embeddings"] is False, name
    assert "shared_embeddings=false" in entry["facts"]["builder_command"], name


def test_vocab_sized_layer_rejected(tiny_model, onnx_toolchain, tmp_path):
    """A layer as wide as the vocabulary would be wired as the LM head by the builder."""
    folder = tmp_path / "vocab-wide-mlp"
    shutil.copytree(tiny_model("phi-3-mini-4k-instruct"), folder)
    config = json.loads((folder / "config.json").read_text())
    # Phi-3 fuses gate and up projections, so this MLP layer is 32064 wide.
    config["intermediate_size"] = config["vocab_size"] // 2
    (folder / "config.json").write_text(json.dumps(config))

    from hubquant.backends.base import BuildContext
    from hubquant.source import inspect_folder

    context = BuildContext(source=inspect_folder(folder), reference=None, work_dir=tmp_path / "work", reporter=Reporter(), max_file_bytes=10**12)
    with pytest.raises(SourceError, match=r"model\.layers\.0\.mlp\.gate_up_proj is an nn\.Linear of width 32064, equal to the vocabulary size"):
        OnnxBackend()._check_source(context, onnx_toolchain)


def test_ordinary_model_has_no_conflicts(tiny_model, onnx_toolchain, tmp_path):
    from hubquant.backends.base import BuildContext
    from hubquant.source import inspect_folder

    folder = tiny_model("phi-3-mini-4k-instruct")
    context = BuildContext(source=inspect_folder(folder), reference=None, work_dir=tmp_path, reporter=Reporter(), max_file_bytes=10**12)
    facts = OnnxBackend()._check_source(context, onnx_toolchain)
    assert facts == {"vocab_size": 32064, "tie_word_embeddings": False, "conflicts": []}


def test_phimoe_rejected_before_download(hub, alice, tiny_model, tmp_path, monkeypatch):
    from huggingface_hub.errors import RepositoryNotFoundError

    from hubquant import pipeline

    repo_id = "microsoft/Phi-tiny-MoE-instruct"
    try:
        alice.model_info(repo_id)
    except RepositoryNotFoundError:
        publish_tiny_model(alice, "phi-tiny-moe-instruct", repo_id=repo_id, cache=tiny_model)

    def no_download(*args, **kwargs):
        raise AssertionError("the job downloaded the source")

    monkeypatch.setattr(pipeline, "download", no_download)
    request = JobRequest(source=repo_id, targets=["onnx:int4"], endpoint=hub.url, token=hub.token_for("alice"), output_dir=tmp_path / "out")
    with pytest.raises(SourceError, match="the onnx backend does not support architecture PhiMoEForCausalLM; supported: .*Phi3ForCausalLM"):
        run_job(request)


def test_quantized_embedding_needs_tied_model(tiny_model, tmp_path):
    """The builder quantizes an embedding only when it shares it with the LM head."""
    from hubquant.backends.base import BuildContext, Release
    from hubquant.source import inspect_folder
    from hubquant.targets import parse_target

    target = parse_target("onnx:int4-embeds-int4")
    release = Release("onnx", "phi-onnx", [target])
    context = BuildContext(source=inspect_folder(tiny_model("phi-3-mini-4k-instruct")), reference=None, work_dir=tmp_path, reporter=Reporter(), max_file_bytes=10**12)
    OnnxBackend().build(context, release)
    assert release.artifacts == []
    assert "embeds-int4 needs tied embeddings" in release.failed[str(target)]
