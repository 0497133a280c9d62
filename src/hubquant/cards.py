"""Model cards: YAML metadata and Markdown bodies rendered from Jinja2 templates.

Templates live in the repository's top-level ``templates/`` folder, which a
wheel installs as ``hubquant/templates``. They are rendered with
``StrictUndefined``, so a key missing from the context fails instead of
printing nothing. Autoescaping is off because the output is Markdown, not
HTML: every value that comes from the source model (names, license, tags,
tensor names) must go through the ``md`` filter, and links through ``link``.
"""

from __future__ import annotations

import json
import re
import shlex
import urllib.parse
from functools import cache
from pathlib import Path
from typing import Any, TypedDict

import jinja2
import yaml

import hubquant
from hubquant import hardware
from hubquant.testhub.cardcheck import MISSING_METADATA_WARNING, check_card

# Keys copied from the source card's metadata. Every other key is dropped.
INHERITED_KEYS = ("license", "license_name", "license_link", "language")

# Notable source keys that a quantized release must not carry, with the reason.
# The whitelist above already drops them, so this mapping documents the
# decision, and the tests check it.
DROPPED_SOURCE_KEYS = {
    "library_name": "the release is loaded by llama.cpp, ONNX Runtime or MLX, not transformers",
    "widget": "the Hub's inference widget runs transformers models",
    "inference": "the Hub's inference widget runs transformers models",
    "model-index": "evaluation results belong to the source, not to a quantization",
    "datasets": "the release was not trained on them, and calibration data belongs in the body",
    "base_model": "the release's base model is the source itself",
    "base_model_relation": "the release's relation to the source is always quantized",
    "extra_gated_prompt": "gating is a repo setting, so a copied prompt would gate nothing",
    "extra_gated_fields": "gating is a repo setting, so copied fields would gate nothing",
}

# Source tags that describe the transformers checkpoint, or that the Hub derives
# from other metadata, would mislabel a GGUF or ONNX release.
DROPPED_SOURCE_TAGS = frozenset(
    {
        "transformers",
        "safetensors",
        "pytorch",
        "custom_code",
        "autotrain_compatible",
        "endpoints_compatible",
        "text-generation-inference",
    }
)
DROPPED_TAG_PREFIXES = ("base_model:", "license:", "region:", "dataset:")

DEFAULT_PIPELINE_TAG = "text-generation"


class SourceInfo(TypedDict):
    """The model a release was made from."""

    id: str | None  # Hub repo id, or None for a local folder
    sha: str | None  # commit the files were read at
    url: str | None
    revision_url: str | None  # the source at `sha`
    local: bool
    declared_base_model: str | None  # `--base-model` given for a local folder
    architecture: str  # config.json `architectures[0]`
    parameters: int
    dtype: str
    license: str | None
    license_link: str | None
    private: bool
    gated: bool


class Check(TypedDict):
    """A validation check and its outcome."""

    name: str
    status: str  # "passed" | "failed" | "skipped"
    detail: str  # why it failed or was skipped, or what was measured


class FileValidation(TypedDict):
    """Measurements of one quantized file against the unquantized conversion."""

    status: str  # "passed" | "failed" | "forced"
    checks: list[Check]
    kl_mean: float | None  # KL divergence of next-token distributions, nats
    kl_max: float | None
    top1_agreement: float | None  # fraction of positions with the same top token
    max_abs_diff: float | None  # largest absolute logit difference


class Fallback(TypedDict):
    """A tensor stored in another type because its rows do not fit the type's blocks."""

    tensor: str
    columns: int
    block: int  # block size of the requested type
    type: str  # the type actually used


class GgufFile(TypedDict):
    """One GGUF file of a release, with its measurements."""

    name: str  # file name, which for a split file is the first part's
    type: str  # llama.cpp file type, such as Q4_K_M
    size_bytes: int
    bits_per_weight: float  # measured from the file: tensor bytes * 8 / weights
    tensor_types: dict[str, int]  # tensor type -> number of tensors
    fallbacks: list[Fallback]
    parts: list[str]  # all parts of a split file in order, empty when not split
    hardware: list[str]  # keys of `hubquant.hardware.HARDWARE`
    quality: str
    validation: FileValidation
    imatrix: bool  # quantized with the release's importance matrix
    imatrix_required: bool  # a type llama.cpp quantizes only with a matrix (IQ1-IQ3, Q2_K_S)
    output_type: str | None  # tensor type requested for output.weight
    embedding_type: str | None  # tensor type requested for token_embd.weight
    data_free: DataFreeComparison | None  # the same type without the matrix


class DataFreeComparison(TypedDict):
    """The same type quantized without the importance matrix, measured the same way."""

    target: str
    bits_per_weight: float
    kl_mean: float
    kl_max: float
    top1_agreement: float


class CalibrationTextInfo(TypedDict):
    """The text an importance matrix was computed from."""

    name: str  # corpus name, file name, or dataset id@sha
    kind: str  # "builtin" | "file" | "dataset"
    description: str
    license: str | None
    sha256: str
    characters: int
    documents: int
    chat_rendered: bool  # chat turns went through the model's chat template


class CalibrationInfo(TypedDict):
    """The release's importance matrix and how it was computed."""

    file: str
    chunks: int
    chunk_size: int  # tokens per chunk
    tokens: int  # tokens in the whole calibration text
    tokens_used: int  # chunks * chunk_size
    min_chunks: int  # fewer chunks are rejected
    text: CalibrationTextInfo


class ReferenceValidation(TypedDict):
    """The unquantized conversion checked against the source model in transformers."""

    status: str  # "passed" | "failed" | "skipped" (not compared)
    checks: list[Check]
    max_abs_diff: float | None
    top1_agreement: float | None
    prompts: int
    greedy_match: bool | None  # whether greedy continuations match, None when not run


class EosToken(TypedDict):
    """A token that ends generation."""

    id: int
    text: str


class Provenance(TypedDict):
    """How a release was made."""

    hubquant_version: str
    date: str  # YYYY-MM-DD
    tool_versions: dict[str, str]
    llama_cpp_build: str  # such as "b11312"
    llama_cpp_commit: str
    options: dict[str, Any]
    command: str


class MemoryGuidanceEntry(TypedDict):
    """One row of `hubquant.hardware.memory_guidance`."""

    key: str
    name: str
    typical_memory: str
    rule: str
    headroom: float
    note: str


class GgufCardContext(TypedDict):
    """Context of `templates/gguf.md.j2`. Every key is required."""

    metadata: dict[str, Any]  # YAML header, from `card_metadata`
    repo_id: str
    model_name: str
    backend: str  # "gguf"
    source: SourceInfo
    files: list[GgufFile]  # the first file is the one the usage examples use
    reference_validation: ReferenceValidation
    chat_template: str | None
    prompt_example: str | None  # an example conversation rendered with the chat template
    eos_tokens: list[EosToken]
    license_files: list[str]  # LICENSE, NOTICE and similar files copied from the source
    provenance: Provenance
    memory_guidance: list[MemoryGuidanceEntry]
    calibration: CalibrationInfo | None  # None when no file used an importance matrix


CONTEXT_SCHEMAS: dict[str, type] = {"gguf.md.j2": GgufCardContext}


def card_metadata(
    source_card: dict | None,
    *,
    base_model: str | None,
    library_name: str,
    backend_tags: list[str],
    extra_tags: list[str],
) -> dict:
    """Build a release's card metadata from the source card's metadata.

    `base_model` is the source repo id, or None for a local folder without a
    declared base model. License, license name and link and language are
    inherited. The pipeline tag is inherited or defaults to text-generation.
    Tags are the backend tags, then `extra_tags` (quantization types and
    hardware keys), then the source's own tags without transformers-only ones,
    all normalised to lower case without duplicates.
    """
    source = source_card or {}
    metadata: dict[str, Any] = {}
    if base_model is not None:
        metadata["base_model"] = base_model
        metadata["base_model_relation"] = "quantized"
    metadata["library_name"] = library_name
    pipeline_tag = source.get("pipeline_tag")
    metadata["pipeline_tag"] = pipeline_tag if isinstance(pipeline_tag, str) else DEFAULT_PIPELINE_TAG
    for key in INHERITED_KEYS:
        if source.get(key) is not None:
            metadata[key] = source[key]

    source_tags = [tag for tag in _tag_list(source.get("tags")) if not _is_dropped_tag(tag)]
    metadata["tags"] = normalise_tags([*backend_tags, *extra_tags, *source_tags])
    return metadata


def normalise_tags(tags: list[Any]) -> list[str]:
    """Lower-case and strip tags, dropping empty ones and repeats but keeping order."""
    result: list[str] = []
    for tag in tags:
        if tag is None:
            continue
        text = str(tag).strip().lower()
        if text and text not in result:
            result.append(text)
    return result


def dump_metadata(metadata: dict) -> str:
    """Return the YAML header block, including the ``---`` lines."""
    return "---\n" + yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True) + "---\n"


def render_card(template_name: str, context: dict) -> str:
    """Render a full README.md: the YAML header from ``context["metadata"]`` and the body.

    Raise KeyError naming the missing keys when the context lacks a top-level
    key of the template's schema. A missing nested key raises
    ``jinja2.UndefinedError`` while rendering.
    """
    schema = CONTEXT_SCHEMAS.get(template_name)
    required = getattr(schema, "__required_keys__", {"metadata"})
    missing = sorted(key for key in required if key not in context)
    if missing:
        raise KeyError(f"card context for {template_name} is missing keys: {', '.join(missing)}")

    body = _environment().get_template(template_name).render(context)
    return dump_metadata(context["metadata"]) + "\n" + body


def validate_card_metadata(text: str) -> list[str]:
    """Check a README's YAML header as the Hub's ``/api/validate-yaml`` does.

    Return the problems found, empty when the header is valid. The checks are
    the test Hub's (`hubquant.testhub.cardcheck`), so cards and the test server
    cannot disagree: YAML that parses to a mapping, valid `base_model` repo
    ids, a known `license` (or `other` with `license_name` and
    `license_link`), `tags` as a list of strings and a known
    `base_model_relation`. A missing header is a problem here, where the Hub
    only warns.
    """
    report = check_card(text, "model")
    problems = list(report.errors)
    if MISSING_METADATA_WARNING in report.warnings:
        problems.append("The README.md has no YAML metadata block between '---' lines.")
    return problems


def templates_dir() -> Path:
    """Return the templates folder: the installed package's, else the repository's."""
    installed = Path(hubquant.__file__).parent / "templates"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "templates"


# --- Jinja filters -------------------------------------------------------

# Characters with meaning in Markdown or HTML. `<`, `>` and `&` become HTML
# entities; the others get a backslash, which CommonMark allows before any
# ASCII punctuation.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~#])")
_HTML_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def escape_markdown(value: Any) -> str:
    """Escape a value so that it renders as literal text in Markdown, tables included.

    Newlines become spaces, because a source value must not start a new block
    or table row.
    """
    text = " ".join(str(value).split())
    text = "".join(_HTML_ENTITIES.get(char, char) for char in text)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def safe_url(url: Any) -> str | None:
    """Return `url` percent-encoded for a Markdown link, or None when it may not be linked.

    Only ``https://`` URLs are linked, and ``http://`` ones on 127.0.0.1 or
    localhost for the local test Hub.
    """
    if not isinstance(url, str) or any(char.isspace() or ord(char) < 32 for char in url):
        return None
    try:
        parts = urllib.parse.urlsplit(url)
        hostname = parts.hostname
    except ValueError:
        return None
    if not hostname:
        return None
    allowed = parts.scheme == "https" or (parts.scheme == "http" and hostname in _LOCAL_HOSTS)
    if not allowed:
        return None
    # Parentheses and angle brackets would end the link destination early.
    return urllib.parse.quote(url, safe=":/?#[]@!$&'*+,;=%~")


def markdown_link(text: Any, url: Any) -> str:
    """Render ``[text](url)`` when `url` is safe, else the escaped text alone."""
    target = safe_url(url)
    label = escape_markdown(text)
    if target is None:
        return label
    return f"[{label}]({target})"


def inline_code(value: Any) -> str:
    """Render a value as a code span whose delimiter no backtick run inside can close."""
    text = " ".join(str(value).split())
    fence = "`" * (_longest_backtick_run(text) + 1)
    if text.startswith("`") or text.endswith("`"):
        text = f" {text} "
    return f"{fence}{text}{fence}"


def fenced_block(content: str, language: str = "") -> str:
    """Wrap `content` in a code fence longer than any backtick run inside it."""
    fence = "`" * max(3, _longest_backtick_run(content) + 1)
    return f"{fence}{language}\n{content.rstrip(chr(10))}\n{fence}"


def human_size(size_bytes: int) -> str:
    """Format a byte count in decimal units, as the Hub lists file sizes (2.39 GB)."""
    if size_bytes < 1000:
        return f"{size_bytes} B"
    return _scaled(size_bytes, 1000, ("kB", "MB", "GB", "TB"), " ")


def human_count(count: int) -> str:
    """Format a parameter count such as 3821079552 as "3.82B"."""
    if count < 1000:
        return str(count)
    return _scaled(count, 1000, ("K", "M", "B", "T"), "")


def number(value: float | None, digits: int = 4) -> str:
    """Format a measurement with `digits` significant digits, or "not measured"."""
    if value is None:
        return "not measured"
    return f"{value:.{digits}g}"


def percent(value: float | None) -> str:
    """Format a fraction such as 0.9875 as "98.75%", or "not measured"."""
    if value is None:
        return "not measured"
    return f"{value * 100:.2f}%"


def python_string(value: Any) -> str:
    """Render a value as a double-quoted Python string literal."""
    # Every escape JSON writes (backslash-quote, backslash-n, backslash-u) is valid in Python.
    return json.dumps(str(value), ensure_ascii=False)


def hardware_name(key: str) -> str:
    return hardware.get_hardware(key).name


def files_for_hardware(files: list[dict], key: str, backend: str) -> list[dict]:
    """Return the files that list hardware `key`, in that hardware's order of preference.

    Files whose type the hardware entry does not list keep their order, last.
    """
    entry = hardware.get_hardware(key)
    ranking = [hardware.parse_target(target) for target in (*entry.targets, *entry.also_runs)]
    suitable = [file for file in files if key in file["hardware"]]

    def rank(file: dict) -> int:
        target = hardware.parse_target(f"{backend}:{file['type']}")
        return ranking.index(target) if target in ranking else len(ranking)

    return sorted(suitable, key=rank)


def _scaled(value: float, base: int, units: tuple[str, ...], separator: str) -> str:
    # Three significant digits; move to the next unit before rounding shows 1000.
    scaled = value / base
    unit_index = 0
    while scaled >= 999.5 and unit_index < len(units) - 1:
        scaled /= base
        unit_index += 1
    if scaled < 9.995:
        digits = 2
    elif scaled < 99.95:
        digits = 1
    else:
        digits = 0
    return f"{scaled:.{digits}f}{separator}{units[unit_index]}"


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def _tag_list(tags: Any) -> list[Any]:
    # A YAML `tags: nlp` is one tag, not a list of letters.
    if tags is None:
        return []
    if isinstance(tags, (str, int, float)):
        return [tags]
    if isinstance(tags, list):
        return tags
    return []


def _is_dropped_tag(tag: Any) -> bool:
    text = str(tag).strip().lower()
    return text in DROPPED_SOURCE_TAGS or text.startswith(DROPPED_TAG_PREFIXES)


@cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters.update(
        md=escape_markdown,
        link=markdown_link,
        code=inline_code,
        fenced=fenced_block,
        human_size=human_size,
        human_count=human_count,
        number=number,
        percent=percent,
        hardware_name=hardware_name,
        for_hardware=files_for_hardware,
        shell=shlex.quote,
        py_string=python_string,
    )
    environment.globals["required_bytes"] = hardware.required_bytes
    return environment
