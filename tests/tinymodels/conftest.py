"""Session fixtures that build each tiny model once and share it.

``tiny_model_dir(name, **build_options)`` returns the folder of that build,
building it on first use in the session. Tests must not modify the folder;
copy it first (``shutil.copytree``) when a test needs to change files.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from hubquant.tinymodels import TINY_MODELS, BuildCache

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model: BuildCache) -> Callable[..., Path]:
    """Return ``build(name, **build_options) -> Path``, each build made once per run."""
    return tiny_model


@pytest.fixture(scope="session")
def all_tiny_models(tiny_model_dir: Callable[..., Path]) -> dict[str, Path]:
    """Every tiny model in its default build, by name."""
    return {name: tiny_model_dir(name) for name in TINY_MODELS}


@pytest.fixture(scope="session")
def run_reference_script(reference_toolchain, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., dict]:
    """Return ``run(script, request) -> dict`` for the helper scripts next to this file.

    The script runs with the reference toolchain's interpreter (torch,
    transformers, tokenizers), gets ``request`` as a JSON file and must print
    one JSON document. The Hub is offline for it, so nothing loads from a network.
    """
    work = tmp_path_factory.mktemp("reference-requests")

    def run(script: str, request: object, timeout: float = 600) -> dict:
        request_file = work / f"{script}.{len(list(work.iterdir()))}.json"
        request_file.write_text(json.dumps(request), encoding="utf-8")
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        result = subprocess.run(
            [str(reference_toolchain.python), str(HERE / script), str(request_file)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise AssertionError(f"{script} failed with exit status {result.returncode}:\n{result.stderr[-4000:]}")
        return json.loads(result.stdout)

    return run
