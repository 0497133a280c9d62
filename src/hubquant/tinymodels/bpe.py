"""Rebuild byte-level BPE ``tokenizer.json`` files for Phi-4-mini and Phi-4.

The fixtures lack the real ``tokenizer.json`` of both models (too large for
the source repositories), so this module rebuilds it:

* Phi-4-mini (o200k vocabulary): from the real ``vocab.json`` and
  ``merges.txt``, with the o200k pre-tokenizer regex.
* Phi-4 (cl100k vocabulary): from ``cl100k_base.tiktoken`` ranks, with merges
  derived as transformers' ``TikTokenConverter`` derives them, plus Phi-4's
  added tokens (ids 100256-100351).

Both follow the layout of transformers' tiktoken conversion: no normalizer, a
``Split`` pre-tokenizer (regex, behavior ``Isolated``) followed by
``ByteLevel`` with ``add_prefix_space`` and ``use_regex`` false, a ByteLevel
decoder and post-processor. Only the standard library is used.
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from pathlib import Path

# The pre-tokenizer regexes of tiktoken's o200k_base and cl100k_base encodings
# (tiktoken_ext/openai_public.py), in the form the Hugging Face tokenizers
# library (Oniguruma) accepts. The cl100k pattern is the one transformers'
# TikTokenConverter uses by default (no possessive quantifiers, same matches).
O200K_PATTERN = "|".join(
    [
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)
CL100K_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Map each byte to the printable character GPT-2's byte-level BPE uses for it."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codepoints = printable[:]
    shift = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codepoints.append(256 + shift)
            shift += 1
    return {byte: chr(point) for byte, point in zip(printable, codepoints)}


def byte_level_string(token: bytes) -> str:
    """Encode raw token bytes as a byte-level BPE vocabulary string."""
    table = bytes_to_unicode()
    return "".join(table[byte] for byte in token)


def load_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """Parse a ``.tiktoken`` file: one ``base64(token) rank`` pair per line."""
    ranks: dict[bytes, int] = {}
    for line_number, line in enumerate(path.read_text(encoding="ascii").splitlines(), start=1):
        if not line:
            continue
        try:
            encoded, rank = line.split(" ")
            ranks[base64.b64decode(encoded)] = int(rank)
        except ValueError as error:
            raise ValueError(f"{path}:{line_number}: invalid tiktoken line {line!r}") from error
    return ranks


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Derive BPE merges from tiktoken ranks as transformers' TikTokenConverter does.

    Every split of a multi-byte token into two tokens that are both in the
    vocabulary becomes a merge. Merges are ordered by the rank of the merged
    token, then by the ranks of the left and right pieces.
    """
    merges: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        if len(token) == 1:
            continue
        for split in range(1, len(token)):
            left, right = token[:split], token[split:]
            left_rank = ranks.get(left)
            right_rank = ranks.get(right)
            if left_rank is not None and right_rank is not None:
                merges.append((rank, left_rank, right_rank, left, right))
    merges.sort(key=lambda merge: merge[:3])
    return [(left, right) for _, _, _, left, right in merges]


def added_tokens_from_config(tokenizer_config: dict) -> list[dict]:
    """List the ``added_tokens`` entries of tokenizer.json from tokenizer_config.json.

    Each entry keeps the flags of ``added_tokens_decoder`` (special, lstrip,
    rstrip, normalized, single_word), ordered by id.
    """
    decoder = tokenizer_config.get("added_tokens_decoder", {})
    entries = []
    for token_id in sorted(decoder, key=int):
        flags = decoder[token_id]
        entries.append(
            {
                "id": int(token_id),
                "content": flags["content"],
                "single_word": bool(flags.get("single_word", False)),
                "lstrip": bool(flags.get("lstrip", False)),
                "rstrip": bool(flags.get("rstrip", False)),
                "normalized": bool(flags.get("normalized", False)),
                "special": bool(flags.get("special", False)),
            }
        )
    return entries


def byte_level_tokenizer_json(
    *,
    pattern: str,
    vocab: dict[str, int],
    merges: list[str],
    added_tokens: list[dict],
    ignore_merges: bool,
) -> dict:
    """Assemble a tokenizer.json document for a byte-level BPE with a regex Split."""
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added_tokens,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": pattern},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {
                    "type": "ByteLevel",
                    "add_prefix_space": False,
                    "trim_offsets": True,
                    "use_regex": False,
                },
            ],
        },
        "post_processor": {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": False,
            "use_regex": True,
        },
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": True,
            "use_regex": True,
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": ignore_merges,
            "vocab": vocab,
            "merges": merges,
        },
    }


def read_merges_txt(path: Path) -> list[str]:
    """Read a GPT-2 style merges.txt, skipping the ``#version`` header line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line and not line.startswith("#version")]


def o200k_tokenizer_json(vocab_path: Path, merges_path: Path, tokenizer_config: dict) -> dict:
    """Build the Phi-4-mini tokenizer.json from its vocab.json and merges.txt.

    ``ignore_merges`` is true, as in transformers' tiktoken conversion, so a
    pre-token that is itself in the vocabulary maps to that single id, which
    is what tiktoken does.
    """
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    return byte_level_tokenizer_json(
        pattern=O200K_PATTERN,
        vocab=vocab,
        merges=read_merges_txt(merges_path),
        added_tokens=added_tokens_from_config(tokenizer_config),
        ignore_merges=True,
    )


def cl100k_tokenizer_files(tiktoken_path: Path, tokenizer_config: dict) -> tuple[dict, dict[str, int], list[str]]:
    """Build the Phi-4 tokenizer from cl100k ranks and Phi-4's added tokens.

    Returns ``(tokenizer_json, vocab, merges)``, where ``vocab`` and ``merges``
    are the contents of vocab.json and merges.txt (without its header line).
    The added tokens must not collide with the 100256 cl100k ranks.
    """
    ranks = load_tiktoken_ranks(tiktoken_path)
    vocab = {byte_level_string(token): rank for token, rank in sorted(ranks.items(), key=lambda item: item[1])}
    merges = [f"{byte_level_string(left)} {byte_level_string(right)}" for left, right in merges_from_ranks(ranks)]
    added_tokens = added_tokens_from_config(tokenizer_config)
    colliding = [entry["id"] for entry in added_tokens if entry["id"] < len(ranks)]
    if colliding:
        raise ValueError(f"added token ids {colliding[:5]} overlap the {len(ranks)} cl100k ranks")
    tokenizer_json = byte_level_tokenizer_json(
        pattern=CL100K_PATTERN,
        vocab=vocab,
        merges=merges,
        added_tokens=added_tokens,
        ignore_merges=True,
    )
    return tokenizer_json, vocab, merges
