"""The GGUF worker reads file headers itself, because gguf-py's reader takes
over a second per file with a 32k vocabulary. It must read what gguf-py reads."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from hubquant.pipeline import JobRequest, run_job

HERE = Path(__file__).resolve().parent
RUNTIME = Path(__file__).resolve().parents[2] / "src" / "hubquant" / "toolchains" / "runtime"


def test_header_reader_matches_gguf_py(tiny_model, gguf_toolchain, tmp_path):
    files = []
    for name, targets, max_bytes in (
        ("phi-2", ["gguf:Q4_K_M", "gguf:F16"], 50 * 10**9),
        ("phi-3-mini-4k-instruct", ["gguf:Q8_0"], 10 * 10**6),  # split into parts
    ):
        # Only the files matter here, so the job skips validation.
        result = run_job(JobRequest(source=str(tiny_model(name)), targets=targets, output_dir=tmp_path / name,
                                    max_file_bytes=max_bytes, validate=False))
        assert result.ok, result.releases[0].failed
        files += sorted((tmp_path / name).rglob("*.gguf"))
    assert any("-of-" in path.name for path in files)

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(gguf_toolchain.root / "llama.cpp" / "gguf-py"), str(RUNTIME)]))
    output = subprocess.run([str(gguf_toolchain.python), str(HERE / "describe_check.py"), *map(str, files)],
                            capture_output=True, text=True, env=env, timeout=600, check=True).stdout
    checked = [json.loads(line) for line in output.splitlines()]
    assert len(checked) == len(files)
    for record in checked:
        assert record["differences"] == [], record
    assert max(record["vocab_tokens"] for record in checked) > 32000
