"""Source models: parse the user's reference, pin it to a commit, check and download it.

A Hub id resolves to a commit sha before anything else, and every later request
uses that sha, so a source updated during the job cannot mix revisions.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from hubquant.errors import SourceError, TransientError, UsageError

log = logging.getLogger(__name__)

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")

# Files a conversion needs. Weights come as safetensors when the source has them.
CONFIG_FILES = ["config.json", "generation_config.json"]
TOKENIZER_FILES = [
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "*.tiktoken",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
]
LICENSE_FILES = ["LICENSE", "LICENSE.*", "LICENCE*", "NOTICE", "NOTICE.*", "USE_POLICY*"]
CARD_FILE = "README.md"
SAFETENSORS_FILES = ["*.safetensors", "model.safetensors.index.json"]
PICKLE_FILES = ["*.bin", "*.pt", "*.pth", "pytorch_model.bin.index.json"]

# Model types transformers implements itself. A config with ``auto_map`` for any
# other model type needs the repo's own Python code, which hubquant never runs.
NATIVE_MODEL_TYPES = frozenset(
    {
        "phi",
        "phi3",
        "phimoe",
        "llama",
        "mistral",
        "mixtral",
        "qwen2",
        "qwen2_moe",
        "qwen3",
        "gemma",
        "gemma2",
        "gemma3_text",
        "granite",
        "olmo2",
        "stablelm",
    }
)


@dataclass(frozen=True)
class SourceRef:
    """What the user named: a Hub repo (with an optional revision) or a local folder."""

    repo_id: str | None = None
    revision: str | None = None
    path: Path | None = None

    @property
    def is_local(self) -> bool:
        return self.path is not None

    def __str__(self) -> str:
        if self.path is not None:
            return str(self.path)
        return f"{self.repo_id}@{self.revision}" if self.revision else str(self.repo_id)


@dataclass
class HubSource:
    """A Hub source pinned to one commit sha."""

    repo_id: str
    sha: str
    private: bool
    gated: bool
    files: dict[str, int]
    card_data: dict
    tags: list[str]


@dataclass
class LocalSource:
    """A source folder on disk, downloaded or given by the user."""

    path: Path
    config: dict
    repo_id: str | None = None
    sha: str | None = None
    private: bool = False
    gated: bool = False
    declared_base_model: str | None = None
    card_data: dict = field(default_factory=dict)
    weight_files: list[str] = field(default_factory=list)
    tensor_dtypes: dict[str, int] = field(default_factory=dict)
    parameters: int = 0

    @property
    def model_name(self) -> str:
        if self.repo_id:
            return self.repo_id.split("/")[-1]
        return self.path.name

    @property
    def architecture(self) -> str:
        return self.config["architectures"][0]

    @property
    def dtype(self) -> str:
        """The dtype most weights are stored in, read from the safetensors headers."""
        if not self.tensor_dtypes:
            return str(self.config.get("torch_dtype") or self.config.get("dtype") or "unknown")
        stored = max(self.tensor_dtypes, key=self.tensor_dtypes.get)
        return {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}.get(stored, stored)

    @property
    def base_model(self) -> str | None:
        return self.repo_id or self.declared_base_model


def parse_source(text: str, *, endpoint: str) -> SourceRef:
    """Parse ``owner/name``, ``owner/name@revision``, a Hub URL or a local folder."""
    candidate = Path(text).expanduser()
    if candidate.is_dir():
        return SourceRef(path=candidate.resolve())
    if text.startswith(("/", "./", "../", "~")):
        raise UsageError(f"source folder {text!r} does not exist")

    if "://" in text:
        return _parse_url(text, endpoint)
    repo_id, _, revision = text.partition("@")
    if not REPO_ID.match(repo_id):
        raise UsageError(
            f"invalid source {text!r}: give a Hub id such as "
            "microsoft/Phi-3-mini-4k-instruct[@revision] or an existing local folder"
        )
    return SourceRef(repo_id=repo_id, revision=revision or None)


def _parse_url(text: str, endpoint: str) -> SourceRef:
    url = urlparse(text)
    expected = urlparse(endpoint)
    if (url.scheme, url.netloc) != (expected.scheme, expected.netloc):
        raise UsageError(
            f"source URL {text!r} does not point to the Hub endpoint in use "
            f"({endpoint}); paste a URL from that Hub or give the repo id"
        )
    parts = [part for part in url.path.split("/") if part]
    if parts and parts[0] in ("models",):
        parts = parts[1:]
    if len(parts) < 2 or parts[0] in ("datasets", "spaces"):
        raise UsageError(f"source URL {text!r} is not a model repo URL")
    repo_id = f"{parts[0]}/{parts[1]}"
    revision = None
    if len(parts) >= 4 and parts[2] in ("tree", "blob", "resolve", "commit"):
        revision = parts[3]
    return SourceRef(repo_id=repo_id, revision=revision)


def resolve_hub_source(api: HfApi, ref: SourceRef) -> HubSource:
    """Pin ``ref`` to a commit sha and check the token may read its files."""
    assert ref.repo_id is not None
    try:
        info = api.model_info(ref.repo_id, revision=ref.revision, files_metadata=True)
    except RepositoryNotFoundError:
        raise SourceError(
            f"model {ref.repo_id} was not found on {api.endpoint}, or it is private "
            "and your token has no access; check the id and the token"
        ) from None
    except RevisionNotFoundError:
        raise SourceError(
            f"revision {ref.revision!r} of {ref.repo_id} was not found; give a branch, "
            "tag or commit sha that exists"
        ) from None
    except HfHubHTTPError as error:
        raise _http_failure(error, f"reading model info of {ref.repo_id}") from None

    files = {sibling.rfilename: int(sibling.size or 0) for sibling in info.siblings or []}
    gated = bool(info.gated)
    if gated:
        _check_gated_access(api, ref.repo_id, info.sha)
    card_data = info.card_data.to_dict() if info.card_data is not None else {}
    return HubSource(
        repo_id=ref.repo_id,
        sha=info.sha,
        private=bool(info.private),
        gated=gated,
        files=files,
        card_data=card_data,
        tags=list(info.tags or []),
    )


def _check_gated_access(api: HfApi, repo_id: str, sha: str) -> None:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(repo_id, "config.json", revision=sha, endpoint=api.endpoint)
    try:
        get_hf_file_metadata(url, token=api.token)
    except GatedRepoError:
        raise SourceError(
            f"{repo_id} is gated and your account has no access yet; request access "
            f"on its page ({api.endpoint}/{repo_id}) and run again once it is granted"
        ) from None


def _http_failure(error: HfHubHTTPError, action: str) -> Exception:
    status = error.response.status_code if error.response is not None else None
    if status is not None and (status >= 500 or status == 429):
        return TransientError(f"the Hub answered {status} while {action}; try again later")
    return SourceError(f"{action} failed: {error}")


def select_files(files: list[str], *, allow_pickle: bool) -> list[str]:
    """Return the files of a source that a conversion needs, and nothing else."""
    wanted = [*CONFIG_FILES, *TOKENIZER_FILES, *LICENSE_FILES, CARD_FILE]
    has_safetensors = any(fnmatch.fnmatch(name, "*.safetensors") for name in files)
    if has_safetensors:
        wanted += SAFETENSORS_FILES
    elif any(_matches(name, PICKLE_FILES) for name in files):
        if not allow_pickle:
            raise SourceError(
                "the source has only pickle weights (.bin/.pt), which can run code when "
                "loaded; pass --allow-pickle to load them with torch's weights-only "
                "loader, or use a source with safetensors weights"
            )
        wanted += PICKLE_FILES
    else:
        raise SourceError(
            "the source has no weights: no *.safetensors (or .bin) files were found"
        )
    return sorted(name for name in files if "/" not in name and _matches(name, wanted))


def download_bytes(files: dict[str, int], *, allow_pickle: bool = False) -> int:
    """Return the size of the files a job downloads from a repo (name -> size).

    A repo without usable weights counts whole, since the job rejects it anyway.
    """
    try:
        return sum(files[name] for name in select_files(list(files), allow_pickle=allow_pickle))
    except SourceError:
        return sum(files.values())


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def download(
    api: HfApi, source: HubSource, dest: Path, *, allow_pickle: bool,
    on_progress: Callable[[float, float | None], None] | None = None,
) -> Path:
    """Download the needed files of ``source`` at its pinned sha into ``dest``,
    calling ``on_progress(bytes done, bytes known so far)`` as data arrives."""
    needed = select_files(list(source.files), allow_pickle=allow_pickle)
    try:
        snapshot_download(
            source.repo_id,
            revision=source.sha,
            allow_patterns=needed,
            local_dir=dest,
            endpoint=api.endpoint,
            token=api.token,
            tqdm_class=_forwarding_bar(on_progress) if on_progress else None,
        )
    except GatedRepoError:
        raise SourceError(f"{source.repo_id} is gated and your account has no access") from None
    except HfHubHTTPError as error:
        raise _http_failure(error, f"downloading {source.repo_id}") from None
    return dest


def _forwarding_bar(on_progress: Callable[[float, float | None], None]):
    """Return a progress-bar class for snapshot_download that draws nothing and
    passes the byte count of its transfer bar to ``on_progress``."""
    from huggingface_hub.utils import tqdm as hub_tqdm

    lock = threading.Lock()

    class ForwardingBar(hub_tqdm):
        def __init__(self, *args, **kwargs):
            # huggingface_hub 2.4 names the bar that counts downloaded bytes so.
            self._forwards = kwargs.get("name") == "huggingface_hub.snapshot_download.transfer"
            self._done = 0
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            if self._forwards and n:
                with lock:
                    self._done += n
                    done, total = self._done, getattr(self, "total", None)
                on_progress(done, total or None)
            return super().update(n)

    return ForwardingBar


# --- checks before heavy work ----------------------------------------------------


def read_config(folder: Path) -> dict:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise SourceError(
            f"{folder} has no config.json; a transformers model folder is required"
        )
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise SourceError(f"config.json in {folder} is not valid JSON: {error}") from None
    architectures = config.get("architectures")
    if not architectures or not isinstance(architectures, list):
        raise SourceError(
            f"config.json in {folder} has no 'architectures' list, so the model class "
            "is unknown; add it (for example [\"Phi3ForCausalLM\"])"
        )
    return config


def check_remote_code(config: dict) -> None:
    """Refuse models whose class exists only as Python code in the repo."""
    model_type = config.get("model_type")
    if config.get("auto_map") and model_type not in NATIVE_MODEL_TYPES:
        raise SourceError(
            f"model_type {model_type!r} needs the repository's own Python code "
            "(trust_remote_code), which hubquant never runs; use a model whose "
            "architecture transformers implements"
        )


def read_safetensors_header(path: Path) -> dict:
    """Read the JSON header of a safetensors file without reading the tensor data."""
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise SourceError(f"{path.name} is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", prefix)
        if length > 100_000_000:
            raise SourceError(f"{path.name} has an implausible header length {length}")
        try:
            header = json.loads(handle.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SourceError(f"{path.name} has a corrupt safetensors header") from None
    header.pop("__metadata__", None)
    return header


def check_weights(folder: Path) -> tuple[list[str], dict[str, int], int]:
    """Check the shards and tensor names; return weight files, dtype counts and params."""
    index_file = folder / "model.safetensors.index.json"
    if index_file.is_file():
        index = json.loads(index_file.read_text())
        weight_map: dict[str, str] = index.get("weight_map", {})
        shards = sorted(set(weight_map.values()))
        missing = [shard for shard in shards if not (folder / shard).is_file()]
        if missing:
            raise SourceError(
                f"model.safetensors.index.json names shard {missing[0]}, which the "
                "source does not contain; the upload of the source is incomplete"
            )
    else:
        weight_map = {}
        shards = sorted(path.name for path in folder.glob("*.safetensors"))

    dtypes: dict[str, int] = {}
    parameters = 0
    present: dict[str, str] = {}
    for shard in shards:
        for name, entry in read_safetensors_header(folder / shard).items():
            present[name] = shard
            dtypes[entry["dtype"]] = dtypes.get(entry["dtype"], 0) + 1
            count = 1
            for dim in entry["shape"]:
                count *= dim
            parameters += count
    for tensor, shard in weight_map.items():
        if present.get(tensor) != shard:
            raise SourceError(
                f"model.safetensors.index.json maps tensor {tensor} to {shard}, but "
                "that shard's header does not contain it; the index and the shards "
                "disagree"
            )
    return shards, dtypes, parameters


def load_card_data(folder: Path) -> dict:
    """Return the YAML metadata of the source's README.md, or an empty dict."""
    import yaml

    readme = folder / CARD_FILE
    if not readme.is_file():
        return {}
    text = readme.read_text(errors="replace")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    try:
        data = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        log.warning("the source README.md has invalid YAML metadata; ignoring it")
        return {}
    return data if isinstance(data, dict) else {}


def inspect_folder(
    folder: Path, *, allow_pickle: bool = False, declared_base_model: str | None = None
) -> LocalSource:
    """Run every cheap check on a source folder and describe it."""
    config = read_config(folder)
    check_remote_code(config)
    has_safetensors = any(folder.glob("*.safetensors"))
    if not has_safetensors:
        pickles = [p for p in folder.iterdir() if _matches(p.name, PICKLE_FILES)]
        if pickles and not allow_pickle:
            raise SourceError(
                f"{folder} has only pickle weights ({pickles[0].name}); pass "
                "--allow-pickle to load them with torch's weights-only loader"
            )
        if not pickles:
            raise SourceError(f"{folder} has no weights (*.safetensors)")
    shards, dtypes, parameters = check_weights(folder) if has_safetensors else ([], {}, 0)
    if declared_base_model is not None and not REPO_ID.match(declared_base_model):
        raise UsageError(
            f"invalid --base-model {declared_base_model!r}: give a Hub repo id "
            "such as microsoft/Phi-3-mini-4k-instruct"
        )
    return LocalSource(
        path=folder,
        config=config,
        declared_base_model=declared_base_model,
        card_data=load_card_data(folder),
        weight_files=shards,
        tensor_dtypes=dtypes,
        parameters=parameters,
    )


def chat_template_of(folder: Path) -> str | None:
    """Return the chat template the way transformers finds it, or None."""
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text()
    json_file = folder / "chat_template.json"
    if json_file.is_file():
        template = json.loads(json_file.read_text()).get("chat_template")
        if isinstance(template, str):
            return template
    tokenizer_config = folder / "tokenizer_config.json"
    if tokenizer_config.is_file():
        template = json.loads(tokenizer_config.read_text()).get("chat_template")
        if isinstance(template, str):
            return template
    return None
