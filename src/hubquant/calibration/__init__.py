"""Calibration text for importance matrices and data-aware quantization.

By default the text is hubquant's own corpus (``corpus/``, public domain):
prose in six languages, short programs, and chat turns rendered through the
model's chat template. A user can name a local text file or a Hub dataset
instead. Nothing is downloaded unless the user names a dataset.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from hubquant.errors import UsageError

CORPUS_DIR = Path(__file__).parent / "corpus"
CORPUS_NAME = "hubquant-calibration-v1"
CORPUS_LICENSE = "cc0-1.0"
# Files a Hub dataset may hold calibration text in, read in sorted order.
DATASET_PATTERNS = ("*.txt", "*.jsonl")
DOCUMENT_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class CalibrationOptions:
    """Settings of the importance-matrix computation and its minimum coverage."""

    chunk_size: int = 512  # tokens per chunk, as llama-imatrix's default context
    min_chunks: int = 8  # a matrix over fewer chunks is rejected
    max_chunks: int | None = None  # stop after this many chunks (llama-imatrix's --chunks)

    def __post_init__(self) -> None:
        if self.chunk_size < 16:
            raise UsageError(f"--imatrix-chunk-size {self.chunk_size} is too small; use 16 tokens or more")
        if self.min_chunks < 1:
            raise UsageError(f"--imatrix-min-chunks {self.min_chunks} must be at least 1")
        if self.max_chunks is not None and self.max_chunks < 1:
            raise UsageError(f"--imatrix-max-chunks {self.max_chunks} must be at least 1")


@dataclass(frozen=True)
class CalibrationText:
    """The text a job calibrates with, and the facts the card reports about it."""

    name: str  # the corpus name, a file name, or a dataset id with its commit
    kind: str  # "builtin", "file" or "dataset"
    license: str | None
    description: str
    text: str
    documents: int
    chat_rendered: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def samples(self, limit: int = 128) -> list[str]:
        """Return up to ``limit`` paragraphs of the text, as separate calibration samples."""
        paragraphs = [part.strip() for part in self.text.split(DOCUMENT_SEPARATOR)]
        return [part for part in paragraphs if part][:limit]

    def write(self, path: Path) -> Path:
        path.write_text(self.text, encoding="utf-8")
        return path

    def card_facts(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "license": self.license,
            "description": self.description,
            "characters": len(self.text),
            "documents": self.documents,
            "sha256": self.sha256,
            "chat_rendered": self.chat_rendered,
        }


def builtin_corpus(chat_template: str | None = None, model_folder: Path | None = None) -> CalibrationText:
    """Return hubquant's own corpus, with its chat turns rendered for the model."""
    documents = [path.read_text(encoding="utf-8") for path in sorted(CORPUS_DIR.glob("*.txt"))]
    conversations = _read_jsonl(CORPUS_DIR / "chat.jsonl")
    rendered = [_render_chat(conversation, chat_template, model_folder) for conversation in conversations]
    documents += [text for text, _ in rendered]
    return CalibrationText(
        name=CORPUS_NAME,
        kind="builtin",
        license=CORPUS_LICENSE,
        description=(
            "hubquant's own public-domain calibration corpus: prose in six languages, "
            "short programs in eight languages and sixteen chat conversations"
        ),
        text=DOCUMENT_SEPARATOR.join(documents),
        documents=len(documents),
        chat_rendered=any(used for _, used in rendered),
    )


def text_file(path: Path, chat_template: str | None = None, model_folder: Path | None = None) -> CalibrationText:
    """Read a user's calibration file: plain text, or JSON lines with ``text`` or ``messages``."""
    if not path.is_file():
        raise UsageError(f"calibration file {str(path)!r} not found; pass an existing .txt or .jsonl file")
    documents, chat_rendered = _documents_of(path, chat_template, model_folder)
    if not any(document.strip() for document in documents):
        raise UsageError(f"calibration file {str(path)!r} contains no text")
    return CalibrationText(
        name=path.name,
        kind="file",
        license=None,
        description=f"the user's file {path.name}",
        text=DOCUMENT_SEPARATOR.join(documents),
        documents=len(documents),
        chat_rendered=chat_rendered,
    )


def hub_dataset(
    api, spec: str, destination: Path, chat_template: str | None = None, model_folder: Path | None = None
) -> CalibrationText:
    """Download the .txt and .jsonl files of a Hub dataset (``ID`` or ``ID@REVISION``)."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    repo_id, _, revision = spec.partition("@")
    try:
        info = api.dataset_info(repo_id, revision=revision or None)
    except GatedRepoError as error:
        raise UsageError(f"calibration dataset {repo_id!r} is gated; request access on the Hub first") from error
    except RevisionNotFoundError as error:
        raise UsageError(f"calibration dataset {repo_id!r} has no revision {revision!r}") from error
    except RepositoryNotFoundError as error:
        raise UsageError(
            f"calibration dataset {repo_id!r} not found, or private to another account; check the id"
        ) from error
    folder = Path(
        api.snapshot_download(
            repo_id, repo_type="dataset", revision=info.sha, local_dir=destination,
            allow_patterns=list(DATASET_PATTERNS),
        )
    )  # fmt: skip
    files = sorted(path for pattern in DATASET_PATTERNS for path in folder.rglob(pattern) if ".cache" not in path.parts)
    if not files:
        raise UsageError(f"calibration dataset {repo_id!r} has no .txt or .jsonl files to read text from")
    documents: list[str] = []
    chat_rendered = False
    for path in files:
        found, rendered = _documents_of(path, chat_template, model_folder)
        documents += found
        chat_rendered = chat_rendered or rendered
    card = info.card_data.to_dict() if info.card_data else {}
    license_id = card.get("license")
    return CalibrationText(
        name=f"{repo_id}@{info.sha}",
        kind="dataset",
        license=license_id if isinstance(license_id, str) else None,
        description=f"the Hub dataset {repo_id} at commit {info.sha}",
        text=DOCUMENT_SEPARATOR.join(documents),
        documents=len(documents),
        chat_rendered=chat_rendered,
    )


def _documents_of(path: Path, chat_template: str | None, model_folder: Path | None) -> tuple[list[str], bool]:
    if path.suffix != ".jsonl":
        return [path.read_text(encoding="utf-8")], False
    documents: list[str] = []
    chat_rendered = False
    for number, record in enumerate(_read_jsonl(path), start=1):
        if isinstance(record.get("text"), str):
            documents.append(record["text"])
        elif isinstance(record.get("messages"), list):
            text, used = _render_chat(record, chat_template, model_folder)
            documents.append(text)
            chat_rendered = chat_rendered or used
        else:
            raise UsageError(
                f"{path.name} line {number}: expected an object with a \"text\" string or a "
                "\"messages\" list"
            )
    return documents, chat_rendered


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UsageError(f"{path.name} line {number} is not valid JSON: {error.msg}") from error
        if not isinstance(record, dict):
            raise UsageError(f"{path.name} line {number}: expected a JSON object")
        records.append(record)
    return records


def _render_chat(conversation: dict, chat_template: str | None, model_folder: Path | None) -> tuple[str, bool]:
    """Render a conversation through the chat template; return the text and whether the template rendered it."""
    messages = conversation["messages"]
    if chat_template and model_folder is not None:
        from hubquant.cards_context import render_conversation

        rendered = render_conversation(chat_template, model_folder, messages)
        if rendered is not None:
            return rendered, True
    return "\n".join(f"{message['role']}: {message['content']}" for message in messages), False
