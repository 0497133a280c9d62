"""The main job: one source revision, one download, many targets, validated releases.

The recipe, in order: pin the source to a sha, check it, plan the release repos,
download once and compute reference outputs once. Then each backend builds its
artifacts, uploading each validated file as soon as it is ready, and each release
gets its card and lands in a single commit.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import shlex
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi

from hubquant import __version__
from hubquant.backends import Backend, BuildContext, Release, get_backend
from hubquant.calibration import CalibrationOptions, CalibrationText
from hubquant.errors import HubquantError, PublishError, SourceError, UsageError
from hubquant.progress import DOWNLOADING, PUBLISHING, Reporter
from hubquant.publish import MANIFEST, HubPublisher, LocalPublisher, RepoPlan, plan_repo, visibility_for
from hubquant.reference import ReferenceOutputs, compute_reference
from hubquant.resources import available_memory, check_disk, check_memory
from hubquant.source import (
    LICENSE_FILES,
    LocalSource,
    SourceRef,
    chat_template_of,
    download,
    download_bytes,
    inspect_folder,
    parse_source,
    resolve_hub_source,
)
from hubquant.targets import Target, parse_targets

log = logging.getLogger(__name__)

HUB_FILE_LIMIT = 50 * 1000**3  # the Hub rejects single files over 50 GB


@dataclass
class JobRequest:
    """A user's request for one job, built by the CLI, the Space and the bot alike."""

    source: str
    targets: list[str]
    endpoint: str = "https://huggingface.co"
    token: str | None = None
    push: bool = False
    namespace: str | None = None
    output_dir: Path = Path("hubquant-out")
    public: bool | None = None
    repo_name: str | None = None
    update_existing: bool = False
    # Publish into an existing empty repo, such as one an earlier attempt of
    # this job created before it stopped; the bot sets it on retries.
    reuse_empty_repo: bool = False
    force: bool = False
    allow_pickle: bool = False
    base_model: str | None = None
    max_file_bytes: int = HUB_FILE_LIMIT
    work_dir: Path | None = None
    threads: int = 0
    command: str = ""
    # Only benchmarks turn this off, to time conversion alone; the CLI has no
    # flag for it, so every published artifact is validated.
    validate: bool = True
    # Calibration text for importance matrices: a local .txt/.jsonl file or a
    # Hub dataset id (ID or ID@REVISION); neither means hubquant's own corpus.
    calibration_file: Path | None = None
    calibration_dataset: str | None = None
    calibration_options: CalibrationOptions = field(default_factory=CalibrationOptions)
    # Reject targets whose build cannot fit in the free memory (checked before the download).
    check_memory: bool = True


@dataclass
class ReleaseResult:
    repo_id: str
    url: str
    targets: list[str]
    files: list[str]
    failed: dict[str, str]
    status: str  # "published", "staged", "up to date", "failed"
    card: str = ""
    validation: dict = field(default_factory=dict)


@dataclass
class JobResult:
    source: str
    sha: str | None
    releases: list[ReleaseResult]
    visibility_note: str = ""

    @property
    def ok(self) -> bool:
        return all(not release.failed and release.status != "failed" for release in self.releases)


@dataclass
class PlannedRelease:
    backend: Backend
    targets: list[Target]
    repo: RepoPlan | None
    local_name: str

    @property
    def name(self) -> str:
        return self.repo.repo_id if self.repo else self.local_name


def make_api(request: JobRequest) -> HfApi:
    return HfApi(endpoint=request.endpoint, token=request.token)


def run_job(request: JobRequest, reporter: Reporter | None = None) -> JobResult:
    reporter = reporter or Reporter()
    targets = parse_targets(request.targets)
    if not targets:
        raise UsageError("no targets given; add one such as --target gguf:Q4_K_M")
    _check_calibration_request(request)
    api = make_api(request)
    ref = parse_source(request.source, endpoint=request.endpoint)

    work_root = Path(tempfile.mkdtemp(prefix="hubquant-job-", dir=request.work_dir))
    try:
        if ref.is_local:
            source = _local_source(ref, request, reporter, work_root, targets)
            private, gated, note = visibility_for(False, False, request.public)
            if request.public is None:
                private, note = True, "a local folder has no Hub visibility, so the release is private (pass --public to change)"
            reporter.message(f"visibility: {note}")
            planned = _plan_releases(api, request, source.model_name, None, None, targets, private, gated)
            _check_replaced_variants(planned, request)
        else:
            reporter.step(str(ref), DOWNLOADING)
            hub = resolve_hub_source(api, ref)
            reporter.message(f"source {hub.repo_id} pinned to commit {hub.sha}")
            parameters = _precheck_hub_config(api, hub, targets, work_root)
            if request.check_memory:
                check_memory(parameters, targets, available_memory())
            private, gated, note = visibility_for(hub.private, hub.gated, request.public)
            reporter.message(f"visibility: {note}")
            owner, model_name = hub.repo_id.split("/")
            planned = _plan_releases(api, request, model_name, hub.repo_id, owner, targets, private, gated)
            _check_replaced_variants(planned, request)
            if all(_up_to_date(release, hub.sha) for release in planned):
                return JobResult(str(ref), hub.sha, [_up_to_date_result(request, reporter, release, hub.sha) for release in planned], note)
            source = _download_hub_source(api, hub, request, work_root, targets, reporter)
        # One reference run serves every release of the job (MLX and OpenVINO
        # make one repo per target). It starts only when a release needs building.
        long_context = any(getattr(get_backend(target.backend), "checks_long_context", False) for target in targets)
        load_reference = functools.cache(
            lambda: _reference(source, work_root, reporter, long_context=long_context) if request.validate else None
        )
        load_calibration = functools.cache(lambda: _calibration(api, request, source, work_root, reporter))
        results = [
            _run_release(api, request, reporter, source, release, work_root, load_reference, load_calibration)
            for release in planned
        ]
        return JobResult(str(ref), source.sha, results, note)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)


def _local_source(ref: SourceRef, request: JobRequest, reporter: Reporter, work_root: Path, targets: list[Target]) -> LocalSource:
    if request.base_model is None:
        reporter.message("the source is a local folder without --base-model; the card will have no base_model")
    source = inspect_folder(ref.path, allow_pickle=request.allow_pickle, declared_base_model=request.base_model)
    _check_backends(source, targets)
    check_disk(work_root, source_bytes=0, parameters=source.parameters, targets=targets)
    if request.check_memory:
        check_memory(source.parameters, targets, available_memory())
    return source


def _download_hub_source(api: HfApi, hub, request: JobRequest, work_root: Path, targets: list[Target], reporter: Reporter) -> LocalSource:
    needed = download_bytes(hub.files, allow_pickle=request.allow_pickle)
    check_disk(work_root, source_bytes=needed, parameters=None, targets=targets)
    label = f"download {hub.repo_id}"
    folder = download(
        api, hub, work_root / "source", allow_pickle=request.allow_pickle,
        on_progress=lambda done, total: reporter.progress(label, done, total),
    )
    source = inspect_folder(folder, allow_pickle=request.allow_pickle)
    source.repo_id = hub.repo_id
    source.sha = hub.sha
    source.private = hub.private
    source.gated = hub.gated
    source.card_data = hub.card_data or source.card_data
    return source


def _precheck_hub_config(api: HfApi, hub, targets: list[Target], work_root: Path) -> int | None:
    """Read config.json (and the shard index) before downloading any weights;
    return the parameter count the safetensors headers give, if any."""
    from hubquant.source import check_remote_code, read_config

    if "config.json" not in hub.files:
        raise SourceError(f"{hub.repo_id} has no config.json; a transformers model repo is required")
    folder = work_root / "precheck"
    for name in ("config.json", "model.safetensors.index.json"):
        if name in hub.files:
            api.hf_hub_download(hub.repo_id, name, revision=hub.sha, local_dir=folder)
    config = read_config(folder)
    check_remote_code(config)
    _check_architecture(config["architectures"][0], targets)
    index_file = folder / "model.safetensors.index.json"
    if index_file.is_file():
        shards = set(json.loads(index_file.read_text()).get("weight_map", {}).values())
        missing = sorted(shard for shard in shards if shard not in hub.files)
        if missing:
            raise SourceError(
                f"model.safetensors.index.json of {hub.repo_id} names shard {missing[0]}, "
                "which the repo does not contain; the source upload is incomplete"
            )
    return _check_remote_headers(api, hub)


def _check_remote_headers(api: HfApi, hub) -> int | None:
    """Read the safetensors headers on the Hub (range requests, no tensor data),
    check that every tensor of the shard index is in its shard, and return the
    parameter count (None without safetensors weights)."""
    from huggingface_hub.errors import SafetensorsParsingError

    names = set(hub.files)
    if "model.safetensors" not in names and "model.safetensors.index.json" not in names:
        return None
    try:
        metadata = api.get_safetensors_metadata(hub.repo_id, revision=hub.sha)
    except SafetensorsParsingError as error:
        raise SourceError(f"the weights of {hub.repo_id} are not valid safetensors files: {error}") from None
    for tensor, shard in metadata.weight_map.items():
        if tensor not in metadata.files_metadata[shard].tensors:
            raise SourceError(
                f"model.safetensors.index.json of {hub.repo_id} maps tensor {tensor} to {shard}, but "
                "that shard's header does not contain it; the index and the shards disagree"
            )
    return sum(metadata.parameter_count.values())


def _check_backends(source: LocalSource, targets: list[Target]) -> None:
    _check_architecture(source.architecture, targets)


def _check_architecture(architecture: str, targets: list[Target]) -> None:
    # A backend's own reason comes first because it is more specific than "not supported".
    for target in targets:
        reason = get_backend(target.backend).rejection_reason(architecture, target)
        if reason is not None:
            raise SourceError(reason)
    for backend_name in sorted({target.backend for target in targets}):
        backend = get_backend(backend_name)
        supported = backend.supported_architectures()
        if architecture not in supported:
            raise SourceError(
                f"the {backend_name} backend does not support architecture "
                f"{architecture}; supported: {', '.join(sorted(supported))}"
            )


def _plan_releases(api: HfApi, request: JobRequest, model_name: str, source_id: str | None, owner: str | None, targets: list[Target], private: bool, gated: bool) -> list[PlannedRelease]:
    groups: dict[tuple[str, str], list[Target]] = {}
    base = request.repo_name or model_name
    source_id = source_id or request.base_model
    for target in targets:
        backend = get_backend(target.backend)
        name = backend.release_name(base, target)
        groups.setdefault((backend.name, name), []).append(target)

    namespace = request.namespace
    if request.push and namespace is None:
        if not request.token:
            raise UsageError("--push needs a Hub token: set HF_TOKEN or pass --token")
        namespace = api.whoami()["name"]
    planned = []
    for (backend_name, name), group in groups.items():
        repo = None
        if request.push:
            repo = plan_repo(
                api,
                namespace=namespace,
                base_name=name,
                source_id=source_id,
                source_owner=owner,
                private=private,
                gated=gated,
                update_existing=request.update_existing,
                name_given=request.repo_name is not None,
                reuse_empty=request.reuse_empty_repo,
            )
            if repo.exists and not repo.private and private:
                raise PublishError(
                    f"{repo.repo_id} is public but the source is private or gated; "
                    "pass --public to publish into it, or --repo-name for a new private repo"
                )
        planned.append(PlannedRelease(get_backend(backend_name), group, repo, name))
    return planned


def _check_replaced_variants(planned: list[PlannedRelease], request: JobRequest) -> None:
    """Raise PublishError where a one-variant repo (OpenVINO's, one per precision)
    contains another variant, unless --update-existing was given, because the
    new files would replace the old ones under the same names."""
    for release in planned:
        manifest = release.repo.manifest if release.repo else None
        if not manifest or not getattr(release.backend, "one_variant_per_repo", False):
            continue
        requested = {str(target) for target in release.targets}
        existing = sorted(entry["target"] for entry in manifest.get("artifacts", []) if entry["target"] not in requested)
        if existing and not request.update_existing:
            raise PublishError(
                f"{release.name} contains {', '.join(existing)}, and this run builds {', '.join(sorted(requested))} "
                "with the same file names; pass --update-existing to replace it, or --repo-name to "
                "publish the new variant beside it"
            )


def _up_to_date(release: PlannedRelease, sha: str | None) -> bool:
    manifest = release.repo.manifest if release.repo else None
    if not manifest or sha is None:
        return False
    if manifest.get("source", {}).get("sha") != sha:
        return False
    present = set(manifest.get("targets", []))
    return all(str(target) in present for target in release.targets)


def _up_to_date_result(request: JobRequest, reporter: Reporter, planned: PlannedRelease, sha: str | None) -> ReleaseResult:
    reporter.message(f"{planned.name} already holds these targets for commit {sha}; nothing to do")
    return ReleaseResult(planned.name, f"{request.endpoint}/{planned.name}", [str(t) for t in planned.targets], [], {}, "up to date")


def _run_release(
    api: HfApi,
    request: JobRequest,
    reporter: Reporter,
    source: LocalSource,
    planned: PlannedRelease,
    work_root: Path,
    load_reference: Callable[[], ReferenceOutputs | None],
    load_calibration: Callable[[], CalibrationText],
) -> ReleaseResult:
    backend = planned.backend
    if _up_to_date(planned, source.sha):
        return _up_to_date_result(request, reporter, planned, source.sha)

    targets = list(planned.targets)
    manifest = planned.repo.manifest if planned.repo else None
    previous: list[dict] = []
    if manifest:
        same_sha = manifest.get("source", {}).get("sha") == source.sha
        for entry in manifest.get("artifacts", []):
            old = Target(entry["target"].split(":")[0], entry["target"].split(":", 1)[1])
            if old in targets:
                continue
            if getattr(backend, "one_variant_per_repo", False):
                # Replaced by the new variant (allowed before the download).
                continue
            if same_sha:
                previous.append(entry)
            else:
                # A new source sha rebuilds every type the release holds.
                targets.append(old)

    release = Release(backend.name, planned.name, targets)
    publisher = HubPublisher(api, planned.repo) if planned.repo else LocalPublisher(request.output_dir, planned.local_name)

    def on_artifact(release: Release, artifact) -> None:
        reporter.step(f"{release.repo_name} {artifact.target}", PUBLISHING)
        # Bytes handed to the publisher (uploaded, for a Hub repo), file by file.
        sizes = [path.stat().st_size for path in artifact.files]
        label, done = f"publish {artifact.target}", 0
        reporter.progress(label, 0, sum(sizes))
        for path, size in zip(artifact.files, sizes):
            publisher.add_file(path, path_in_repo=artifact.path_in_repo(path))
            done += size
            reporter.progress(label, done, sum(sizes))

    reference = load_reference()
    if reference is not None and not reference.model_ran and not getattr(backend, "checks_without_source_run", False):
        reference = None
    context = BuildContext(
        source=source,
        reference=reference,
        work_dir=work_root / backend.name,
        reporter=reporter,
        max_file_bytes=request.max_file_bytes,
        force=request.force,
        on_artifact=on_artifact,
        threads=request.threads,
        validate=request.validate,
        calibration=load_calibration,
        calibration_options=request.calibration_options,
    )
    try:
        backend.build(context, release)
        if not release.artifacts:
            publisher.abort()
            return ReleaseResult(planned.name, "", [str(t) for t in targets], [], release.failed, "failed", validation=release.facts.get("reference_validation", {}))
        for path in release.shared_files:
            publisher.add_file(path)
        card, manifest_data = _card_and_manifest(request, source, release, previous, publisher)
        _add_license_files(publisher, source)
        publisher.add_bytes("README.md", card.encode())
        publisher.add_bytes(MANIFEST, json.dumps(manifest_data, indent=2).encode())
        keep = {"README.md", MANIFEST, *_license_names(source)}
        for entry in manifest_data["artifacts"]:
            keep.update(entry["files"])
            keep.update(entry.get("shared_files", []))
        message = f"Release {', '.join(str(a.target) for a in release.artifacts)} of {source.base_model or source.model_name}"
        description = f"Built by hubquant {__version__} from {source.repo_id or 'a local folder'} at commit {source.sha or 'n/a'}."
        publisher.commit(message[:200], description, keep)
    except BaseException:
        publisher.abort()
        raise
    status = "published" if planned.repo else "staged"
    return ReleaseResult(
        publisher.repo_id,
        publisher.url,
        [str(a.target) for a in release.artifacts],
        [name for a in release.artifacts for name in a.published_names],
        release.failed,
        status,
        card,
        release.facts.get("reference_validation", {}),
    )


def _reference(source: LocalSource, work_root: Path, reporter: Reporter, *, long_context: bool = False):
    # transformers keeps the model in float32, plus a few activations.
    needed = source.parameters * 4 * 1.5 + 1.5e9
    available = available_memory()
    has_chat_template = chat_template_of(source.path) is not None
    if available is not None and needed > available:
        reporter.message(
            f"skipping the transformers reference run: it needs about {needed / 1e9:.1f} GB "
            f"of memory and {available / 1e9:.1f} GB are free; the prompts are only tokenized, "
            "and files are checked in their own runtime as far as memory allows"
        )
        return compute_reference(source.path, work_root / "reference", has_chat_template=has_chat_template, tokens_only=True)
    return compute_reference(
        source.path, work_root / "reference", has_chat_template=has_chat_template,
        config=source.config if long_context else None,
    )


def _uses(artifact, path: Path) -> bool:
    imatrix = artifact.facts.get("imatrix")
    return bool(imatrix) and imatrix.get("file") == path.name


def _check_calibration_request(request: JobRequest) -> None:
    if request.calibration_file is not None and request.calibration_dataset:
        raise UsageError("give either --calibration FILE or --calibration-dataset ID, not both")
    if request.calibration_file is not None and not Path(request.calibration_file).is_file():
        raise UsageError(f"calibration file {str(request.calibration_file)!r} not found; pass an existing .txt or .jsonl file")


def _calibration(api: HfApi, request: JobRequest, source: LocalSource, work_root: Path, reporter: Reporter) -> CalibrationText:
    from hubquant import calibration

    template = chat_template_of(source.path)
    if request.calibration_file is not None:
        text = calibration.text_file(Path(request.calibration_file), template, source.path)
    elif request.calibration_dataset:
        reporter.message(f"downloading the calibration dataset {request.calibration_dataset}")
        text = calibration.hub_dataset(api, request.calibration_dataset, work_root / "calibration", template, source.path)
    else:
        text = calibration.builtin_corpus(template, source.path)
    reporter.message(f"calibration text: {text.description} ({len(text.text)} characters)")
    return text


def _license_names(source: LocalSource) -> list[str]:
    import fnmatch

    return sorted(p.name for p in source.path.iterdir() if any(fnmatch.fnmatch(p.name, pattern) for pattern in LICENSE_FILES))


def _add_license_files(publisher, source: LocalSource) -> None:
    for name in _license_names(source):
        publisher.add_bytes(name, (source.path / name).read_bytes())


def _card_and_manifest(request: JobRequest, source: LocalSource, release: Release, previous: list[dict], publisher) -> tuple[str, dict]:
    date = datetime.date.today().isoformat()
    artifacts = [
        {
            "target": str(artifact.target),
            "files": artifact.published_names,
            "size_bytes": artifact.size_bytes,
            "bits_per_weight": artifact.bits_per_weight,
            "facts": artifact.facts,
            "validation": artifact.validation.to_dict(),
            # Repo files this artifact needs beside its own, such as the importance matrix.
            "shared_files": [path.name for path in release.shared_files if _uses(artifact, path)],
        }
        for artifact in release.artifacts
    ] + previous
    manifest = {
        "hubquant_version": __version__,
        "backend": release.backend,
        "source": {"id": source.base_model, "sha": source.sha, "local": source.repo_id is None},
        "targets": sorted(entry["target"] for entry in artifacts),
        "artifacts": artifacts,
        "date": date,
        "tool_versions": release.facts.get("tool_versions", {}),
    }
    backend = get_backend(release.backend)
    context = backend.card_context(
        repo_id=publisher.repo_id,
        source=source,
        release=release,
        artifacts=artifacts,
        license_files=_license_names(source),
        command=request.command or shlex.join(["hubquant", "run", request.source, *[f"--target={t}" for t in request.targets]]),
        date=date,
        endpoint=request.endpoint,
    )
    return backend.render_card(release, context), manifest


__all__ = ["HubquantError", "JobRequest", "JobResult", "ReleaseResult", "run_job"]
