"""Publish a tiny model to a Hub (the local test Hub in tests)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .build import build_tiny_model
from .specs import get_spec

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from .cache import BuildCache

_GATED_MODES = ("auto", "manual")


def publish_tiny_model(
    api: HfApi,
    name: str,
    *,
    repo_id: str | None = None,
    private: bool = False,
    gated: bool | str = False,
    workdir: Path | None = None,
    cache: BuildCache | None = None,
    **build_options,
) -> str:
    """Build tiny model ``name``, upload it in one commit and return the commit sha.

    ``repo_id`` defaults to ``<user>/<spec.repo_name>`` for the token's user.
    The repository is created when missing (an existing one gets a new
    commit). ``gated`` is False, True (same as "auto") or "auto"/"manual".
    The model is built in a new subfolder of ``workdir`` (kept) or in a
    temporary folder (removed); ``build_options`` go to ``build_tiny_model``.
    With a ``cache``, the model comes from it (built there on first use) and
    ``workdir`` is not used.
    """
    spec = get_spec(name)
    gated_mode = _gated_mode(gated)
    if repo_id is None:
        repo_id = f"{api.whoami()['name']}/{spec.repo_name}"

    if cache is not None:
        return _upload(api, name, repo_id, private, gated_mode, cache.folder(name, **build_options))
    if workdir is not None:
        return _build_and_upload(api, name, repo_id, private, gated_mode, Path(workdir), build_options)
    with tempfile.TemporaryDirectory(prefix="hubquant-tiny-") as temporary:
        return _build_and_upload(api, name, repo_id, private, gated_mode, Path(temporary), build_options)


def _gated_mode(gated: bool | str) -> str | None:
    if gated is False:
        return None
    if gated is True:
        return "auto"
    if gated in _GATED_MODES:
        return gated
    raise ValueError(f"invalid gated value {gated!r}; use False, True, 'auto' or 'manual'")


def _build_and_upload(
    api: HfApi,
    name: str,
    repo_id: str,
    private: bool,
    gated_mode: str | None,
    workdir: Path,
    build_options: dict,
) -> str:
    # A fresh subfolder, so publishing twice with one workdir cannot collide.
    workdir.mkdir(parents=True, exist_ok=True)
    folder = build_tiny_model(name, Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir)), **build_options)
    return _upload(api, name, repo_id, private, gated_mode, folder)


def _upload(api: HfApi, name: str, repo_id: str, private: bool, gated_mode: str | None, folder: Path) -> str:
    spec = get_spec(name)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    if gated_mode is not None:
        api.update_repo_settings(repo_id, gated=gated_mode, repo_type="model")
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=folder,
        commit_message=f"Add tiny random {spec.hub_id} ({name})",
        commit_description="Random weights; real tokenizer and config, shrunk. Built by hubquant.tinymodels.",
    )
    return commit.oid
