"""Every data-free GGUF type not built elsewhere in the suite, from one
conversion of the tiny Phi-3: each must validate and be the type it names."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from hubquant.pipeline import JobRequest, run_job
from hubquant.toolchains.runner import RUNTIME_DIR

# Target type -> the tensor type its file must contain.
MAIN_TENSOR_TYPE = {
    "Q6_K": "Q6_K", "Q5_K_M": "Q5_K", "Q5_K_S": "Q5_K", "Q5_0": "Q5_0", "Q4_K_S": "Q4_K", "Q4_0": "Q4_0",
    "Q3_K_L": "Q3_K", "Q3_K_M": "Q3_K", "Q3_K_S": "Q3_K", "Q2_K": "Q2_K", "IQ4_XS": "IQ4_XS", "IQ4_NL": "IQ4_NL",
}  # fmt: skip


@pytest.fixture(scope="module")
def every_type(tiny_model, gguf_toolchain, tmp_path_factory):
    out = tmp_path_factory.mktemp("every-type")
    targets = [f"gguf:{name}" for name in MAIN_TENSOR_TYPE]
    result = run_job(JobRequest(source=str(tiny_model("phi-3-mini-4k-instruct")), targets=targets, output_dir=out))
    release = result.releases[0]
    manifest = json.loads((out / release.repo_id / "hubquant.json").read_text())
    return release, {entry["target"]: entry for entry in manifest["artifacts"]}


def test_every_type_built_and_validated(every_type):
    release, artifacts = every_type
    assert release.failed == {}
    assert sorted(artifacts) == sorted(f"gguf:{name}" for name in MAIN_TENSOR_TYPE)
    for target, entry in artifacts.items():
        assert entry["validation"]["status"] == "passed", (target, entry["validation"])


FILE_TYPE_CHECK = """
import json, sys
import gguf
from pathlib import Path
from hubquant_worker.gguf import describe
for path in sys.argv[1:]:
    name = Path(path).stem.rsplit("-", 1)[1]
    recorded = describe(Path(path))["metadata"]["general.file_type"]
    print(json.dumps({"name": name, "recorded": recorded, "expected": gguf.LlamaFileType["MOSTLY_" + name].value}))
"""


def test_files_record_their_llama_cpp_file_type(every_type, gguf_toolchain):
    """The file type in each header is gguf-py's id for the type, so no id in the worker's table is wrong."""
    release, _ = every_type
    files = sorted(Path(release.url).glob("*.gguf"))
    assert len(files) == len(MAIN_TENSOR_TYPE)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(gguf_toolchain.root / "llama.cpp" / "gguf-py"), str(RUNTIME_DIR)]))
    output = subprocess.run([str(gguf_toolchain.python), "-c", FILE_TYPE_CHECK, *map(str, files)],
                            capture_output=True, text=True, env=env, check=True, timeout=300).stdout
    records = [json.loads(line) for line in output.splitlines()]
    assert sorted(record["name"] for record in records) == sorted(MAIN_TENSOR_TYPE)
    for record in records:
        assert record["recorded"] == record["expected"], record


@pytest.mark.parametrize("name", list(MAIN_TENSOR_TYPE))
def test_file_holds_its_tensor_type(every_type, name):
    # On a 2-layer model llama.cpp's mixes give many tensors a larger type,
    # so the type itself need not be the most common one.
    _, artifacts = every_type
    assert MAIN_TENSOR_TYPE[name] in artifacts[f"gguf:{name}"]["facts"]["tensor_types"]
