"""Hub search and the summary of a source model that the Space shows before a run."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from hubquant.backends import backend_names, get_backend
from hubquant.errors import SourceError, TransientError, UsageError
from hubquant.source import REPO_ID, SourceRef, download_bytes, resolve_hub_source

log = logging.getLogger(__name__)

SEARCH_LIMIT = 20

# Rates behind the time estimate. They are rounded up from llama.cpp runs on a
# 423M-parameter Phi-3-shaped model on 2 CPU cores (conversion about 5 s, Q8_0
# 2.4 s, Q4_K_M 9.9 s) to cover the transformers and llama.cpp validation runs.
# NOTE: an estimate; real times depend on the machine, the architecture and
# the Hub's download speed.
DOWNLOAD_BYTES_PER_S = 50e6
FIXED_SECONDS = 60.0
SECONDS_PER_BILLION_PARAMETERS = 40.0
SECONDS_PER_BILLION_PARAMETERS_PER_TARGET = 30.0


def parse_model_input(text: str, endpoint: str) -> SourceRef:
    """Parse a Hub id (``owner/name[@revision]``) or a URL of `endpoint` into a reference.

    Unlike the command line, the Space never reads local folders, so paths are
    rejected even where a folder of that name exists.
    """
    text = (text or "").strip()
    if not text:
        raise UsageError("no model given: type a Hub model id such as microsoft/Phi-3-mini-4k-instruct")
    if "://" in text:
        return _parse_url(text, endpoint)
    repo_id, _, revision = text.partition("@")
    if not REPO_ID.match(repo_id):
        raise UsageError(
            f"invalid model {text!r}: give a Hub id such as microsoft/Phi-3-mini-4k-instruct, "
            "optionally with @revision, or paste the model's URL"
        )
    return SourceRef(repo_id=repo_id, revision=revision or None)


def _parse_url(text: str, endpoint: str) -> SourceRef:
    url = urlparse(text)
    expected = urlparse(endpoint)
    if (url.scheme, url.netloc) != (expected.scheme, expected.netloc):
        raise UsageError(f"the URL {text!r} is not on {endpoint}; paste a URL of that Hub or give the model id")
    parts = [part for part in url.path.split("/") if part]
    if parts and parts[0] == "models":
        parts = parts[1:]
    if len(parts) < 2 or parts[0] in ("datasets", "spaces"):
        raise UsageError(f"the URL {text!r} is not a model repo URL")
    revision = None
    if len(parts) >= 4 and parts[2] in ("tree", "blob", "resolve", "commit"):
        revision = "/".join(parts[3:]) if parts[2] in ("tree", "commit") else parts[3]
    return SourceRef(repo_id=f"{parts[0]}/{parts[1]}", revision=revision)


def source_text(ref: SourceRef) -> str:
    """Return ``owner/name[@revision]``, the source string of a job request."""
    return str(ref)


def search_models(api: HfApi, query: str, limit: int = SEARCH_LIMIT) -> list[str]:
    """Return ids of models whose id contains `query`, as the token's user may see them."""
    query = (query or "").strip()
    if len(query) < 2 or "://" in query:
        return []
    query = query.partition("@")[0]
    try:
        return [model.id for model in api.list_models(search=query, limit=limit)]
    except HfHubHTTPError as error:
        log.warning("Hub search for %r failed: %s", query, error)
        return []


@dataclass
class SourceSummary:
    """Facts about a source, read from Hub metadata before any download."""

    repo_id: str
    revision: str | None
    sha: str
    architecture: str
    parameters: int
    dtype: str
    license: str
    private: bool
    gated: bool
    source_bytes: int
    # Registered backends that convert this architecture, and those that do not.
    backends: list[str]
    unsupported_backends: list[str]
    # `hubquant.planning.make_plan` output for the chosen targets, or None.
    plan: dict | None = None
    estimated_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        return f"{self.repo_id}@{self.revision}" if self.revision else self.repo_id


def describe_source(
    api: HfApi,
    ref: SourceRef,
    *,
    targets: list[str],
    namespace: str | None,
    public: bool | None,
    repo_name: str | None = None,
) -> SourceSummary:
    """Read the facts of `ref` from the Hub and plan the releases of `targets`.

    Only metadata is read: the repo info, config.json and the safetensors headers.
    """
    hub = resolve_hub_source(api, ref)
    config = _read_config(api, hub.repo_id, hub.sha)
    architectures = config.get("architectures") or ["unknown"]
    architecture = str(architectures[0])
    parameters, dtype = _parameters_and_dtype(api, hub, config)
    supported = [name for name in backend_names() if architecture in get_backend(name).supported_architectures()]
    summary = SourceSummary(
        repo_id=hub.repo_id,
        revision=ref.revision,
        sha=hub.sha,
        architecture=architecture,
        parameters=parameters,
        dtype=dtype,
        license=_license(hub.card_data, hub.tags),
        private=hub.private,
        gated=hub.gated,
        source_bytes=download_bytes(hub.files),
        backends=supported,
        unsupported_backends=[name for name in backend_names() if name not in supported],
    )
    usable = [target for target in targets if target.partition(":")[0] in supported]
    skipped = [target for target in targets if target not in usable]
    if skipped:
        summary.notes.append(
            f"{', '.join(skipped)}: the backend does not convert {architecture}, so these targets are left out"
        )
    if usable and namespace:
        summary.plan = _plan(api, summary, usable, namespace, public, repo_name)
    summary.estimated_seconds = estimate_seconds(summary.source_bytes, parameters, len(usable))
    return summary


def estimate_seconds(source_bytes: int, parameters: int, target_count: int) -> float:
    """Estimate a job's wall time from the source size and the number of targets."""
    billions = parameters / 1e9
    return (
        FIXED_SECONDS
        + source_bytes / DOWNLOAD_BYTES_PER_S
        + billions * (SECONDS_PER_BILLION_PARAMETERS + SECONDS_PER_BILLION_PARAMETERS_PER_TARGET * target_count)
    )


def _read_config(api: HfApi, repo_id: str, sha: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="hubquant-space-config-") as folder:
        try:
            path = api.hf_hub_download(repo_id, "config.json", revision=sha, local_dir=folder)
        except HfHubHTTPError as error:
            status = error.response.status_code if error.response is not None else None
            if status == 404:
                raise SourceError(f"{repo_id} has no config.json; a transformers model repo is required") from None
            raise TransientError(f"reading config.json of {repo_id} failed: {error}") from None
        try:
            return json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:
            raise SourceError(f"config.json of {repo_id} is not valid JSON: {error}") from None


def _parameters_and_dtype(api: HfApi, hub, config: dict) -> tuple[int, str]:
    declared = str(config.get("torch_dtype") or config.get("dtype") or "unknown")
    try:
        metadata = api.get_safetensors_metadata(hub.repo_id, revision=hub.sha)
    except Exception as error:  # noqa: BLE001 - fall back to an estimate from file sizes
        log.info("No safetensors metadata for %s (%s); estimating from file sizes", hub.repo_id, error)
        weights = sum(size for name, size in hub.files.items() if name.endswith(".safetensors"))
        return weights // 2, declared
    counts = metadata.parameter_count
    if not counts:
        return 0, declared
    stored = max(counts, key=counts.get)
    return sum(counts.values()), _SAFETENSORS_DTYPES.get(stored, stored.lower())


_SAFETENSORS_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}


def _license(card_data: dict, tags: list[str]) -> str:
    value = card_data.get("license")
    if value:
        return str(value)
    for tag in tags:
        if tag.startswith("license:"):
            return tag.partition(":")[2]
    return "not stated"


def _plan(api: HfApi, summary: SourceSummary, targets: list[str], namespace: str, public: bool | None, repo_name: str | None) -> dict:
    from hubquant.pipeline import JobRequest
    from hubquant.planning import make_plan

    # The URL form pins the plan to the commit shown, and parse_source never
    # takes a URL for a local folder of the Space's working directory.
    url = f"{api.endpoint}/{summary.repo_id}/tree/{summary.sha}"
    request = JobRequest(
        source=url,
        targets=targets,
        endpoint=api.endpoint,
        token=api.token,
        push=True,
        namespace=namespace,
        public=public,
        repo_name=repo_name or None,
    )
    return make_plan(request)
