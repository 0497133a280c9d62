"""Source-derived values must render as inert text in the card."""

from __future__ import annotations

import re

import pytest
import yaml
from card_examples import load_source_card

from hubquant.cards import (
    card_metadata,
    escape_markdown,
    fenced_block,
    inline_code,
    markdown_link,
    render_card,
    safe_url,
)

SCRIPT = "<script>alert(1)</script>"
LINK_BREAKOUT = "](javascript:x)"
TABLE_BREAKOUT = "| x |"


def render_body(context: dict) -> str:
    text = render_card("gguf.md.j2", context)
    return text.split("\n---\n", 1)[1]


def unescaped(pattern: str, text: str) -> bool:
    """Whether `pattern` occurs with none of its characters escaped by a backslash."""
    return re.search(r"(?<!\\)" + re.escape(pattern), text) is not None


def outside_code(text: str) -> str:
    """Return `text` without fenced blocks and code spans, whose contents Markdown shows verbatim."""
    text = re.sub(r"^(`{3,})[^\n]*\n.*?^\1$", "", text, flags=re.DOTALL | re.MULTILINE)
    return re.sub(r"(`+)(?!`).+?(?<!`)\1(?!`)", "", text)


def test_outside_code_removes_spans():
    assert outside_code("a `<b>` c\n```\n<i>\n```\nd") == "a  c\n\nd"


def test_md_escapes_html():
    assert escape_markdown(SCRIPT) == "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_md_escapes_link_brackets():
    assert escape_markdown(LINK_BREAKOUT) == "\\](javascript:x)"


def test_md_escapes_table_pipes():
    assert escape_markdown(TABLE_BREAKOUT) == "\\| x \\|"


def test_md_escapes_emphasis_and_code():
    assert escape_markdown("*a* _b_ `c` ~d~ #e") == "\\*a\\* \\_b\\_ \\`c\\` \\~d\\~ \\#e"


def test_md_escapes_backslash_first():
    assert escape_markdown("\\*") == "\\\\\\*"


def test_md_joins_lines():
    assert escape_markdown("a\n| b |\r\nc") == "a \\| b \\| c"


def test_md_escapes_ampersand():
    assert escape_markdown("&lt;") == "&amp;lt;"


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "http://example.com/LICENSE",
        "data:text/html,<b>x</b>",
        "LICENSE",
        "https://",
        "https://exa mple.com",
        "//example.com",
        None,
    ],
)
def test_link_rejects(url):
    assert safe_url(url) is None


@pytest.mark.parametrize(
    "url",
    ["https://huggingface.co/microsoft/phi-2", "http://127.0.0.1:8765/x", "http://localhost/x"],
)
def test_link_accepts(url):
    assert safe_url(url) == url


def test_link_encodes_parentheses():
    assert safe_url("https://a.example/x)(y") == "https://a.example/x%29%28y"


def test_link_falls_back_to_text():
    assert markdown_link("[x](y)", "javascript:x") == "\\[x\\](y)"


def test_link_escapes_label():
    assert markdown_link("a]b", "https://a.example/") == "[a\\]b](https://a.example/)"


def test_code_span_outlasts_backticks():
    assert inline_code("a``b") == "```a``b```"


def test_code_span_pads_edge_backtick():
    assert inline_code("`x") == "`` `x ``"


def test_fence_outlasts_backticks():
    block = fenced_block("````\ncode\n````", "text")
    assert block.startswith("`````text\n")
    assert block.endswith("\n`````")


def test_model_name_inert(gguf_context):
    gguf_context["model_name"] = SCRIPT + LINK_BREAKOUT + TABLE_BREAKOUT
    body = render_body(gguf_context)
    assert "<script" not in body
    assert not unescaped("](javascript", body)
    assert not unescaped("| x |", body)


def test_license_name_inert(gguf_context):
    gguf_context["source"]["license"] = "other"
    gguf_context["metadata"]["license"] = "other"
    gguf_context["metadata"]["license_name"] = SCRIPT + LINK_BREAKOUT
    body = render_body(gguf_context)
    assert "<script" not in body
    assert not unescaped("](javascript", body)


def test_license_link_not_linked(gguf_context):
    gguf_context["source"]["license_link"] = "javascript:alert(1)"
    body = render_body(gguf_context)
    assert "](javascript" not in body
    assert "License text: javascript:alert(1)." in body


def test_source_tags_stay_in_header():
    source = load_source_card("Phi-3.5-mini-instruct")
    source["tags"] = [SCRIPT, LINK_BREAKOUT, TABLE_BREAKOUT]
    metadata = card_metadata(
        source, base_model=None, library_name="gguf", backend_tags=["gguf"], extra_tags=[]
    )
    header = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    assert yaml.safe_load(header)["tags"] == ["gguf", SCRIPT, LINK_BREAKOUT, TABLE_BREAKOUT]


def test_source_tags_not_in_body(gguf_context):
    gguf_context["metadata"]["tags"].append(SCRIPT)
    assert "<script" not in render_body(gguf_context)


def test_table_cells_inert(gguf_context):
    file = gguf_context["files"][0]
    file["fallbacks"][0]["tensor"] = "blk.0 | x | y\n| z |"
    file["validation"]["checks"][0]["detail"] = TABLE_BREAKOUT
    body = render_body(gguf_context)
    assert "blk.0 \\| x \\| y \\| z \\|" in body
    assert not unescaped("| x |", body)


def test_source_fields_inert(gguf_context):
    gguf_context["source"].update(architecture="`x` <b>", dtype=SCRIPT)
    gguf_context["provenance"]["options"]["calibration"] = SCRIPT
    gguf_context["eos_tokens"][0]["text"] = "`<|end|>`"
    body = render_body(gguf_context)
    assert "<script" not in outside_code(body)
    assert "<b>" not in outside_code(body)
    assert "`` `x` <b> ``" in body
    assert "`` `<|end|>` ``" in body


def test_chat_template_fence_holds(gguf_context):
    gguf_context["chat_template"] = "```\n# heading\n```"
    body = render_body(gguf_context)
    assert "````jinja\n```\n# heading\n```\n````" in body


def test_prompt_example_fence_holds(gguf_context):
    gguf_context["prompt_example"] = "<|user|>\n```` x"
    body = render_body(gguf_context)
    assert "`````text\n<|user|>\n```` x\n`````" in body


def test_shell_quotes_repo(gguf_context):
    gguf_context["files"][0]["name"] = "a b;rm -rf ~.gguf"
    body = render_body(gguf_context)
    assert "--hf-file 'a b;rm -rf ~.gguf'" in body
