"""llama.cpp's converter recognises the tiny models' tokenizers.

``convert_hf_to_gguf.py`` identifies a BPE pre-tokenizer by hashing the ids
it gets for a fixed test string and rejects unknown hashes, so a rebuilt
tokenizer that splits text differently from the real one fails here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hubquant import toolchains

# The converter is taken from, in order: $HUBQUANT_LLAMA_CPP_DIR, an installed
# gguf toolchain (not installed by this test), the unpacked sdist that
# development machines keep under /tmp/hq.
DEVELOPMENT_LLAMA_CPP = Path("/tmp/hq/llama_cpp_python-0.3.36/vendor/llama.cpp")

# Model -> (tokenizer.ggml.model, tokenizer.ggml.pre). dbrx and gpt-4o are
# the names llama.cpp gives the cl100k and o200k pre-tokenizers.
EXPECTED = {
    "phi-4": ("gpt2", "dbrx"),
    "phi-4-mini-instruct": ("gpt2", "gpt-4o"),
    "phi-2": ("gpt2", "phi-2"),
    "phi-3-mini-4k-instruct": ("llama", "default"),
    "phi-3.5-mini-instruct": ("llama", "default"),
}


def find_llama_cpp() -> Path | None:
    candidates = []
    if os.environ.get("HUBQUANT_LLAMA_CPP_DIR"):
        candidates.append(Path(os.environ["HUBQUANT_LLAMA_CPP_DIR"]))
    installed = toolchains.find_toolchain(toolchains.get_spec("gguf"))
    if installed is not None:
        candidates.append(installed.root / "llama.cpp")
    candidates.append(DEVELOPMENT_LLAMA_CPP)
    for candidate in candidates:
        if (candidate / "convert_hf_to_gguf.py").is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def vocab_reports(tiny_model_dir, run_reference_script, tmp_path_factory) -> dict:
    llama_cpp = find_llama_cpp()
    if llama_cpp is None:
        pytest.skip(
            "llama.cpp's convert_hf_to_gguf.py not found: set HUBQUANT_LLAMA_CPP_DIR to a llama.cpp "
            f"checkout, install the gguf toolchain, or unpack the llama-cpp-python sdist at {DEVELOPMENT_LLAMA_CPP}"
        )
    request = {
        "llama_cpp_dir": str(llama_cpp),
        "out_dir": str(tmp_path_factory.mktemp("gguf-vocab")),
        "models": {name: str(tiny_model_dir(name)) for name in EXPECTED},
    }
    return run_reference_script("gguf_vocab_check.py", request)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED))
def test_converter_recognises_tokenizer(vocab_reports, name: str) -> None:
    report = vocab_reports[name]
    assert report["returncode"] == 0, report["log_tail"]
    model, pre = EXPECTED[name]
    assert report["keys"]["tokenizer.ggml.model"] == model
    assert report["keys"]["tokenizer.ggml.pre"] == pre


@pytest.mark.slow
def test_converter_reads_phi_4_eos(vocab_reports) -> None:
    # llama.cpp takes eos from tokenizer_config.json (<|im_end|>), not from
    # config.json's eos_token_id 100257.
    assert vocab_reports["phi-4"]["keys"]["tokenizer.ggml.eos_token_id"] == 100265
