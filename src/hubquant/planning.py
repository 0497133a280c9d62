"""``hubquant plan``: what a run would create, from metadata only."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hubquant.backends import get_backend
from hubquant.pipeline import JobRequest, make_api
from hubquant.publish import plan_repo, visibility_for
from hubquant.resources import estimate_job_bytes
from hubquant.source import download_bytes, inspect_folder, parse_source, resolve_hub_source
from hubquant.targets import parse_targets


def _hub_parameters(api, hub) -> int:
    """Count parameters from the safetensors headers, read by range requests."""
    try:
        metadata = api.get_safetensors_metadata(hub.repo_id, revision=hub.sha)
    except Exception:  # noqa: BLE001 - an estimate from file sizes is good enough
        weights = sum(size for name, size in hub.files.items() if name.endswith(".safetensors"))
        return weights // 2
    return sum(metadata.parameter_count.values())


def make_plan(request: JobRequest) -> dict:
    targets = parse_targets(request.targets)
    api = make_api(request)
    ref = parse_source(request.source, endpoint=request.endpoint)
    if ref.is_local:
        source = inspect_folder(ref.path, allow_pickle=request.allow_pickle, declared_base_model=request.base_model)
        parameters, name, sha, source_bytes = source.parameters, source.model_name, None, 0
        private, gated, note = True, False, "private (a local folder)"
        if request.public:
            private, note = False, "public because --public was given"
        source_id, owner = request.base_model, None
    else:
        hub = resolve_hub_source(api, ref)
        parameters = _hub_parameters(api, hub)
        name, sha = hub.repo_id.split("/")[-1], hub.sha
        source_bytes = download_bytes(hub.files, allow_pickle=request.allow_pickle)
        private, gated, note = visibility_for(hub.private, hub.gated, request.public)
        source_id, owner = hub.repo_id, hub.repo_id.split("/")[0]

    base = request.repo_name or name
    namespace = request.namespace
    if request.push and namespace is None and request.token:
        namespace = api.whoami()["name"]
    releases: dict[str, dict] = {}
    for target in targets:
        backend = get_backend(target.backend)
        repo_name = backend.release_name(base, target)
        entry = releases.get(repo_name)
        if entry is None:
            repo = repo_name
            exists = False
            if request.push and namespace:
                planned = plan_repo(
                    api, namespace=namespace, base_name=repo_name, source_id=source_id,
                    source_owner=owner, private=private, gated=gated,
                    update_existing=request.update_existing, name_given=request.repo_name is not None,
                    reuse_empty=request.reuse_empty_repo,
                )
                repo, exists = planned.repo_id, planned.exists
            else:
                repo = str(Path(request.output_dir) / repo_name)
            entry = releases[repo_name] = {"repo": repo, "exists": exists, "private": private, "files": []}
        file_name = backend.file_name(base, target.precision) if hasattr(backend, "file_name") else str(target)
        entry["files"].append(
            {"target": str(target), "name": file_name, "estimated_bytes": backend.estimate_bytes(parameters, target)}
        )
        for shared in getattr(backend, "shared_file_names", lambda *_: [])(base, [target]):
            if all(item["name"] != shared for item in entry["files"]):
                # The importance matrix: one float per input column of each weight, negligible here.
                entry["files"].append({"target": str(target), "name": shared, "estimated_bytes": 0})
    disk = estimate_job_bytes(source_bytes, parameters, targets)
    # The transformers reference run (skipped, not failed, where memory lacks)
    # and each target's build, whose least memory is checked before download.
    reference_memory = int(parameters * 4 * 1.5 + 1.5e9)
    build_memory = {str(target): get_backend(target.backend).build_memory(parameters, target)[0] for target in targets}
    return {
        "source": str(ref),
        "sha": sha,
        "parameters": parameters,
        "visibility": note,
        "releases": list(releases.values()),
        "estimated_disk_bytes": disk,
        "estimated_memory_bytes": max([reference_memory, *build_memory.values()]),
        "reference_memory_bytes": reference_memory,
        "build_memory_bytes": build_memory,
        "work_dir": str(request.work_dir or tempfile.gettempdir()),
    }
