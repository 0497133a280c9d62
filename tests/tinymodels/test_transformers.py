"""Tiny models in transformers: loading, generation and tokenizer ids.

All models run through one subprocess of the reference toolchain
(``hf_check.py``), so torch and transformers are imported once.
"""

from __future__ import annotations

import pytest

from hubquant.tinymodels import TINY_MODELS

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hello world!"},
    {"role": "assistant", "content": "Hi."},
    {"role": "user", "content": "Again"},
]
# phi-2 has no chat template, so its prompt uses the QA format of its model card.
PHI_2_PROMPT = "Instruct: Hello world!\nOutput:"

# Token ids of the real tokenizers. Special token ids come from the real
# tokenizer configs. "Hello" and " world" are 15043, 3186 in Llama 2's
# SentencePiece model, 15496, 995 in GPT-2, 9906, 1917 in cl100k and
# 13225, 2375 in o200k. Longer prompts are pinned as the real tokenizer
# files encode them.
PHI_3_CHAT_IDS = [32006, 887, 526, 1935, 344, 29889, 32007, 32010, 15043, 3186, 29991, 32007,
                  32001, 6324, 29889, 32007, 32010, 11454, 32007, 32001]
# Phi-3's role tokens have rstrip=True, so encoding absorbs the newline
# after each one and decoding cannot restore it. The real tokenizer behaves
# the same way.
PHI_3_CHAT_DECODED = ("<|system|> You are terse.<|end|><|user|> Hello world!<|end|><|assistant|> Hi.<|end|>"
                      "<|user|> Again<|end|><|assistant|>")
PHI_3_2024_05_CHAT_IDS = [1, 32010, 15043, 3186, 29991, 32007, 32001, 6324, 29889, 32007, 32010, 11454, 32007, 32001]

PHI_3_TEXTS = {"Hello world": [15043, 3186], "Hello world<|end|>": [15043, 3186, 32007],
               "Hello<|endoftext|>": [15043, 32000]}

EXPECTED = {
    "phi-3-mini-4k-instruct": {"chat_ids": PHI_3_CHAT_IDS, "decoded": PHI_3_CHAT_DECODED, "texts": PHI_3_TEXTS},
    "phi-3-mini-4k-instruct-sharded": {"chat_ids": PHI_3_CHAT_IDS, "decoded": PHI_3_CHAT_DECODED, "texts": PHI_3_TEXTS},
    "phi-3-mini-128k-instruct": {"chat_ids": PHI_3_CHAT_IDS, "decoded": PHI_3_CHAT_DECODED, "texts": PHI_3_TEXTS},
    "phi-3-mini-128k-instruct-2024-05": {
        "chat_ids": PHI_3_2024_05_CHAT_IDS,
        "decoded": "<s><|user|> Hello world!<|end|><|assistant|> Hi.<|end|><|user|> Again<|end|><|assistant|>",
        "texts": PHI_3_TEXTS,
    },
    "phi-3.5-mini-instruct": {"chat_ids": PHI_3_CHAT_IDS, "decoded": PHI_3_CHAT_DECODED, "texts": PHI_3_TEXTS},
    "phi-tiny-moe-instruct": {"chat_ids": PHI_3_CHAT_IDS, "decoded": PHI_3_CHAT_DECODED, "texts": PHI_3_TEXTS},
    "phi-4-mini-instruct": {
        # <|system|> 200022, <|end|> 200020, <|user|> 200021, <|assistant|> 200019.
        "chat_ids": [200022, 3575, 553, 28410, 13, 200020, 200021, 13225, 2375, 0, 200020, 200019, 12194, 13,
                     200020, 200021, 46687, 200020, 200019],
        "decoded": None,
        "texts": {"Hello world": [13225, 2375], "Hello world<|endoftext|>": [13225, 2375, 199999],
                  "<|endofprompt|>": [200018]},
    },
    "phi-4": {
        # <|im_start|> 100264, <|im_sep|> 100266, <|im_end|> 100265. In cl100k,
        # system is 9125, user 882 and assistant 78191.
        "chat_ids": [100264, 9125, 100266, 2675, 527, 51637, 13, 100265, 100264, 882, 100266, 9906, 1917, 0,
                     100265, 100264, 78191, 100266, 13347, 13, 100265, 100264, 882, 100266, 31485, 100265,
                     100264, 78191, 100266],
        "decoded": None,
        "texts": {"Hello world": [9906, 1917], "Hello world<|im_end|>": [9906, 1917, 100265],
                  "<|endoftext|>": [100257]},
    },
    "phi-2": {
        "chat_ids": None,
        "decoded": None,
        "texts": {"Hello world": [15496, 995], "Hello world<|endoftext|>": [15496, 995, 50256]},
    },
}

# Texts a byte-level BPE must decode back unchanged.
ROUND_TRIP_TEXTS = [
    "Hello world",
    "  two leading spaces, a\ttab and\r\nCRLF\n\n",
    "I've been 'told he's there, 'RE you sure? We'Ve a'lL",
    "3.3 3..3 333333333 1,000,000",
    "🚀 (normal) 😶\u200d🌫️ ✅ 🦙🦙",
    "我想在apple工作1314151天～ нещо на Български",
    "def f(x):\n    return x ** 2  # square\n",
]

EXTREME_PROBES = {
    "phi-3-mini-4k-instruct": ("model.layers.0.mlp.down_proj.weight", [0, 0]),
    # transformers fuses the per-expert w2 tensors into experts.down_proj.
    "phi-tiny-moe-instruct": ("model.layers.0.mlp.experts.down_proj", [0, 0, 0]),
}


@pytest.fixture(scope="session")
def hf_reports(all_tiny_models, tiny_model_dir, run_reference_script) -> dict[str, dict]:
    requests = []
    for name, folder in all_tiny_models.items():
        texts = list(EXPECTED[name]["texts"])
        if TINY_MODELS[name].tokenizer_build or name == "phi-2":
            texts += ROUND_TRIP_TEXTS
        requests.append(
            {"key": name, "model_dir": str(folder), "messages": MESSAGES, "prompt": PHI_2_PROMPT, "texts": texts}
        )
    for name, probe in EXTREME_PROBES.items():
        folder = tiny_model_dir(name, extreme_weight=1e5)
        requests.append(
            {"key": f"{name}+extreme", "model_dir": str(folder), "messages": MESSAGES, "texts": [], "probes": [probe]}
        )
    return run_reference_script("hf_check.py", requests)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_loads_and_generates(hf_reports, name: str) -> None:
    report = hf_reports[name]
    architecture = {"Phi3ForCausalLM": "Phi3ForCausalLM", "PhiMoEForCausalLM": "PhimoeForCausalLM",
                    "PhiForCausalLM": "PhiForCausalLM"}[TINY_MODELS[name].architecture]
    assert report["model_class"] == architecture
    assert report["logits_finite"]
    assert len(report["generated_ids"]) == 8
    assert all(0 <= token < report["logits_shape"][-1] for token in report["generated_ids"])


def test_phi_4_mini_tied_in_transformers(hf_reports) -> None:
    assert hf_reports["phi-4-mini-instruct"]["tied_embeddings"] is True
    assert hf_reports["phi-4"]["tied_embeddings"] is False


@pytest.mark.parametrize("name", [name for name, facts in EXPECTED.items() if facts["chat_ids"]])
def test_chat_prompt_ids(hf_reports, name: str) -> None:
    report = hf_reports[name]
    assert report["has_chat_template"]
    assert report["prompt_ids"] == EXPECTED[name]["chat_ids"]
    expected_decoded = EXPECTED[name]["decoded"] or report["prompt"]
    assert report["prompt_decoded"] == expected_decoded


def test_phi_2_has_no_chat_template(hf_reports) -> None:
    assert hf_reports["phi-2"]["has_chat_template"] is False


@pytest.mark.parametrize("name", list(EXPECTED))
def test_known_token_ids(hf_reports, name: str) -> None:
    results = {result["text"]: result for result in hf_reports[name]["texts"]}
    for text, ids in EXPECTED[name]["texts"].items():
        assert results[text]["ids"] == ids, text
        assert results[text]["decoded"] == text, text


@pytest.mark.parametrize("name", ["phi-4-mini-instruct", "phi-4", "phi-2"])
def test_byte_level_round_trip(hf_reports, name: str) -> None:
    results = {result["text"]: result for result in hf_reports[name]["texts"]}
    for text in ROUND_TRIP_TEXTS:
        assert results[text]["decoded"] == text, repr(text)


@pytest.mark.parametrize("name", list(EXTREME_PROBES))
def test_extreme_weight_loads(hf_reports, name: str) -> None:
    report = hf_reports[f"{name}+extreme"]
    tensor_name, _ = EXTREME_PROBES[name]
    assert report["probes"][tensor_name] == 99840.0
    assert report["logits_finite"]
