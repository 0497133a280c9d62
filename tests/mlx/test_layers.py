"""Layers whose width a group size does not divide, shard limits, the float16
range, and how the card reports them."""

from __future__ import annotations

import json

import pytest

from hubquant.backends.mlx import MlxBackend
from hubquant.source import inspect_folder

from mlx_helpers import build_direct, checks_of

# Hidden 320 is divisible by 64 but not by 128, and intermediate 600 by no
# valid group size (600 = 8 * 75), so mlx:4bit-g128 must use group size 64 for
# every layer that reads the hidden state and leave down_proj unquantized.
ODD_SHAPE = {"hidden_size": 320, "intermediate_size": 600}
SHARD_BYTES = 4_000_000


@pytest.fixture(scope="module")
def odd(tiny_model, tmp_path_factory):
    folder = tiny_model("phi-3-mini-4k-instruct", **ODD_SHAPE)
    work = tmp_path_factory.mktemp("odd-widths")
    # No transformers reference: the logit checks are covered elsewhere, and
    # this build checks layouts, loading and stops.
    release = build_direct(folder, ["4bit-g128", "nvfp4", "mixed_3_6"], work, None, max_file_bytes=SHARD_BYTES)
    assert release.failed == {}, release.failed
    return folder, release, {artifact.target.precision: artifact for artifact in release.artifacts}


def _render(folder, release, artifact) -> str:
    """Render the card the pipeline would, from the artifact's manifest entry."""
    backend = MlxBackend()
    entry = {
        "target": str(artifact.target),
        "files": artifact.published_names,
        "size_bytes": artifact.size_bytes,
        "bits_per_weight": artifact.bits_per_weight,
        "facts": artifact.facts,
        "validation": artifact.validation.to_dict(),
    }
    context = backend.card_context(
        repo_id=f"alice/odd-mlx-{artifact.target.precision}", source=inspect_folder(folder), release=release,
        artifacts=[entry], license_files=["LICENSE"], command="hubquant run odd", date="2026-12-04",
        endpoint="http://127.0.0.1:1",
    )  # fmt: skip
    return backend.render_card(release, context)


def test_narrow_layers_use_smaller_group(odd):
    _, _, artifacts = odd
    fallbacks = artifacts["4bit-g128"].facts["fallback_layers"]
    paths = {layer["path"] for layer in fallbacks}
    assert {layer["group_size"] for layer in fallbacks} == {64}
    assert "model.embed_tokens" in paths
    assert "lm_head" in paths
    assert "model.layers.0.self_attn.qkv_proj" in paths
    assert "model.layers.1.mlp.gate_up_proj" in paths


def test_indivisible_layers_stay_unquantized(odd):
    _, _, artifacts = odd
    for precision in ("4bit-g128", "nvfp4"):
        unquantized = artifacts[precision].facts["unquantized_layers"]
        assert unquantized == [
            {"path": "model.layers.0.mlp.down_proj", "width": 600, "dtype": "bfloat16"},
            {"path": "model.layers.1.mlp.down_proj", "width": 600, "dtype": "bfloat16"},
        ], precision


def test_floating_point_mode_keeps_its_group(odd):
    _, _, artifacts = odd
    settings = artifacts["nvfp4"].facts["layer_settings"]
    assert [(s["bits"], s["group_size"], s["mode"]) for s in settings] == [(4, 16, "nvfp4")]
    assert artifacts["nvfp4"].facts["fallback_layers"] == []


def test_layout_loads_as_written(odd):
    _, _, artifacts = odd
    for precision, artifact in artifacts.items():
        checks = checks_of(artifact.validation.to_dict())
        assert checks["layers load as converted"] == "passed", precision
        assert checks["generation stops at EOS"] == "passed", precision


def test_config_records_layout(odd):
    _, _, artifacts = odd
    artifact = artifacts["4bit-g128"]
    config = json.loads((artifact.root / "config.json").read_text())
    quantization = config["quantization"]
    assert (quantization["group_size"], quantization["bits"], quantization["mode"]) == (128, 4, "affine")
    assert quantization["model.layers.0.mlp.down_proj"] is False
    assert quantization["lm_head"] == {"group_size": 64, "bits": 4, "mode": "affine"}


def test_bits_per_weight_include_unquantized_layers(odd):
    _, _, artifacts = odd
    # Two bf16 down_proj layers of 320 x 600 among about 20.6M weights.
    assert 4.6 < artifacts["4bit-g128"].bits_per_weight < 4.8


def test_files_split_at_limit(odd):
    _, _, artifacts = odd
    artifact = artifacts["4bit-g128"]
    shards = sorted(name for name in artifact.published_names if name.endswith(".safetensors"))
    assert len(shards) >= 2
    assert shards == [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    index = json.loads((artifact.root / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    tensors_in = {name: list(index["weight_map"].values()).count(name) for name in shards}
    for name in shards:
        # A tensor larger than the limit (lm_head's packed weight, 5.1 MB)
        # gets a shard of its own; the header adds a few kB.
        size = (artifact.root / name).stat().st_size
        assert size <= SHARD_BYTES + 10_000 or tensors_in[name] == 1, name


def test_card_reports_layout(odd):
    folder, release, artifacts = odd
    card = _render(folder, release, artifacts["4bit-g128"])
    assert "| 4-bit affine, group size 64 |" in card
    assert "| not quantized | 2 |" in card
    assert "that group size 128 does not divide, so they use the largest smaller group size" in card
    assert "| model.layers.0.mlp.down\\_proj | 600 | bfloat16 |" in card
    assert f"| Bits per weight | {artifacts['4bit-g128'].bits_per_weight:.3f} |" in card


def test_card_of_floating_point_mode(odd):
    folder, release, artifacts = odd
    card = _render(folder, release, artifacts["nvfp4"])
    assert "`nvfp4`, 4-bit floating point with a shared 8-bit scale per group of 16" in card
    assert "no group size that `nvfp4` allows divides their input width" in card


def test_skipped_reference_is_stated(odd):
    folder, release, artifacts = odd
    card = _render(folder, release, artifacts["nvfp4"])
    assert "The source was not run in mlx-lm against transformers" in card
    assert "- logits comparison: the reference run was skipped" in card
    assert "but its logits were not compared with the source run in mlx-lm in float32" in card


def test_fp16_rejects_weights_beyond_range(tiny_model, tmp_path):
    folder = tiny_model("phi-3-mini-4k-instruct", extreme_weight=1e5)
    release = build_direct(folder, ["fp16", "bf16"], tmp_path, None)
    assert "beyond the float16 range (65504), which would become inf; choose mlx:bf16" in release.failed["mlx:fp16"]
    assert [str(artifact.target) for artifact in release.artifacts] == ["mlx:bf16"]


def test_mixed_recipe_layout(odd):
    _, _, artifacts = odd
    settings = {(s["bits"], s["group_size"]): s for s in artifacts["mixed_3_6"].facts["layer_settings"]}
    assert set(settings) == {(3, 64), (6, 64)}
    # mlx-lm 0.32.2 gives 6 bits to lm_head and, in the last eighth of the
    # layers, to "v_proj" paths, which Phi-3's fused qkv_proj matches.
    assert settings[(6, 64)]["layers"] == ["lm_head", "model.layers.1.self_attn.qkv_proj"]
    assert settings[(3, 64)]["layers"] == []


def test_card_of_mixed_recipe(odd):
    folder, release, artifacts = odd
    card = _render(folder, release, artifacts["mixed_3_6"])
    assert "mlx-lm's mixed recipe `mixed_3_6`: 3-bit and 6-bit affine, group size 64" in card
    assert "6-bit affine, group size 64: `lm_head`, `model.layers.1.self_attn.qkv_proj`." in card
    assert "mixed_3_6" in card.split("---")[1]
