"""Model input, Hub search, the source summary and hardware-first target picking."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from huggingface_hub import HfApi

from hubquant.errors import SourceError, UsageError
from hubquant.hardware import HARDWARE
from hubquant.space.picking import check_targets, chosen_targets, pick_targets, skipped_targets, target_choices
from hubquant.space.views import TARGET_OPTIONS_HELP
from hubquant.space.sources import describe_source, parse_model_input, search_models

from space_helpers import PRIVATE_SOURCE

ENDPOINT = "https://huggingface.co"


@pytest.mark.parametrize(
    ("text", "repo_id", "revision"),
    [
        ("microsoft/Phi-3-mini-4k-instruct", "microsoft/Phi-3-mini-4k-instruct", None),
        (" microsoft/Phi-3-mini-4k-instruct@v2 ", "microsoft/Phi-3-mini-4k-instruct", "v2"),
        ("https://huggingface.co/microsoft/phi-4", "microsoft/phi-4", None),
        ("https://huggingface.co/microsoft/phi-4/tree/refs/pr/3", "microsoft/phi-4", "refs/pr/3"),
        ("https://huggingface.co/models/microsoft/phi-4/blob/abc123/config.json", "microsoft/phi-4", "abc123"),
        # A folder of this name exists in the working directory; the Space still reads it as a Hub id.
        ("tests/space", "tests/space", None),
    ],
)
def test_model_input_parsed(text, repo_id, revision):
    ref = parse_model_input(text, ENDPOINT)
    assert ref.repo_id == repo_id
    assert ref.revision == revision
    assert ref.path is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no model given"),
        ("/etc", "invalid model"),
        ("./tiny-phi3", "invalid model"),
        ("phi-4", "invalid model"),
        ("https://example.com/microsoft/phi-4", "is not on https://huggingface.co"),
        ("https://huggingface.co/datasets/org/data", "is not a model repo URL"),
    ],
)
def test_model_input_rejected(text, message):
    with pytest.raises(UsageError, match=message):
        parse_model_input(text, ENDPOINT)


def test_search_shows_private_only_to_owner(hub, space_sources):
    def found(token):
        return search_models(HfApi(endpoint=hub.url, token=token), "phi3-priv")

    # The browser tests may have published alice's private release of it too.
    assert PRIVATE_SOURCE in found(hub.token_for("alice"))
    assert found(hub.token_for("bob")) == []
    assert found(False) == []


def test_search_ignores_short_queries(hub, space_sources):
    assert search_models(HfApi(endpoint=hub.url, token=hub.token_for("alice")), "p") == []


def test_summary_of_private_source(hub, space_sources):
    api = HfApi(endpoint=hub.url, token=hub.token_for("alice"))
    ref = parse_model_input(PRIVATE_SOURCE, hub.url)
    summary = describe_source(api, ref, targets=["gguf:Q8_0", "gguf:Q4_K_M"], namespace="microsoft", public=None)
    assert summary.sha == space_sources[PRIVATE_SOURCE]
    assert summary.architecture == "Phi3ForCausalLM"
    assert summary.dtype == "bfloat16"
    assert summary.license == "mit"
    assert summary.private is True
    assert summary.gated is False
    assert 17e6 < summary.parameters < 20e6
    assert "gguf" in summary.backends
    release = summary.plan["releases"][0]
    assert release["repo"] == "microsoft/phi3-private-tiny-GGUF"
    assert release["private"] is True
    assert [item["target"] for item in release["files"]] == ["gguf:Q8_0", "gguf:Q4_K_M"]
    assert summary.estimated_seconds > 0


def test_summary_public_choice_changes_plan(hub, space_sources):
    api = HfApi(endpoint=hub.url, token=hub.token_for("alice"))
    ref = parse_model_input(PRIVATE_SOURCE, hub.url)
    summary = describe_source(api, ref, targets=["gguf:Q8_0"], namespace="alice", public=True)
    assert summary.plan["releases"][0]["private"] is False
    assert "publishing publicly" in summary.plan["visibility"]


def test_summary_hidden_from_other_user(hub, space_sources):
    api = HfApi(endpoint=hub.url, token=hub.token_for("bob"))
    with pytest.raises(SourceError, match="was not found"):
        describe_source(api, parse_model_input(PRIVATE_SOURCE, hub.url), targets=["gguf:Q8_0"], namespace="bob", public=None)


def test_pick_targets_keeps_table_order():
    assert pick_targets(["apple-silicon", "nvidia-gpu"], backends=["gguf"]) == ["gguf:Q4_K_M", "gguf:Q8_0", "gguf:F16"]


def test_pick_targets_reports_missing_backends():
    assert skipped_targets(["browser"], backends=["gguf"]) == ["onnx:webgpu-int4"]
    assert pick_targets(["browser"], backends=["gguf"]) == []


def test_target_choices_cover_every_hardware():
    choices = target_choices(backends=["gguf"])
    for hardware in HARDWARE.values():
        for target in hardware.targets:
            if target.startswith("gguf:"):
                assert target in choices, (hardware.key, target)
    assert all(choice.startswith("gguf:") for choice in choices)


def test_check_targets_normalises_and_rejects():
    assert check_targets(["gguf:q8_0", "gguf:Q8_0", "gguf:q4_k_m"]) == ["gguf:Q8_0", "gguf:Q4_K_M"]
    with pytest.raises(UsageError, match="no targets chosen"):
        check_targets([])
    with pytest.raises(UsageError, match="unknown GGUF type 'IQ9_XS'"):
        check_targets(["gguf:IQ9_XS"])


def test_typed_targets_keep_their_options():
    typed = "gguf:Q4_K_M:imatrix,output=Q8_0  onnx:int4-block-64\nopenvino:int4:group-size=64,ratio=0.8 mlx:4bit-g32 gguf:q8_0"
    assert chosen_targets(["gguf:Q8_0"], typed) == [
        "gguf:Q8_0", "gguf:Q4_K_M:imatrix,output=Q8_0", "onnx:cpu-int4-rtn-block-64-acc-level-4",
        "openvino:int4:group-size=64,ratio=0.8", "mlx:4bit-g32",
    ]
    assert chosen_targets([], "  mlx:bf16 ") == ["mlx:bf16"]


def test_typed_target_error_names_it():
    with pytest.raises(UsageError, match="group-size in openvino:int4:group-size=big must be an integer"):
        chosen_targets(["gguf:Q8_0"], "openvino:int4:group-size=big")
    with pytest.raises(UsageError, match="no targets chosen"):
        chosen_targets([], "   ")


def test_option_help_examples_parse():
    examples = [example for line in TARGET_OPTIONS_HELP.splitlines() if "for example" in line
                for example in re.findall(r"`([a-z]+:[^`]+)`", line.split("for example", 1)[1])]
    assert len(examples) == 6
    assert len(check_targets(examples)) == len(examples)


def test_cli_for_matches_space_choice(hub, space_sources, tmp_path):
    env = {name: value for name, value in os.environ.items() if not name.startswith("HF_TOKEN")}
    env.update({"HF_ENDPOINT": hub.url, "HF_TOKEN": hub.token_for("alice")})
    result = subprocess.run(
        [sys.executable, "-m", "hubquant.cli", "plan", PRIVATE_SOURCE, "--for", "apple-silicon", "--for", "nvidia-gpu", "--push", "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    plan = json.loads(result.stdout)
    planned = [item["target"] for release in plan["releases"] for item in release["files"]]
    # Backends may rename a precision (onnx:int4 names its full variant), so both
    # sides go through the backends' normalisation.
    assert sorted(planned) == sorted(check_targets(pick_targets(["apple-silicon", "nvidia-gpu"])))
