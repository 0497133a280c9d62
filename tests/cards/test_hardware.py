"""The target-hardware table and its lookups."""

from __future__ import annotations

import pytest

from hubquant import hardware
from hubquant.errors import UsageError

ALL_TARGETS = [
    (entry.key, target)
    for entry in hardware.HARDWARE.values()
    for target in (*entry.targets, *entry.also_runs)
]

FOUR_BIT = {"Q4_0", "Q4_K_M", "Q4_K_S", "IQ4_XS", "IQ4_NL", "int4", "4bit"}


def test_table_has_every_key():
    expected = {
        "phone",
        "iot",
        "apple-silicon",
        "intel-ai-pc",
        "snapdragon-pc",
        "nvidia-gpu",
        "windows-gpu",
        "browser",
        "any-cpu",
    }
    assert set(hardware.HARDWARE) == expected


@pytest.mark.parametrize(("key", "target"), ALL_TARGETS)
def test_target_parses(key, target):
    backend, precision = hardware.parse_target(target)
    assert backend in {"gguf", "onnx", "openvino", "mlx"}, key
    assert precision, key
    assert f"{backend}:{precision}" == target, "table targets are written in normal form"


@pytest.mark.parametrize("key", list(hardware.HARDWARE))
def test_entry_is_complete(key):
    entry = hardware.HARDWARE[key]
    assert entry.key == key
    assert entry.name
    assert entry.description
    assert entry.targets, "every entry needs at least one preferred target"
    assert entry.memory.typical_memory
    assert 0 < entry.memory.headroom < 1
    assert entry.sources, "every entry names its sources"


@pytest.mark.parametrize("key", list(hardware.HARDWARE))
def test_sources_are_https(key):
    for source in hardware.HARDWARE[key].sources:
        assert source.title
        assert source.url.startswith("https://"), source


@pytest.mark.parametrize("key", list(hardware.HARDWARE))
def test_no_target_listed_twice(key):
    entry = hardware.HARDWARE[key]
    listed = [*entry.targets, *entry.also_runs]
    assert len(listed) == len(set(listed))


@pytest.mark.parametrize("key", ["phone", "iot"])
def test_small_devices_prefer_4bit(key):
    entry = hardware.get_hardware(key)
    for target in entry.targets:
        _, precision = hardware.parse_target(target)
        assert precision in FOUR_BIT, target


def test_unknown_key_names_it():
    with pytest.raises(UsageError) as raised:
        hardware.get_hardware("toaster")
    message = str(raised.value)
    assert "'toaster'" in message
    for key in hardware.HARDWARE:
        assert key in message


def test_parse_target_normalises_case():
    assert hardware.parse_target("GGUF:q4_k_m") == ("gguf", "Q4_K_M")
    assert hardware.parse_target("onnx:INT4") == ("onnx", "int4")


@pytest.mark.parametrize("target", ["gguf", "gguf:", ":Q4_K_M", "tflite:int8"])
def test_parse_target_rejects(target):
    with pytest.raises(UsageError):
        hardware.parse_target(target)


def test_targets_for_dedupes_in_order():
    targets = hardware.targets_for(["phone", "iot"])
    assert targets == list(hardware.get_hardware("phone").targets)


def test_targets_for_filters_backends():
    targets = hardware.targets_for(["intel-ai-pc", "apple-silicon"], backends=["gguf"])
    assert targets == ["gguf:Q4_K_M", "gguf:Q8_0"]


def test_targets_for_unknown_key():
    with pytest.raises(UsageError):
        hardware.targets_for(["phone", "toaster"])


def test_hardware_for_gguf_q4_0():
    keys = hardware.hardware_for_target("gguf", "q4_0")
    assert "phone" in keys
    assert "iot" in keys
    assert "browser" not in keys


def test_hardware_for_webgpu():
    assert hardware.hardware_for_target("onnx", "webgpu-int4") == ["browser"]


def test_hardware_for_unlisted_target():
    assert hardware.hardware_for_target("gguf", "IQ1_S") == []


def test_gguf_hint_q4_k_m():
    hint = hardware.gguf_type_hint("Q4_K_M")
    assert hint.quality == "good balance, recommended for phones and laptops"
    assert "phone" in hint.hardware
    assert "apple-silicon" in hint.hardware


def test_gguf_hint_q2_k():
    hint = hardware.gguf_type_hint("q2_k")
    assert hint.quality == "smallest, noticeably lower quality"
    assert "nvidia-gpu" not in hint.hardware


def test_gguf_hint_unknown_type():
    hint = hardware.gguf_type_hint("TQ1_0")
    assert hint.quality == hardware.UNKNOWN_GGUF_QUALITY
    assert hint.hardware == []


def test_every_gguf_target_has_note():
    gguf_types = {
        hardware.parse_target(target)[1]
        for _, target in ALL_TARGETS
        if target.startswith("gguf:")
    }
    missing = sorted(gguf_types - set(hardware.GGUF_QUALITY))
    assert missing == []


def test_memory_rule_text():
    rule = hardware.get_hardware("any-cpu").memory.rule
    assert rule == "file size + 20% must fit in free RAM"


def test_required_bytes_adds_headroom():
    assert hardware.required_bytes(1_000_000_000, 0.2) == 1_200_000_000


def test_memory_guidance_shape():
    guidance = hardware.memory_guidance(["phone"])
    assert [row["key"] for row in guidance] == ["phone"]
    assert set(guidance[0]) == {"key", "name", "typical_memory", "rule", "headroom", "note"}
