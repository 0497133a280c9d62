"""Model card checks of /api/validate-yaml, seen through the client's own errors."""

from __future__ import annotations

import warnings

import pytest
from huggingface_hub import ModelCard, constants

VALID_CARD = """\
---
license: other
license_name: phi-research
license_link: LICENSE
base_model:
- microsoft/phi-2
- microsoft/Phi-3-mini-4k-instruct
base_model_relation: quantized
pipeline_tag: text-generation
library_name: gguf
language: en
tags:
- gguf
- quantized
---
# A quantized model
"""

INVALID_CARDS = {
    "bad_yaml": ("---\nlicense: [mit\n---\n", "Invalid YAML"),
    "not_mapping": ("---\n- just\n- a list\n---\n", "must be a YAML mapping"),
    "bad_base_model": ("---\nbase_model: not a repo id!\n---\n", '"base_model"'),
    "bad_base_model_in_list": (
        "---\nbase_model:\n- microsoft/phi-2\n- bad//id\n---\n",
        '"base_model"',
    ),
    "unknown_license": ("---\nlicense: totally-free\n---\n", '"license"'),
    "other_without_name": (
        "---\nlicense: other\nlicense_link: LICENSE\n---\n",
        "license_name",
    ),
    "other_without_link": (
        "---\nlicense: other\nlicense_name: custom\n---\n",
        "license_link",
    ),
    "tags_string": (
        "---\ntags: text-generation\n---\n",
        '"tags" must be a list of strings',
    ),
    "tags_numbers": ("---\ntags:\n- 1\n- 2\n---\n", '"tags" must be a list of strings'),
    "bad_relation": (
        "---\nbase_model: microsoft/phi-2\nbase_model_relation: distilled\n---\n",
        '"base_model_relation"',
    ),
    "relation_without_base": (
        "---\nbase_model_relation: quantized\n---\n",
        '"base_model" is missing',
    ),
    "unknown_pipeline_tag": ("---\npipeline_tag: text-magic\n---\n", '"pipeline_tag"'),
}


def upload_readme(api, repo_id: str, text: str):
    return api.upload_file(
        path_or_fileobj=text.encode(), path_in_repo="README.md", repo_id=repo_id
    )


@pytest.mark.parametrize("case", sorted(INVALID_CARDS))
def test_invalid_card_rejected(alice, repo_id, case):
    text, expected = INVALID_CARDS[case]
    with pytest.raises(ValueError, match="Invalid metadata in README.md") as caught:
        upload_readme(alice, repo_id, text)
    assert expected in str(caught.value)


def test_invalid_card_not_committed(alice, repo_id):
    with pytest.raises(ValueError):
        upload_readme(alice, repo_id, INVALID_CARDS["unknown_license"][0])
    assert alice.list_repo_files(repo_id) == [".gitattributes"]


def test_valid_card_accepted(alice, repo_id):
    upload_readme(alice, repo_id, VALID_CARD)
    info = alice.model_info(repo_id)
    assert info.card_data["license_name"] == "phi-research"
    assert "base_model:quantized:microsoft/phi-2" in info.tags
    assert info.pipeline_tag == "text-generation"


def test_card_without_metadata_warns(alice, repo_id):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        upload_readme(alice, repo_id, "# No metadata\n")
    messages = [str(warning.message) for warning in caught]
    assert any("empty or missing yaml metadata" in message for message in messages)
    assert "README.md" in alice.list_repo_files(repo_id)


def test_dataset_card_license_list(alice, repo_name):
    repo_id = f"alice/{repo_name}"
    alice.create_repo(repo_id, repo_type="dataset")
    alice.upload_file(
        path_or_fileobj=b"---\nlicense:\n- mit\n- cc-by-4.0\n---\n",
        path_in_repo="README.md",
        repo_id=repo_id,
        repo_type="dataset",
    )
    assert alice.dataset_info(repo_id).card_data["license"] == ["mit", "cc-by-4.0"]


def test_model_card_validate_text(hub):
    # RepoCard.validate always posts to HF_ENDPOINT and requests a plain-text error.
    if constants.ENDPOINT != hub.url:
        pytest.skip(
            "huggingface_hub was imported before HF_ENDPOINT pointed at the test Hub"
        )
    with pytest.raises(ValueError, match='"license"'):
        ModelCard("---\nlicense: nope\n---\n# Card\n").validate()
