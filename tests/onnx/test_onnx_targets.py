"""ONNX target names: provider, precision and builder options, and what they map to."""

from __future__ import annotations

import pytest

from hubquant.backends.onnx import PROVIDERS, Variant, builder_command, oversized_files, parse_variant, variant_hardware
from hubquant.errors import UsageError
from hubquant.targets import parse_target, parse_targets


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("int4", "cpu-int4-rtn-block-32-acc-level-4"),
        ("INT4", "cpu-int4-rtn-block-32-acc-level-4"),
        ("cpu-int4-rtn-block-32-acc-level-4", "cpu-int4-rtn-block-32-acc-level-4"),
        ("int8", "cpu-int8-rtn-block-32-acc-level-4"),
        ("fp16", "cpu-fp16"),
        ("fp32", "cpu-fp32"),
        ("cuda-int4", "cuda-int4-rtn-block-32"),
        ("cuda-fp16", "cuda-fp16"),
        ("cuda-bf16", "cuda-bf16"),
        ("dml-int4", "dml-int4-rtn-block-32"),
        ("directml-int4", "dml-int4-rtn-block-32"),
        ("webgpu-int4", "webgpu-int4-rtn-block-32-acc-level-4"),
        ("webgpu-int8", "webgpu-int8-rtn-block-32-acc-level-4"),
        ("trt-rtx-fp16", "trt-rtx-fp16"),
        ("int4-k_quant-block-128", "cpu-int4-kquant-block-128-acc-level-4"),
        ("int4-kquant-acc-level-1-asym", "cpu-int4-kquant-block-32-acc-level-1-asym"),
        ("int4-embeds-int4-lm-head-int8", "cpu-int4-rtn-block-32-acc-level-4-embeds-int4-lm-head-int8"),
        ("cuda-int4-lm-head-float", "cuda-int4-rtn-block-32-lm-head-float"),
        ("int4-acc-level-0", "cpu-int4-rtn-block-32-acc-level-0"),
        ("webgpu-int4-acc-level-0", "webgpu-int4-rtn-block-32-acc-level-0"),
        ("cuda-int4-acc-level-0", "cuda-int4-rtn-block-32"),
        ("cuda-int4-acc-level-4", "cuda-int4-rtn-block-32-acc-level-4"),
    ],
)
def test_variant_names(text, name):
    assert parse_variant(text).name == name


def test_variant_name_parses_back():
    for provider in PROVIDERS.values():
        for precision in provider.precisions:
            variant = parse_variant(f"{provider.name}-{precision}")
            assert parse_variant(variant.name) == variant


@pytest.mark.parametrize("level", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("provider", ["cpu", "cuda", "webgpu"])
def test_accuracy_level_survives_name(provider, level):
    variant = parse_variant(f"{provider}-int4-acc-level-{level}")
    assert variant.accuracy_level == level
    assert parse_variant(variant.name) == variant


def test_target_normalizes_to_folder_name():
    assert str(parse_target("onnx:int4")) == "onnx:cpu-int4-rtn-block-32-acc-level-4"


def test_same_variant_deduplicated():
    targets = parse_targets(["onnx:int4", "onnx:cpu-int4-rtn-block-32-acc-level-4", "onnx:fp32"])
    assert [str(target) for target in targets] == ["onnx:cpu-int4-rtn-block-32-acc-level-4", "onnx:cpu-fp32"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cpu-bf16", "bf16 for CPU is not supported"),
        ("cuda-fp32", "fp32 for CUDA is not supported"),
        ("dml-int8", "int8 for DirectML is not supported"),
        ("webgpu-fp16", "fp16 for WebGPU is not supported"),
        ("int3", "int3 for CPU is not supported"),
        ("int4-awq", "has no awq quantization"),
        ("int4-hqq", "has no hqq quantization"),
        ("cuda-int4-gptq", "gptq is built for CPU int4 only"),
        ("int8-gptq", "gptq is built for CPU int4 only"),
        ("int4-gptq-embeds-int4", "takes neither embeds-int4 nor lm-head-int8"),
        ("int4-block-48", "block must be one of 16, 32, 64, 128, 256, got 48"),
        ("int4-block", "block must be one of"),
        ("int4-acc-level-5", "acc-level must be one of 0, 1, 2, 3, 4, got 5"),
        ("fp16-block-32", "fp16 takes no quantization options"),
        ("int8-embeds-int4", "embeds-int4 needs int4"),
        ("dml-int4-embeds-int4", "DirectML has no GatherBlockQuantized kernel"),
        ("int8-lm-head-int8", "lm-head-int8 applies to int4 variants only"),
        ("int4-fast", "unknown option 'fast'"),
    ],
)
def test_invalid_targets_rejected(text, message):
    with pytest.raises(UsageError, match=message):
        parse_variant(text)


def test_valid_pairs_listed_in_error():
    with pytest.raises(UsageError) as raised:
        parse_variant("cpu-bf16")
    for pair in ("cpu-fp16", "cuda-bf16", "dml-int4", "webgpu-int8", "trt-rtx-bf16"):
        assert pair in str(raised.value)


def test_builder_options_untied_model():
    options = parse_variant("int4").builder_options(tied_source=False)
    assert options["shared_embeddings"] == "false"
    assert options["algo_config"] == "rtn"
    assert options["block_size"] == "32"
    assert options["accuracy_level"] == "4"
    assert options["is_symmetric"] == "true"
    assert options["hf_token"] == "false"


def test_float_variant_never_shares_untied():
    options = parse_variant("fp32").builder_options(tied_source=False)
    assert options == {"hf_token": "false", "shared_embeddings": "false"}


def test_tied_model_keeps_builder_default():
    options = parse_variant("int4").builder_options(tied_source=True)
    assert "shared_embeddings" not in options


def test_tied_model_on_directml_unshared():
    options = parse_variant("dml-int4").builder_options(tied_source=True)
    assert options["shared_embeddings"] == "false"
    assert "accuracy_level" not in options


def test_builder_options_for_each_flag():
    options = parse_variant("int4-kquant-block-128-asym-embeds-int4-lm-head-int8").builder_options(tied_source=False)
    assert options["algo_config"] == "k_quant"
    assert options["block_size"] == "128"
    assert options["is_symmetric"] == "false"
    assert options["op_types_to_quantize"] == "MatMul/Gather"
    assert options["matmul_mixed_precision"] == "last_matmul:int8"
    assert parse_variant("int4-lm-head-float").builder_options(tied_source=False)["nodes_to_exclude"] == "/lm_head/MatMul"


def test_builder_command_is_reproducible():
    command = builder_command(parse_variant("trt-rtx-fp16"), tied_source=False)
    assert command.startswith("python -m onnxruntime_genai.models.builder -i SOURCE_FOLDER -o trt-rtx-fp16")
    assert "-e NvTensorRtRtx" in command


@pytest.mark.parametrize(
    ("text", "hardware"),
    [
        ("int4", ["phone", "iot", "intel-ai-pc", "snapdragon-pc", "any-cpu"]),
        ("fp32", ["intel-ai-pc", "snapdragon-pc", "any-cpu"]),
        ("fp16", ["any-cpu"]),
        ("cuda-int4", ["nvidia-gpu"]),
        ("cuda-fp16", ["nvidia-gpu"]),
        ("dml-int4", ["snapdragon-pc", "windows-gpu"]),
        ("webgpu-int4", ["browser"]),
        ("trt-rtx-bf16", ["nvidia-gpu"]),
    ],
)
def test_variant_hardware(text, hardware):
    variant = parse_variant(text)
    assert variant_hardware(variant.provider, variant.precision) == hardware


def test_default_variant_is_cpu_fp32():
    assert Variant() == parse_variant("fp32")


def test_oversized_files_found():
    files = {"model.onnx": 20_000, "model.onnx.data": 60 * 10**9, "tokenizer.json": 3_000_000}
    assert oversized_files(files, 50 * 10**9) == [("model.onnx.data", 60 * 10**9)]
    assert oversized_files(files, 10**12) == []
