"""Toolchain creation: concurrent setup, atomic placement, torch index choice."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from hubquant.toolchains.setup import torch_index_args

SETUP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from hubquant.toolchains.setup import ToolchainSpec, ensure_toolchain
    spec = ToolchainSpec("locktest", sys.argv[1])
    toolchain = ensure_toolchain(spec)
    print(json.dumps({"root": str(toolchain.root)}))
    """
)


def test_concurrent_setup_builds_one_toolchain(tmp_path):
    requirements = tmp_path / "empty.txt"
    requirements.write_text("# no packages\n")
    env = {"HUBQUANT_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "HUBQUANT_TORCH_INDEX_URL": ""}
    processes = [
        subprocess.Popen([sys.executable, "-c", SETUP_SCRIPT, str(requirements)], stdout=subprocess.PIPE, env=env, text=True)
        for _ in range(3)
    ]
    roots = {json.loads(process.communicate(timeout=300)[0])["root"] for process in processes}
    assert all(process.returncode == 0 for process in processes)
    assert len(roots) == 1
    folders = sorted(path.name for path in (tmp_path / "home" / "toolchains").iterdir() if not path.name.endswith(".lock"))
    assert len(folders) == 1
    assert folders[0].startswith("locktest-")


def test_torch_index_defaults_to_cpu_without_gpu(monkeypatch):
    monkeypatch.delenv("HUBQUANT_TORCH_INDEX_URL", raising=False)
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert torch_index_args() == ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]


def test_torch_index_setting_overrides(monkeypatch):
    monkeypatch.setenv("HUBQUANT_TORCH_INDEX_URL", "https://mirror.example/cpu")
    assert torch_index_args() == ["--extra-index-url", "https://mirror.example/cpu"]


def test_torch_index_empty_setting_adds_none(monkeypatch):
    monkeypatch.setenv("HUBQUANT_TORCH_INDEX_URL", "")
    assert torch_index_args() == []


def test_llama_cpp_build_is_portable(gguf_toolchain):
    """The compiled library reports the commit of the release it was built from.
    It has only the CPU features of the portable x86-64 build, none of the build
    machine's own: on a CPU with AVX-512 a native build turns AVX512 on."""
    from hubquant import toolchains
    from hubquant.toolchains.setup import LLAMA_CPP_COMMIT, LLAMA_CPP_BUILD_NUMBER

    info = toolchains.run_step(gguf_toolchain, "gguf", {"op": "build_info"}).data
    assert info["ggml_commit"].startswith(LLAMA_CPP_COMMIT[:7])
    turned_on = {name for name, value in info["features"].items() if value == "1"}
    portable = {"SSE3", "SSSE3", "AVX", "AVX2", "F16C", "FMA", "BMI2", "LLAMAFILE", "OPENMP", "REPACK"}
    assert "AVX2" in turned_on
    assert turned_on <= portable, turned_on - portable
    assert gguf_toolchain.info["llama_cpp"]["build_number"] == LLAMA_CPP_BUILD_NUMBER
