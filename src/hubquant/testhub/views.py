"""JSON of repos, files and commits, with the field names `huggingface_hub` reads.

Field names follow the dataclasses of `huggingface_hub.hf_api` (2.4.0):
`ModelInfo`, `DatasetInfo`, `SpaceInfo`, `RepoSibling`, `RepoFile`,
`RepoFolder`, `GitRefInfo` and `GitCommitInfo`.
"""

from __future__ import annotations

import html
import json

from hubquant.testhub.cardcheck import card_data
from hubquant.testhub.gitobjects import tree_ids
from hubquant.testhub.naming import stable_id
from hubquant.testhub.storage import Commit, FileEntry, Repo, format_date

# Properties of a listing entry without `full`, `expand` or `cardData`, as the
# Hub returns them for /api/models.
_LIST_FIELDS = (
    "_id",
    "id",
    "likes",
    "trendingScore",
    "private",
    "downloads",
    "tags",
    "pipeline_tag",
    "library_name",
    "createdAt",
    "modelId",
)
_FULL_EXTRA_FIELDS = ("author", "sha", "lastModified", "gated", "disabled", "siblings")

# Tags the Hub derives from file names.
_FILE_TAGS = {".safetensors": "safetensors", ".gguf": "gguf", ".onnx": "onnx"}


def repo_info(
    repo: Repo,
    commit: Commit,
    *,
    with_blobs: bool = False,
    fields: list[str] | None = None,
) -> dict:
    """Return everything `model_info` (or `dataset_info`, `space_info`) reads.

    `fields` keeps only those properties, plus `_id` and `id`, as `expand=` does.
    """
    card = _card(repo, commit)
    siblings = [
        _sibling(path, entry, with_blobs)
        for path, entry in sorted(commit.files.items())
    ]
    data: dict = {
        "_id": object_id(repo),
        "id": repo.id,
        "author": repo.namespace,
        "sha": commit.id,
        "lastModified": format_date(commit.date),
        "createdAt": repo.settings.created_at,
        "private": repo.settings.private,
        "gated": repo.settings.gated,
        "disabled": False,
        "downloads": 0,
        "downloadsAllTime": 0,
        "likes": 0,
        "trendingScore": 0,
        "tags": _tags(repo, commit, card),
        "siblings": siblings,
        "usedStorage": sum(entry.size for entry in commit.files.values()),
    }
    if card is not None:
        data["cardData"] = card
    if repo.type == "model":
        data["modelId"] = repo.id
        data["pipeline_tag"] = card.get("pipeline_tag") if card else None
        data["library_name"] = card.get("library_name") if card else None
        data["spaces"] = []
        config = _json_file(repo, commit, "config.json")
        if config is not None:
            data["config"] = config
    elif repo.type == "space":
        data["sdk"] = repo.settings.sdk
        data["runtime"] = {
            "stage": "NO_APP_FILE",
            "hardware": {"current": None, "requested": None},
        }
    if fields is not None:
        data = {
            key: value for key, value in data.items() if key in ("_id", "id", *fields)
        }
    return data


def list_entry(
    repo: Repo,
    commit: Commit,
    *,
    full: bool,
    with_card: bool,
    with_config: bool,
    fields: list[str] | None,
) -> dict:
    """Return one item of /api/models (or datasets, spaces) as the Hub shapes it."""
    info = repo_info(repo, commit)
    if fields is not None:
        return {
            key: value for key, value in info.items() if key in ("_id", "id", *fields)
        }
    keep = set(_LIST_FIELDS)
    if full:
        keep.update(_FULL_EXTRA_FIELDS)
    if with_card:
        keep.add("cardData")
    if with_config:
        keep.add("config")
    entry = {key: value for key, value in info.items() if key in keep}
    if "siblings" in entry:
        entry["siblings"] = [
            {"rfilename": sibling["rfilename"]} for sibling in entry["siblings"]
        ]
    return entry


def file_entry(
    repo: Repo, commit: Commit, path: str, entry: FileEntry, *, expand: bool
) -> dict:
    data: dict = {"type": "file", "oid": entry.blob, "size": entry.size, "path": path}
    if entry.lfs_oid is not None:
        data["lfs"] = {
            "oid": entry.lfs_oid,
            "size": entry.size,
            "pointerSize": entry.pointer_size,
        }
    if expand:
        data["lastCommit"] = last_commit(repo, commit, path)
        data["securityFileStatus"] = {
            "status": "safe",
            "avScan": {"virusFound": False, "virusNames": None},
            "pickleImportScan": None,
        }
    return data


def folder_entry(repo: Repo, commit: Commit, path: str, *, expand: bool) -> dict:
    data: dict = {
        "type": "directory",
        "oid": folder_ids(commit)[path],
        "size": 0,
        "path": path,
    }
    if expand:
        data["lastCommit"] = last_commit(repo, commit, path)
    return data


def folder_ids(commit: Commit) -> dict[str, str]:
    return tree_ids({path: entry.blob for path, entry in commit.files.items()})


def last_commit(repo: Repo, commit: Commit, path: str) -> dict:
    """Return the newest commit, up to `commit`, that changed a file or folder."""

    def state(candidate: Commit) -> object:
        if path in candidate.files:
            return candidate.files[path]
        prefix = path + "/"
        return sorted(
            (key, value)
            for key, value in candidate.files.items()
            if key.startswith(prefix)
        )

    newest = commit
    current = state(commit)
    for ancestor in repo.history(commit.id):
        if state(ancestor) != current:
            break
        newest = ancestor
    return {"id": newest.id, "title": newest.title, "date": format_date(newest.date)}


def commit_entry(commit: Commit, *, formatted: bool) -> dict:
    data: dict = {
        "id": commit.id,
        "title": commit.title,
        "message": commit.message,
        "authors": [{"user": author, "avatar": None} for author in commit.authors],
        "date": format_date(commit.date),
    }
    if formatted:
        data["formatted"] = {
            "title": html.escape(commit.title),
            "message": html.escape(commit.message),
        }
    return data


def _sibling(path: str, entry: FileEntry, with_blobs: bool) -> dict:
    data: dict = {"rfilename": path}
    if with_blobs:
        data["size"] = entry.size
        data["blobId"] = entry.blob
        if entry.lfs_oid is not None:
            data["lfs"] = {
                "sha256": entry.lfs_oid,
                "size": entry.size,
                "pointerSize": entry.pointer_size,
            }
    return data


def _card(repo: Repo, commit: Commit) -> dict | None:
    readme = repo.read_text_file(commit, "README.md")
    if readme is None:
        return None
    data = card_data(readme)
    if data is None:
        return None
    # Round-trip through JSON so dates and other YAML types become plain values.
    return json.loads(json.dumps(data, default=str))


def _json_file(repo: Repo, commit: Commit, path: str) -> dict | None:
    text = repo.read_text_file(commit, path)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _tags(repo: Repo, commit: Commit, card: dict | None) -> list[str]:
    """Return the tags the Hub derives from the card, the files and the license."""
    tags: list[str] = []
    card = card or {}
    card_tags = card.get("tags")
    if isinstance(card_tags, list):
        tags += [tag for tag in card_tags if isinstance(tag, str)]
    if isinstance(card.get("library_name"), str):
        tags.append(card["library_name"])
    for suffix, tag in _FILE_TAGS.items():
        if any(path.endswith(suffix) for path in commit.files):
            tags.append(tag)
    if isinstance(card.get("pipeline_tag"), str):
        tags.append(card["pipeline_tag"])
    base_models = card.get("base_model")
    if isinstance(base_models, str):
        base_models = [base_models]
    relation = card.get("base_model_relation")
    for base_model in base_models if isinstance(base_models, list) else []:
        if isinstance(base_model, str):
            tags.append(f"base_model:{base_model}")
            if isinstance(relation, str):
                tags.append(f"base_model:{relation}:{base_model}")
    licenses = card.get("license")
    for license_id in licenses if isinstance(licenses, list) else [licenses]:
        if isinstance(license_id, str):
            tags.append(f"license:{license_id}")
    tags.append("region:us")
    return list(dict.fromkeys(tags))


def object_id(repo: Repo) -> str:
    return stable_id(repo.type, repo.id.lower(), repo.settings.created_at)
