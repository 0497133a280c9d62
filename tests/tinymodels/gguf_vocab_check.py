"""Convert model folders' vocabularies with llama.cpp and report the GGUF tokenizer keys.

Runs in the reference toolchain. Usage: ``python gguf_vocab_check.py REQUEST_JSON``
with ``{"llama_cpp_dir": ..., "out_dir": ..., "models": {key: model_dir}}``.
For each model it runs ``convert_hf_to_gguf.py --vocab-only`` and reads the
``tokenizer.ggml.*`` keys (except the large token arrays) back with llama.cpp's
own gguf-py. stdout gets ``{key: {"returncode", "log_tail", "keys"}}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

LARGE_KEYS = {"tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.scores"}


def read_tokenizer_keys(path: Path) -> dict:
    from gguf import GGUFReader

    reader = GGUFReader(path)
    keys = {}
    for name, field in reader.fields.items():
        if name.startswith("tokenizer.") and name not in LARGE_KEYS:
            keys[name] = field.contents()
    return keys


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as handle:
        request = json.load(handle)
    llama_cpp = Path(request["llama_cpp_dir"])
    gguf_py = llama_cpp / "gguf-py"
    if gguf_py.is_dir():
        sys.path.insert(0, str(gguf_py))
    env = dict(os.environ)
    if gguf_py.is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(gguf_py), env.get("PYTHONPATH")]))

    reports = {}
    for key, model_dir in request["models"].items():
        out_file = Path(request["out_dir"]) / f"{key}.vocab.gguf"
        result = subprocess.run(
            [sys.executable, str(llama_cpp / "convert_hf_to_gguf.py"), "--vocab-only", "--outfile", str(out_file), model_dir],
            capture_output=True,
            text=True,
            env=env,
        )
        report = {"returncode": result.returncode, "log_tail": (result.stdout + result.stderr)[-3000:]}
        if result.returncode == 0:
            report["keys"] = read_tokenizer_keys(out_file)
        reports[key] = report
    json.dump(reports, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
