"""The rebuilt Phi-4-mini and Phi-4 tokenizers against tiktoken's algorithm.

``bpe_check.py`` encodes each text twice: with an independent
reimplementation of tiktoken (its own split regex, rank-based merging), and
with the rebuilt tokenizer.json through the ``tokenizers`` library. The ids
must agree.
"""

from __future__ import annotations

import re

import pytest

from hubquant.tinymodels.bpe import merges_from_ranks
from hubquant.tinymodels.build import FILES_DIR

EDGE_CASES = [
    "Hello world",
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n",
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL",
    "3 33 333 3333 33333 333333 3.3 3..3 3...3 1,000,000.50",
    "🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙",
    "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български",
    "''''''```````\"\"\"\"......!!!!!!?????? path/to/file.txt //comment",
    "CamelCaseWord HTTPServer iPhone ÉCOLE Ǆemal ǅungla",
    "def f(x):\n\treturn x ** 2  # square\r\n\r\n",
    "trailing spaces   ",
]


def corpus() -> list[str]:
    """Edge cases plus the paragraphs of the packaged Phi model cards (real English prose).

    Paragraphs with ``<|...|>`` markers are left out: the rebuilt tokenizers
    map their added tokens to single ids, which plain tiktoken encoding does
    not (test_transformers checks the added tokens).
    """
    texts = list(EDGE_CASES)
    for card in ("phi-2/README.md", "Phi-tiny-MoE-instruct/README.md", "Phi-3-mini-128k-instruct.2024-05/README.md"):
        text = (FILES_DIR / card).read_text(encoding="utf-8")
        texts += [paragraph for paragraph in re.split(r"\n\s*\n", text) if paragraph.strip() and "<|" not in paragraph]
    return texts


def test_merges_from_ranks_toy() -> None:
    ranks = {b"a": 0, b"b": 1, b"c": 2, b"ab": 3, b"bc": 4, b"abc": 5}
    # "abc" splits as a+bc and as ab+c. Both are listed, ordered by piece ranks.
    assert merges_from_ranks(ranks) == [(b"a", b"b"), (b"b", b"c"), (b"a", b"bc"), (b"ab", b"c")]


@pytest.mark.parametrize(
    ("name", "encoding", "ranks"),
    [
        ("phi-4", "cl100k", {"tiktoken": str(FILES_DIR / "_bpe-bases/cl100k_base.tiktoken")}),
        # o200k ids are its tiktoken ranks. Ids from 199998 on are special or filler.
        ("phi-4-mini-instruct", "o200k", {"vocab_json": str(FILES_DIR / "Phi-4-mini-instruct/vocab.json"), "max_id": 199998}),
    ],
)
def test_rebuilt_matches_tiktoken(all_tiny_models, run_reference_script, name: str, encoding: str, ranks: dict) -> None:
    texts = corpus()
    report = run_reference_script(
        "bpe_check.py",
        {
            "tokenizer_json": str(all_tiny_models[name] / "tokenizer.json"),
            "encoding": encoding,
            "ranks": ranks,
            "texts": texts,
        },
    )
    assert report["checked"] == len(texts)
    assert report["mismatches"] == []
