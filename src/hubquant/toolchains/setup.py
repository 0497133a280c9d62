"""Create the pinned virtual environment of a backend (a toolchain).

A toolchain lives in ``<cache>/toolchains/<name>-<digest>``. The digest covers the
requirement file, the extra build settings and the Python version, so a changed pin
gives a new folder instead of mutating an old one. Creation is safe when several
workers start at once: they serialise on a file lock, build into a temporary folder
and rename it into place, so nobody ever sees a half-installed toolchain.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from hubquant.errors import ToolchainError
from hubquant.paths import cache_home

log = logging.getLogger(__name__)

# The PyTorch index that serves CPU-only wheels. Without it, a plain ``torch`` pin
# resolves to a CUDA build of several GB on Linux.
DEFAULT_TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_INDEX_VARIABLE = "HUBQUANT_TORCH_INDEX_URL"

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
# The llama.cpp release vendored by llama-cpp-python 0.3.36 (its CHANGELOG names
# commit 0c1e57098, which is release tag b11312). An sdist has no git history, so
# llama.cpp's CMake would otherwise record build 0 and commit "unknown".
LLAMA_CPP_BUILD_NUMBER = 11312
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"


@dataclass(frozen=True)
class ToolchainSpec:
    """A backend environment: its pinned requirements and any extra build step."""

    name: str
    requirements: str
    extra_setup: Callable[[Path, Path], dict] | None = None
    settings: dict = field(default_factory=dict)

    def requirements_text(self) -> str:
        if Path(self.requirements).is_absolute():
            return Path(self.requirements).read_text()
        package = resources.files("hubquant.toolchains") / "requirements"
        return (package / self.requirements).read_text()

    def digest(self) -> str:
        hasher = hashlib.sha256()
        hasher.update(self.requirements_text().encode())
        hasher.update(json.dumps(self.settings, sort_keys=True).encode())
        hasher.update(f"{sys.version_info.major}.{sys.version_info.minor}".encode())
        return hasher.hexdigest()[:12]


@dataclass(frozen=True)
class Toolchain:
    """An installed toolchain: its folder, interpreter and recorded versions."""

    name: str
    root: Path
    info: dict

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"

    @property
    def versions(self) -> dict[str, str]:
        return self.info.get("versions", {})


def toolchains_dir() -> Path:
    return cache_home() / "toolchains"


def torch_index_args() -> list[str]:
    """Return pip arguments that point at the CPU torch index, unless a GPU is present.

    ``HUBQUANT_TORCH_INDEX_URL`` overrides the index; an empty value adds none (for
    machines whose package index already serves a CPU build).
    """
    configured = os.environ.get(TORCH_INDEX_VARIABLE)
    if configured is not None:
        return ["--extra-index-url", configured] if configured else []
    if shutil.which("nvidia-smi"):
        return []
    return ["--extra-index-url", DEFAULT_TORCH_CPU_INDEX]


def _pip(python: Path, args: list[str], *, env: dict | None = None) -> None:
    command = [str(python), "-m", "pip", "--disable-pip-version-check", *args]
    log.info("running %s", " ".join(command[1:]))
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-25:])
        raise ToolchainError(
            f"pip failed while installing a toolchain (exit {result.returncode}):\n"
            f"{tail}"
        )


def _installed_versions(python: Path) -> dict[str, str]:
    script = (
        "import json, importlib.metadata as m;"
        "print(json.dumps({d.metadata['Name'].lower(): d.version "
        "for d in m.distributions()}))"
    )
    output = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output)


def find_toolchain(spec: ToolchainSpec) -> Toolchain | None:
    """Return the installed toolchain for ``spec``, or None when it is not set up."""
    root = toolchains_dir() / f"{spec.name}-{spec.digest()}"
    info_file = root / "toolchain.json"
    if not info_file.is_file():
        return None
    return Toolchain(spec.name, root, json.loads(info_file.read_text()))


def ensure_toolchain(spec: ToolchainSpec) -> Toolchain:
    """Return the toolchain for ``spec``, creating it first when it is missing."""
    existing = find_toolchain(spec)
    if existing is not None:
        return existing

    base = toolchains_dir()
    base.mkdir(parents=True, exist_ok=True)
    lock_path = base / f".{spec.name}.lock"
    with open(lock_path, "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        existing = find_toolchain(spec)
        if existing is not None:
            return existing
        return _create(spec, base)


def _create(spec: ToolchainSpec, base: Path) -> Toolchain:
    final = base / f"{spec.name}-{spec.digest()}"
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=base))
    log.info("setting up the %s toolchain in %s", spec.name, final)
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(staging / "venv")],
            check=True,
            capture_output=True,
        )
        python = staging / "venv" / "bin" / "python"
        requirements = staging / "requirements.txt"
        requirements.write_text(spec.requirements_text())
        _pip(python, ["install", "-r", str(requirements), *torch_index_args()])

        extra: dict = {}
        if spec.extra_setup is not None:
            extra = spec.extra_setup(staging, python)

        info = {
            "name": spec.name,
            "digest": spec.digest(),
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "versions": _installed_versions(python),
            **extra,
        }
        (staging / "toolchain.json").write_text(json.dumps(info, indent=2))
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("the %s toolchain is ready", spec.name)
    return Toolchain(spec.name, final, info)


# --- llama.cpp (GGUF) extra step -----------------------------------------------


def _llama_cpp_cmake_args() -> str:
    # GGML_NATIVE=OFF leaves out the build machine's own extensions such as AVX-512.
    # NOTE: on x86-64 it still turns on AVX, AVX2, FMA, F16C and BMI2 (ggml's
    # CMakeLists.txt in llama.cpp b11312), so the library needs an AVX2 CPU.
    return " ".join(
        [
            "-DGGML_NATIVE=OFF",
            f"-DLLAMA_BUILD_NUMBER={LLAMA_CPP_BUILD_NUMBER}",
            f"-DLLAMA_BUILD_COMMIT={LLAMA_CPP_COMMIT[:7]}",
        ]
    )


def _download_llama_cpp_sdist(python: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob(f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"))
    if not found:
        _pip(
            python,
            [
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}",
                "-d",
                str(dest),
            ],
        )
        found = sorted(dest.glob("llama_cpp_python-*.tar.gz"))
    if not found:
        raise ToolchainError(
            f"pip did not download the llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} "
            f"source distribution into {dest}"
        )
    return found[0]


def _build_llama_cpp_wheel(python: Path, sdist: Path) -> Path:
    # Built wheels are kept outside the toolchain folder so that a new toolchain
    # (for example after a pin change elsewhere) does not recompile llama.cpp.
    wheel_dir = (
        cache_home() / "wheels" / f"llama-cpp-python-{LLAMA_CPP_PYTHON_VERSION}-cpu-portable"
    )
    wheels = sorted(wheel_dir.glob("llama_cpp_python-*.whl"))
    if wheels:
        return wheels[0]
    env = dict(os.environ)
    env["CMAKE_ARGS"] = _llama_cpp_cmake_args()
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    log.info("compiling llama.cpp from %s (several minutes on 2 cores)", sdist.name)
    _pip(
        python,
        ["wheel", "--no-deps", "--no-cache-dir", "-w", str(wheel_dir), str(sdist)],
        env=env,
    )
    wheels = sorted(wheel_dir.glob("llama_cpp_python-*.whl"))
    if not wheels:
        raise ToolchainError(f"building llama-cpp-python left no wheel in {wheel_dir}")
    return wheels[0]


def _extract_converter(sdist: Path, dest: Path) -> None:
    """Extract llama.cpp's converter script, its package and its own gguf-py."""
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
    wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            if not member.name.startswith(prefix):
                continue
            relative = member.name[len(prefix) :]
            if not relative.startswith(wanted) or not member.isfile():
                continue
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())
    if not (dest / "convert_hf_to_gguf.py").is_file():
        raise ToolchainError(
            f"{sdist.name} does not contain vendor/llama.cpp/convert_hf_to_gguf.py"
        )


def setup_llama_cpp(staging: Path, python: Path) -> dict:
    sdist = _download_llama_cpp_sdist(python, cache_home() / "downloads")
    wheel = _build_llama_cpp_wheel(python, sdist)
    _pip(python, ["install", "--no-deps", str(wheel)])
    _extract_converter(sdist, staging / "llama.cpp")
    return {
        "llama_cpp": {
            "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION,
            "build_number": LLAMA_CPP_BUILD_NUMBER,
            "commit": LLAMA_CPP_COMMIT,
            "cmake_args": _llama_cpp_cmake_args(),
        }
    }
