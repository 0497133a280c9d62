"""Rendering of the GGUF model card.

The golden test pins the complete README.md for the example context in
`card_examples.py`. After an intended change to a template or to the
example, regenerate the golden file and review its diff:

    HUBQUANT_UPDATE_GOLDEN=1 PYTHONPATH=src .venv/bin/python -m pytest tests/cards
"""

from __future__ import annotations

import os
from pathlib import Path

import jinja2
import pytest
import yaml

from hubquant import cards, hardware
from hubquant.cards import GgufCardContext, render_card, validate_card_metadata

GOLDEN = Path(__file__).parent / "golden" / "gguf-card.md"


def split_card(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def test_golden(gguf_context):
    text = render_card("gguf.md.j2", gguf_context)
    if os.environ.get("HUBQUANT_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text, encoding="utf-8")
        pytest.skip(f"rewrote {GOLDEN}")
    assert text == GOLDEN.read_text(encoding="utf-8")


def test_example_context_is_complete(gguf_context):
    assert set(gguf_context) == GgufCardContext.__required_keys__


def test_header_is_metadata(gguf_context):
    metadata, _ = split_card(render_card("gguf.md.j2", gguf_context))
    assert metadata == gguf_context["metadata"]


def test_card_passes_hub_checks(gguf_context):
    assert validate_card_metadata(render_card("gguf.md.j2", gguf_context)) == []


def test_missing_top_level_key(gguf_context):
    del gguf_context["provenance"]
    with pytest.raises(KeyError, match="provenance"):
        render_card("gguf.md.j2", gguf_context)


def test_missing_nested_key(gguf_context):
    del gguf_context["files"][0]["quality"]
    with pytest.raises(jinja2.UndefinedError):
        render_card("gguf.md.j2", gguf_context)


def test_missing_key_in_partial(gguf_context):
    del gguf_context["source"]["license_link"]
    with pytest.raises(jinja2.UndefinedError):
        render_card("gguf.md.j2", gguf_context)


def test_names_source_revision(gguf_context):
    _, body = split_card(render_card("gguf.md.j2", gguf_context))
    assert gguf_context["source"]["sha"] in body
    assert f"({gguf_context['source']['revision_url']})" in body


def test_local_folder_without_base(gguf_context):
    gguf_context["source"].update(
        id=None, sha=None, url=None, revision_url=None, local=True, declared_base_model=None
    )
    _, body = split_card(render_card("gguf.md.j2", gguf_context))
    assert "local folder, which has no Hub identity" in body
    assert "No base model was declared" in body


def test_local_folder_with_declared_base(gguf_context):
    gguf_context["source"].update(
        id=None, sha=None, url=None, revision_url=None, local=True,
        declared_base_model="microsoft/Phi-tiny-MoE-instruct",
    )
    _, body = split_card(render_card("gguf.md.j2", gguf_context))
    assert "declared it as based on `microsoft/Phi-tiny-MoE-instruct`" in body


def test_fallbacks_state_real_types(gguf_context):
    _, body = split_card(render_card("gguf.md.j2", gguf_context))
    assert "| blk.0.ffn\\_down\\_exps.weight | 448 | 256 | Q8\\_0 |" in body
    assert "a mix of F32, Q4\\_K, Q5\\_0, Q6\\_K, Q8\\_0, with 5.01 bits per weight" in body


def test_no_fallback_text_without_fallbacks(gguf_context):
    for file in gguf_context["files"]:
        file["fallbacks"] = []
    _, body = split_card(render_card("gguf.md.j2", gguf_context))
    assert "could not use the quantization" not in body


def test_split_file_lists_parts(gguf_context):
    _, body = split_card(render_card("gguf.md.j2", gguf_context))
    assert "The Q8\\_0 file is split into 2 parts" in body
    assert "Phi-tiny-MoE-instruct-Q8\\_0-00002-of-00002.gguf" in body


def test_split_first_file_in_examples(gguf_context):
    gguf_context["files"].reverse()
    gguf_context["files"][0], gguf_context["files"][1] = (
        gguf_context["files"][1],
        gguf_context["files"][0],
    )
    _, body = split_card(render_card("gguf.md.j2", gguf_context))
    assert "--hf-file Phi-tiny-MoE-instruct-Q8_0-00001-of-00002.gguf" in body
    assert 'additional_files=["Phi-tiny-MoE-instruct-Q8_0-00002-of-00002.gguf"]' in body


def test_forced_file_warns(gguf_context):
    _, body = split_card(render_card("gguf.md.j2", gguf_context))
    assert "**Warning:** Phi-tiny-MoE-instruct-Q4\\_0.gguf failed validation" in body


def test_skipped_checks_explained(gguf_context):
    _, body = split_card(render_card("gguf.md.j2", gguf_context))
    assert "- The conversion, long prompt: the source's 4096-token window" in body


def test_nothing_skipped(gguf_context):
    for check in gguf_context["reference_validation"]["checks"]:
        check["status"] = "passed"
    for file in gguf_context["files"]:
        file["validation"]["checks"] = []
    _, body = split_card(render_card("gguf.md.j2", gguf_context))
    assert "No check was skipped." in body


def test_no_chat_template(gguf_context):
    gguf_context["chat_template"] = None
    gguf_context["prompt_example"] = None
    _, body = split_card(render_card("gguf.md.j2", gguf_context))
    assert "The source has no chat template" in body
    assert "<details>" not in body


def test_no_license(gguf_context):
    gguf_context["source"]["license"] = None
    gguf_context["license_files"] = []
    _, body = split_card(render_card("gguf.md.j2", gguf_context))
    assert "The source card declares no license." in body
    assert "none was copied" in body


def test_ollama_line_per_type(gguf_context):
    _, body = split_card(render_card("gguf.md.j2", gguf_context))
    for file in gguf_context["files"]:
        assert f"ollama run hf.co/{gguf_context['repo_id']}:{file['type']}\n" in body


def test_memory_lists_suitable_files(gguf_context):
    _, body = split_card(render_card("gguf.md.j2", gguf_context))
    section = body.split("## Which file to choose", 1)[1].split("## Validation", 1)[0]
    phone = section.split("**Phones and tablets**", 1)[1].split("- **", 1)[0]
    assert "Q4\\_0.gguf (Q4\\_0, 2.14 GB): needs about 2.57 GB free" in phone
    assert "Q8\\_0" not in phone


def test_templates_dir_in_repo():
    assert (cards.templates_dir() / "gguf.md.j2").is_file()


def test_memory_orders_by_preference(gguf_context):
    _, body = split_card(render_card("gguf.md.j2", gguf_context))
    phone = body.split("**Phones and tablets**", 1)[1].split("- **", 1)[0]
    assert phone.index("Q4\\_0.gguf") < phone.index("Q4\\_K\\_M.gguf")


def test_memory_without_suitable_file(gguf_context):
    gguf_context["memory_guidance"] = hardware.memory_guidance(["browser"])
    _, body = split_card(render_card("gguf.md.j2", gguf_context))
    assert "No file in this release targets this hardware." in body


def test_reference_not_compared(gguf_context):
    gguf_context["reference_validation"].update(
        status="skipped", checks=[], max_abs_diff=None, top1_agreement=None,
        prompts=0, greedy_match=None,
    )
    _, body = split_card(render_card("gguf.md.j2", gguf_context))
    assert "was not compared with the source model" in body
    assert "on 0 prompts" not in body


def test_llama_cpp_not_recorded(gguf_context):
    gguf_context["provenance"].update(llama_cpp_build="", llama_cpp_commit="")
    _, body = split_card(render_card("gguf.md.j2", gguf_context))
    assert "| llama.cpp | build not recorded, commit not recorded |" in body
