"""The extra setup step of the OpenVINO toolchain: optimum-intel without torchvision.

optimum-intel 2.2.0 declares torchvision, which its text-generation export does
not use. The torchvision wheel that PyPI serves for Linux is a CUDA build, and
next to the CPU torch of the toolchain it breaks ``import transformers``
("operator torchvision::nms does not exist"). So the requirement file pins
every other package and this step adds optimum-intel with ``--no-deps``, then
checks that the modules the worker uses import.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from hubquant.errors import ToolchainError
from hubquant.toolchains.setup import _pip

OPTIMUM_INTEL_VERSION = "2.2.0"

# Modules the worker (hubquant_worker.openvino) and optimum-cli import.
_REQUIRED_MODULES = (
    "transformers",
    "optimum.intel.openvino",
    "optimum.exporters.openvino",
    "nncf",
    "openvino",
    "openvino_tokenizers",
    "openvino_genai",
)

# Settings that change the installed toolchain, so they go into its digest.
SETTINGS = {"optimum-intel": OPTIMUM_INTEL_VERSION, "optimum-intel-install": "no-deps"}


def setup_optimum_intel(staging: Path, python: Path) -> dict:
    """Install optimum-intel without its dependencies and check the imports."""
    _pip(python, ["install", "--no-deps", f"optimum-intel=={OPTIMUM_INTEL_VERSION}"])
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    # CI=true keeps OpenVINO's telemetry from starting during the check.
    result = subprocess.run(
        [str(python), "-c", script, *_REQUIRED_MODULES],
        capture_output=True,
        text=True,
        env={"CI": "true", "HOME": str(staging), "PATH": "/usr/bin:/bin"},
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-10:])
        raise ToolchainError(
            f"the OpenVINO toolchain installed, but its modules do not import:\n{tail}"
        )
    return {"openvino": {"optimum_intel": OPTIMUM_INTEL_VERSION, "left_out": ["torchvision"]}}
