"""The README's first command, run as written on a machine without a Hub."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def first_command_lines() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## First command (no Hub needed)", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_readme_first_command_stages_release(tmp_path):
    lines = first_command_lines()
    assert len(lines) == 2
    venv_bin = Path(sys.executable).parent
    # Any Hub request would go to a closed port and fail the run.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_TOKEN", "HUGGING"))}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{unused_port()}"
    for line in lines:
        words = shlex.split(line)
        assert words[0] == ".venv/bin/hubquant", line
        words[0] = str(venv_bin / "hubquant")
        result = subprocess.run(words, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{line}\n{result.stderr[-3000:]}"
    release = tmp_path / "releases" / "tiny-phi3-GGUF"
    assert sorted(path.name for path in release.glob("*.gguf")) == ["tiny-phi3-Q4_K_M.gguf", "tiny-phi3-Q8_0.gguf"]
    assert (release / "README.md").is_file()
    manifest = json.loads((release / "hubquant.json").read_text())
    assert manifest["targets"] == ["gguf:Q4_K_M", "gguf:Q8_0"]
    assert all(entry["validation"]["status"] == "passed" for entry in manifest["artifacts"])
