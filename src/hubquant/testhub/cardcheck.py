"""Repo card metadata: read the YAML block of a README and check it as the Hub does."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from hubquant.testhub.hubids import BASE_MODEL_RELATIONS, LICENSE_IDS, PIPELINE_TAGS
from hubquant.testhub.naming import is_valid_repo_id

# Same pattern as `huggingface_hub.repocard.REGEX_YAML_BLOCK` (2.4.0), so the
# server and the client agree on where the metadata block ends.
_YAML_BLOCK = re.compile(
    r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))"
)

# The Hub's own wording for a card without metadata.
MISSING_METADATA_WARNING = "empty or missing yaml metadata in repo card"

_LICENSE_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]*$")


@dataclass
class CardReport:
    """Errors reject the card; warnings are passed to the client, which shows them."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def metadata_block(readme: str) -> str | None:
    """Return the YAML text between the leading `---` lines, or None without them."""
    match = _YAML_BLOCK.search(readme)
    return match.group(2) if match else None


def card_data(readme: str) -> dict | None:
    """Return the card metadata as a mapping, or None when it is missing or invalid."""
    block = metadata_block(readme)
    if block is None:
        return None
    try:
        data = yaml.safe_load(block)
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def check_card(readme: str, repo_type: str) -> CardReport:
    """Check a README's metadata block the way `POST /api/validate-yaml` does."""
    report = CardReport()
    block = metadata_block(readme)
    if block is None or not block.strip():
        report.warnings.append(MISSING_METADATA_WARNING)
        return report

    try:
        data = yaml.safe_load(block)
    except yaml.YAMLError as error:
        report.errors.append(
            f"Invalid YAML in the README.md metadata block: {_one_line(error)}"
        )
        return report
    if data is None:
        report.warnings.append(MISSING_METADATA_WARNING)
        return report
    if not isinstance(data, dict):
        report.errors.append(
            "The README.md metadata must be a YAML mapping of keys to values,"
            f" not a {type(data).__name__}."
        )
        return report

    _check_license(data, repo_type, report)
    _check_base_model(data, report)
    _check_string_list(data, "tags", report, allow_single=False)
    _check_string_list(data, "datasets", report, allow_single=True)
    _check_string_list(data, "language", report, allow_single=True)
    if "library_name" in data and not isinstance(data["library_name"], str):
        report.errors.append(
            f'"library_name" must be a string, got {data["library_name"]!r}.'
        )
    if repo_type == "model" and "pipeline_tag" in data:
        tag = data["pipeline_tag"]
        if not isinstance(tag, str) or tag not in PIPELINE_TAGS:
            report.errors.append(
                '"pipeline_tag" must be a task id the Hub knows'
                ' (such as "text-generation"),'
                f" got {tag!r}."
            )
    return report


def _check_license(data: dict, repo_type: str, report: CardReport) -> None:
    if "license" not in data:
        return
    value = data["license"]
    # Dataset cards may list several licenses; model cards name one.
    values = value if isinstance(value, list) and repo_type == "dataset" else [value]
    for license_id in values:
        if not isinstance(license_id, str) or license_id not in LICENSE_IDS:
            report.errors.append(
                '"license" must be a license id the Hub knows'
                ' (such as "apache-2.0" or "mit"),'
                f' got {license_id!r}. For a custom license, use "other" with'
                ' "license_name" and "license_link".'
            )
    if "other" in values:
        name = data.get("license_name")
        if not isinstance(name, str) or not _LICENSE_NAME.match(name):
            report.errors.append(
                '"license: other" needs "license_name", a lowercase id of letters,'
                f" digits, dots and dashes, got {name!r}."
            )
        link = data.get("license_link")
        if not isinstance(link, str) or not link.strip():
            report.errors.append(
                '"license: other" needs "license_link", a URL or a path to the license'
                f" file in the repo, got {link!r}."
            )


def _check_base_model(data: dict, report: CardReport) -> None:
    if "base_model" in data:
        value = data["base_model"]
        models = value if isinstance(value, list) else [value]
        for model in models:
            if not isinstance(model, str) or not is_valid_repo_id(model):
                report.errors.append(
                    '"base_model" must be a model id such as "microsoft/phi-2",'
                    f" got {model!r}."
                )
    if "base_model_relation" in data:
        relation = data["base_model_relation"]
        if relation not in BASE_MODEL_RELATIONS:
            report.errors.append(
                '"base_model_relation" must be one of'
                f" {', '.join(BASE_MODEL_RELATIONS)},"
                f" got {relation!r}."
            )
        if "base_model" not in data:
            report.errors.append(
                '"base_model_relation" is set but "base_model" is missing.'
            )


def _check_string_list(
    data: dict, key: str, report: CardReport, *, allow_single: bool
) -> None:
    if key not in data:
        return
    value = data[key]
    if allow_single and isinstance(value, str):
        return
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        expected = (
            "a string or a list of strings" if allow_single else "a list of strings"
        )
        report.errors.append(f'"{key}" must be {expected}, got {value!r}.')


def _one_line(error: yaml.YAMLError) -> str:
    return " ".join(str(error).split())
