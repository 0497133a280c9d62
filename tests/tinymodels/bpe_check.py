"""Compare a rebuilt tokenizer.json with tiktoken's encoding algorithm, as JSON.

Runs in the reference toolchain (it needs the ``tokenizers`` and ``regex``
packages). Usage: ``python bpe_check.py REQUEST_JSON`` with

    {"tokenizer_json": ..., "encoding": "cl100k" | "o200k",
     "ranks": {"tiktoken": path} | {"vocab_json": path, "max_id": n},
     "texts": [...]}

The reference encoder below reimplements tiktoken's algorithm (regex split
with tiktoken's own pattern, then merging the adjacent pair whose merged
bytes have the lowest rank). It shares no code with the rebuild, so a wrong
merge list, regex or byte mapping shows up as a mismatch. stdout gets
``{"checked": n, "mismatches": [...]}``.
"""

from __future__ import annotations

import base64
import json
import sys

import regex
from tokenizers import Tokenizer

# tiktoken's own split patterns for the two encodings (tiktoken_ext/
# openai_public.py), deliberately not the Oniguruma forms the rebuild uses.
TIKTOKEN_PATTERNS = {
    "cl100k": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
    "o200k": "|".join(
        [
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]
    ),
}


def byte_decoder() -> dict[str, int]:
    """Invert GPT-2's byte-to-character table (written out independently here)."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    table = {byte: chr(byte) for byte in printable}
    shift = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + shift)
            shift += 1
    return {char: byte for byte, char in table.items()}


def load_ranks(source: dict) -> dict[bytes, int]:
    if "tiktoken" in source:
        ranks = {}
        with open(source["tiktoken"], encoding="ascii") as handle:
            for line in handle:
                if line.strip():
                    token, rank = line.split()
                    ranks[base64.b64decode(token)] = int(rank)
        return ranks
    decoder = byte_decoder()
    with open(source["vocab_json"], encoding="utf-8") as handle:
        vocab = json.load(handle)
    return {bytes(decoder[char] for char in token): rank for token, rank in vocab.items() if rank < source["max_id"]}


def bpe(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    parts = [piece[index : index + 1] for index in range(len(piece))]
    while len(parts) > 1:
        best_rank, best_index = None, None
        for index in range(len(parts) - 1):
            rank = ranks.get(parts[index] + parts[index + 1])
            if rank is not None and (best_rank is None or rank < best_rank):
                best_rank, best_index = rank, index
        if best_index is None:
            break
        parts[best_index : best_index + 2] = [parts[best_index] + parts[best_index + 1]]
    return [ranks[part] for part in parts]


def tiktoken_encode(text: str, pattern: str, ranks: dict[bytes, int]) -> list[int]:
    ids: list[int] = []
    for match in regex.finditer(pattern, text):
        piece = match.group().encode("utf-8")
        if piece in ranks:
            ids.append(ranks[piece])
        else:
            ids.extend(bpe(piece, ranks))
    return ids


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as handle:
        request = json.load(handle)
    ranks = load_ranks(request["ranks"])
    pattern = TIKTOKEN_PATTERNS[request["encoding"]]
    tokenizer = Tokenizer.from_file(request["tokenizer_json"])
    mismatches = []
    for text in request["texts"]:
        expected = tiktoken_encode(text, pattern, ranks)
        actual = tokenizer.encode(text, add_special_tokens=False).ids
        decoded = tokenizer.decode(actual, skip_special_tokens=False)
        if actual != expected or decoded != text:
            mismatches.append({"text": text, "expected": expected, "actual": actual, "decoded": decoded})
    json.dump({"checked": len(request["texts"]), "mismatches": mismatches}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
