"""Benchmark: hubquant's ONNX, OpenVINO and MLX builds against the bare tools, in one run.

On the Phi-3-mini-shaped model of gguf_overhead.py (hidden 3072, intermediate
8192, vocab 32064, 2 layers, about 420M parameters, bf16), for each backend:

- ``bare``: the upstream tool run by hand with the arguments hubquant passes it
  (onnxruntime-genai's model builder, ``optimum-cli export openvino``,
  ``mlx_lm convert``), in hubquant's toolchain for that backend;
- ``hubquant``: ``run_job`` with validation turned off (the build work only);
- ``hubquant-validated``: the full job (only with ``--validated``: MLX's CPU
  build validates a quantized 420M model for hours).

Each variant runs in its own process; the page records wall time and the peak
RSS of the largest process. Usage::

    python benchmarks/backend_overhead.py --out docs/benchmark-results/backends.json onnx openvino mlx
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from gguf_overhead import build_model, measure  # noqa: E402

TARGETS = {"onnx": "onnx:int4", "openvino": "openvino:int4", "mlx": "mlx:4bit"}


def bare_command(backend: str, toolchain, model: Path, out: Path) -> list[str]:
    """Return the upstream tool's own command for the target hubquant builds."""
    if backend == "onnx":
        from hubquant.backends.onnx import PROVIDERS, parse_variant

        variant = parse_variant("int4")
        options = [f"{key}={value}" for key, value in variant.builder_options(tied_source=False).items()]
        return [str(toolchain.python), "-m", "onnxruntime_genai.models.builder", "-i", str(model), "-o", str(out),
                "-p", variant.precision, "-e", PROVIDERS[variant.provider].builder_name,
                "-c", str(out.parent / "builder-cache"), "--extra_options", *options]  # fmt: skip
    if backend == "openvino":
        from hubquant.backends.openvino import resolve_compression

        arguments = resolve_compression("int4", []).export_arguments()
        return [str(toolchain.python), "-m", "optimum.commands.optimum_cli", "export", "openvino",
                "--model", str(model), *arguments, str(out)]  # fmt: skip
    return [str(toolchain.python), "-m", "mlx_lm", "convert", "--hf-path", str(model), "--mlx-path", str(out),
            "-q", "--q-bits", "4", "--q-group-size", "64"]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backends", nargs="*", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the results.")
    parser.add_argument("--validated", action="store_true", help="Also time the validated job.")
    args = parser.parse_args()

    from hubquant import toolchains
    from hubquant.toolchains.runner import worker_environment

    scratch = Path(tempfile.mkdtemp(prefix="hubquant-bench-"))
    model = build_model(scratch / "Phi-3-mini-shaped")
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_TOKEN")}
    report: dict = {
        "model": {"hidden": 3072, "intermediate": 8192, "vocab": 32064, "layers": 2},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "backends": {},
    }
    for backend in args.backends:
        toolchain = toolchains.ensure(backend)
        results = {}
        out = scratch / f"{backend}-bare"
        # The bare tool gets the environment hubquant gives its workers: offline, no token.
        bare_env = worker_environment(scratch / "home")
        bare_env.pop("PYTHONPATH", None)
        results["bare"] = measure(bare_command(backend, toolchain, model, out), [out], bare_env)
        shutil.rmtree(out.parent / "builder-cache", ignore_errors=True)
        shutil.rmtree(out)
        variants = [("hubquant", False)] + ([("hubquant-validated", True)] if args.validated else [])
        for variant, validate in variants:
            work, staged = scratch / f"{backend}-{variant}", scratch / f"{backend}-{variant}-out"
            work.mkdir()
            script = (
                "import sys; from pathlib import Path; from hubquant.pipeline import JobRequest, run_job;"
                f"r = run_job(JobRequest(source={str(model)!r}, targets=[{TARGETS[backend]!r}],"
                f" output_dir=Path({str(staged)!r}), work_dir=Path({str(work)!r}), validate={validate}));"
                "sys.exit(0 if r.ok else 1)"
            )
            results[variant] = measure([sys.executable, "-c", script], [work, staged], env)
            shutil.rmtree(work)
            shutil.rmtree(staged)
        ratios = {f"{name}_over_bare": round(results[name]["seconds"] / results["bare"]["seconds"], 3)
                  for name in results if name != "bare"}  # fmt: skip
        report["backends"][backend] = {"target": TARGETS[backend], "results": results, "ratios": ratios}
        print(json.dumps({backend: report["backends"][backend]}, indent=2), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
