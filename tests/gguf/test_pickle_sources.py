"""Sources with pickle weights (pytorch_model.bin): rejected unless the user opts
in, then loaded only through weights-only loaders, so a pickle that carries
code never runs it."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from hubquant.errors import SourceError
from hubquant.pipeline import JobRequest, run_job

# Turns model.safetensors into pytorch_model.bin. With a marker path, the state
# dict also contains an object whose unpickling would create that file.
TO_PICKLE = """
import os, sys, torch
from safetensors.torch import load_file
folder, marker = sys.argv[1], sys.argv[2]
state = load_file(os.path.join(folder, "model.safetensors"))
class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {marker}",))
if marker:
    state["payload"] = Payload()
torch.save(state, os.path.join(folder, "pytorch_model.bin"))
os.remove(os.path.join(folder, "model.safetensors"))
"""


def pickle_source(reference_toolchain, folder, destination, marker: str = ""):
    shutil.copytree(folder, destination)
    subprocess.run([str(reference_toolchain.python), "-c", TO_PICKLE, str(destination), marker], check=True, timeout=300)
    return destination


def test_pickle_source_rejected_without_opt_in(reference_toolchain, tiny_model, tmp_path):
    folder = pickle_source(reference_toolchain, tiny_model("phi-3-mini-4k-instruct"), tmp_path / "phi-pickle")
    with pytest.raises(SourceError, match="pass --allow-pickle"):
        run_job(JobRequest(source=str(folder), targets=["gguf:Q8_0"], output_dir=tmp_path / "out"))


def test_pickle_source_with_opt_in_built(reference_toolchain, tiny_model, tmp_path):
    folder = pickle_source(reference_toolchain, tiny_model("phi-3-mini-4k-instruct"), tmp_path / "phi-pickle")
    result = run_job(JobRequest(source=str(folder), targets=["gguf:Q8_0"], output_dir=tmp_path / "out", allow_pickle=True))
    assert result.ok, result.releases[0].failed
    assert result.releases[0].validation, "the transformers reference did not run"


@pytest.mark.parametrize("reference", ["transformers", "skipped"])
def test_code_in_pickle_never_runs(reference_toolchain, tiny_model, tmp_path, monkeypatch, reference):
    """Both loaders reject it: transformers for the reference, and llama.cpp's
    converter when the reference is skipped for lack of memory."""
    if reference == "skipped":
        monkeypatch.setattr("hubquant.pipeline.available_memory", lambda: 1)
    marker = tmp_path / "code-ran"
    folder = pickle_source(reference_toolchain, tiny_model("phi-3-mini-4k-instruct"), tmp_path / "phi-evil", str(marker))
    with pytest.raises(Exception, match="Weights only load failed|weights_only") as raised:
        result = run_job(JobRequest(source=str(folder), targets=["gguf:Q8_0"], output_dir=tmp_path / "out", allow_pickle=True))
        assert not result.ok, "the job accepted a pickle that carries code"
        raise AssertionError(result.releases[0].failed)
    assert "posix.system" in str(raised.value) or "system" in str(raised.value)
    assert not marker.exists()
