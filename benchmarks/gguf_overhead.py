"""Benchmark: hubquant's GGUF job against the bare llama.cpp tools, in one run.

Variants, each in its own process on the same Phi-3-mini-shaped model (hidden
3072, intermediate 8192, vocab 32064, 2 layers, about 420M parameters):

- ``bare``: llama.cpp's ``convert_hf_to_gguf.py`` once, then one
  ``llama_model_quantize`` call per type (what a careful user scripts by hand).
- ``single``: one convert + quantize per type, as single-type tools do.
- ``hubquant``: ``hubquant run`` with validation turned off (conversion work only).
- ``hubquant-validated``: the full job, with every check.

For each it records wall time, the peak RSS of its largest process, and the peak
disk use of its work folder. Usage::

    python benchmarks/gguf_overhead.py --out docs/benchmark-results/gguf.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TYPES = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0"]

BARE_SCRIPT = """
import ctypes, subprocess, sys
import llama_cpp
converter, source, work = sys.argv[1], sys.argv[2], sys.argv[3]
types = sys.argv[4].split(",")
per_type_convert = sys.argv[5] == "1"
ftypes = {"Q8_0": 7, "Q6_K": 18, "Q5_K_M": 17, "Q4_K_M": 15, "Q4_0": 2}

def convert(out):
    subprocess.run([sys.executable, converter, source, "--outtype", "bf16", "--outfile", out],
                   check=True, capture_output=True)

def quantize(src, out, name):
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftypes[name]
    assert llama_cpp.llama_model_quantize(src.encode(), out.encode(), ctypes.byref(params)) == 0

if per_type_convert:
    for name in types:
        convert(f"{work}/model-BF16.gguf")
        quantize(f"{work}/model-BF16.gguf", f"{work}/model-{name}.gguf", name)
        subprocess.run(["rm", "-f", f"{work}/model-BF16.gguf"], check=True)
else:
    convert(f"{work}/model-BF16.gguf")
    for name in types:
        quantize(f"{work}/model-BF16.gguf", f"{work}/model-{name}.gguf", name)
"""


def folder_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


def measure(command: list[str], watched: list[Path], env: dict) -> dict:
    """Run ``command``; return wall seconds, peak child RSS and peak disk of ``watched``."""
    peak_disk = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal peak_disk
        while not done.is_set():
            peak_disk = max(peak_disk, sum(folder_bytes(p) for p in watched))
            time.sleep(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    done.set()
    poller.join()
    stderr = process.stderr.read() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[:3]} failed:\n{stderr[-3000:]}")
    # ru_maxrss is in KiB on Linux and covers the largest waited-for descendant.
    return {"seconds": round(elapsed, 2), "peak_rss_bytes": usage.ru_maxrss * 1024, "peak_disk_bytes": peak_disk}


def build_model(dest: Path) -> Path:
    """Build the Phi-3-mini-shaped model in a child process and return its folder.

    Linux carries a process's peak RSS over fork and exec, so a parent that held
    the model's arrays would set a floor under every variant's measured peak.
    """
    script = (
        "import sys; from pathlib import Path; from hubquant.tinymodels import build_tiny_model;"
        "build_tiny_model('phi-3-mini-4k-instruct', Path(sys.argv[1]), hidden_size=3072, intermediate_size=8192)"
    )
    subprocess.run([sys.executable, "-c", script, str(dest)], check=True)
    return dest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the results.")
    parser.add_argument("--work", type=Path, default=None, help="Scratch folder (default: a temp folder).")
    args = parser.parse_args()

    from hubquant import toolchains

    gguf = toolchains.ensure("gguf")
    toolchains.ensure("reference")
    scratch = Path(tempfile.mkdtemp(prefix="hubquant-bench-", dir=args.work))
    model = build_model(scratch / "Phi-3-mini-shaped")
    converter = str(gguf.root / "llama.cpp" / "convert_hf_to_gguf.py")
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_TOKEN")}
    env["PYTHONPATH"] = str(gguf.root / "llama.cpp" / "gguf-py")
    results: dict = {}

    for variant, per_type in (("bare", "0"), ("single", "1")):
        work = scratch / variant
        work.mkdir()
        command = [str(gguf.python), "-c", BARE_SCRIPT, converter, str(model), str(work), ",".join(TYPES), per_type]
        results[variant] = measure(command, [work], env)
        shutil.rmtree(work)

    for variant, validate in (("hubquant", False), ("hubquant-validated", True)):
        work = scratch / variant
        out = scratch / f"{variant}-out"
        work.mkdir()
        script = (
            "import sys; from pathlib import Path; from hubquant.pipeline import JobRequest, run_job;"
            f"r = run_job(JobRequest(source={str(model)!r}, targets={[f'gguf:{t}' for t in TYPES]!r},"
            f" output_dir=Path({str(out)!r}), work_dir=Path({str(work)!r}), validate={validate}));"
            "sys.exit(0 if r.ok else 1)"
        )
        job_env = dict(env)
        job_env.pop("PYTHONPATH")
        results[variant] = measure([sys.executable, "-c", script], [work, out], job_env)
        shutil.rmtree(work)
        shutil.rmtree(out)

    bare, single, ours = results["bare"], results["single"], results["hubquant"]
    report = {
        "model": {"hidden": 3072, "intermediate": 8192, "vocab": 32064, "layers": 2, "types": TYPES},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "results": results,
        "ratios": {
            "hubquant_over_bare": round(ours["seconds"] / bare["seconds"], 3),
            "hubquant_over_single_type_runs": round(ours["seconds"] / single["seconds"], 3),
            "validated_over_bare": round(results["hubquant-validated"]["seconds"] / bare["seconds"], 3),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
