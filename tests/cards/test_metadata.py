"""Card metadata: what a release inherits from its source card, and the Hub's checks."""

from __future__ import annotations

import yaml
from card_examples import load_source_card

from hubquant.cards import (
    DROPPED_SOURCE_KEYS,
    card_metadata,
    dump_metadata,
    validate_card_metadata,
)

BACKEND_TAGS = ["gguf", "llama.cpp", "quantized"]


def metadata_for(source_card, base_model="microsoft/Phi-3.5-mini-instruct", extra_tags=()):
    return card_metadata(
        source_card,
        base_model=base_model,
        library_name="gguf",
        backend_tags=BACKEND_TAGS,
        extra_tags=list(extra_tags),
    )


def test_inherits_license_and_language():
    metadata = metadata_for(load_source_card("Phi-3.5-mini-instruct"))
    assert metadata["license"] == "mit"
    assert (
        metadata["license_link"]
        == "https://huggingface.co/microsoft/Phi-3.5-mini-instruct/resolve/main/LICENSE"
    )
    assert metadata["language"] == ["multilingual"]
    assert metadata["pipeline_tag"] == "text-generation"


def test_inherits_other_license_name():
    source = {"license": "other", "license_name": "phi-custom", "license_link": "LICENSE"}
    metadata = metadata_for(source)
    assert metadata["license"] == "other"
    assert metadata["license_name"] == "phi-custom"
    assert metadata["license_link"] == "LICENSE"


def test_base_model_is_quantized():
    metadata = metadata_for(load_source_card("Phi-3.5-mini-instruct"))
    assert metadata["base_model"] == "microsoft/Phi-3.5-mini-instruct"
    assert metadata["base_model_relation"] == "quantized"


def test_key_order():
    metadata = metadata_for(load_source_card("Phi-3.5-mini-instruct"))
    assert list(metadata) == [
        "base_model",
        "base_model_relation",
        "library_name",
        "pipeline_tag",
        "license",
        "license_link",
        "language",
        "tags",
    ]


def test_drops_transformers_keys():
    source = load_source_card("Phi-3.5-mini-instruct")
    source.update(
        {
            "inference": False,
            "model-index": [{"name": "phi"}],
            "datasets": ["some/dataset"],
            "base_model": "microsoft/phi-3-base",
            "extra_gated_prompt": "accept",
            "context_length": ["4k"],
        }
    )
    metadata = metadata_for(source)
    for key in DROPPED_SOURCE_KEYS:
        if key in ("library_name", "base_model", "base_model_relation"):
            continue
        assert key not in metadata, key
    assert "context_length" not in metadata
    assert metadata["library_name"] == "gguf"
    assert metadata["base_model"] == "microsoft/Phi-3.5-mini-instruct"


def test_tag_order():
    metadata = metadata_for(
        load_source_card("Phi-3.5-mini-instruct"), extra_tags=["q4_k_m", "phone"]
    )
    assert metadata["tags"] == ["gguf", "llama.cpp", "quantized", "q4_k_m", "phone", "nlp", "code"]


def test_tags_normalised():
    source = {"tags": ["  NLP ", "nlp", "Code", "", None, 2024, "GGUF"]}
    metadata = metadata_for(source, extra_tags=["Q4_K_M", "q4_k_m "])
    assert metadata["tags"] == ["gguf", "llama.cpp", "quantized", "q4_k_m", "nlp", "code", "2024"]


def test_string_tag_is_one_tag():
    metadata = metadata_for({"tags": "nlp"})
    assert metadata["tags"] == ["gguf", "llama.cpp", "quantized", "nlp"]


def test_drops_transformers_tags():
    source = {
        "tags": [
            "transformers",
            "safetensors",
            "custom_code",
            "autotrain_compatible",
            "endpoints_compatible",
            "text-generation-inference",
            "license:mit",
            "base_model:microsoft/phi-2",
            "region:us",
            "phi3",
        ]
    }
    metadata = metadata_for(source)
    assert metadata["tags"] == ["gguf", "llama.cpp", "quantized", "phi3"]


def test_no_source_card():
    metadata = metadata_for(None)
    assert metadata["pipeline_tag"] == "text-generation"
    assert "license" not in metadata
    assert metadata["tags"] == BACKEND_TAGS


def test_source_pipeline_tag_kept():
    metadata = metadata_for({"pipeline_tag": "image-text-to-text"})
    assert metadata["pipeline_tag"] == "image-text-to-text"


def test_local_folder_without_base_model():
    metadata = metadata_for(load_source_card("Phi-tiny-MoE-instruct"), base_model=None)
    assert "base_model" not in metadata
    assert "base_model_relation" not in metadata
    assert validate_card_metadata(dump_metadata(metadata)) == []


def test_local_folder_with_declared_base():
    metadata = metadata_for(load_source_card("Phi-tiny-MoE-instruct"), base_model="microsoft/phi-2")
    assert metadata["base_model"] == "microsoft/phi-2"
    assert metadata["base_model_relation"] == "quantized"


def test_source_card_not_modified():
    source = load_source_card("Phi-3.5-mini-instruct")
    before = yaml.safe_dump(source)
    metadata_for(source, extra_tags=["q4_k_m"])
    assert yaml.safe_dump(source) == before


def test_dump_round_trips_unicode():
    metadata = metadata_for({"license": "mit", "tags": ["日本語"]})
    text = dump_metadata(metadata)
    assert "日本語" in text
    assert yaml.safe_load(text.strip("-\n")) == metadata


def test_validate_accepts_release_metadata():
    metadata = metadata_for(load_source_card("Phi-3.5-mini-instruct"), extra_tags=["q4_k_m"])
    assert validate_card_metadata(dump_metadata(metadata) + "\n# Body\n") == []


def test_validate_rejects_missing_header():
    problems = validate_card_metadata("# Only a body\n")
    assert len(problems) == 1


def test_validate_rejects_bad_base_model():
    problems = validate_card_metadata("---\nbase_model: not a/valid/id\n---\n")
    assert any("base_model" in problem for problem in problems)


def test_validate_rejects_unknown_license():
    problems = validate_card_metadata("---\nlicense: my-license\n---\n")
    assert any("license" in problem for problem in problems)


def test_validate_other_license_needs_name():
    problems = validate_card_metadata("---\nlicense: other\n---\n")
    assert any("license_name" in problem for problem in problems)
    assert any("license_link" in problem for problem in problems)


def test_validate_rejects_string_tags():
    problems = validate_card_metadata("---\ntags: gguf\n---\n")
    assert any("tags" in problem for problem in problems)


def test_validate_rejects_bad_relation():
    problems = validate_card_metadata(
        "---\nbase_model: microsoft/phi-2\nbase_model_relation: distilled\n---\n"
    )
    assert any("base_model_relation" in problem for problem in problems)


def test_validate_rejects_non_mapping():
    problems = validate_card_metadata("---\n- a\n- b\n---\n")
    assert any("mapping" in problem for problem in problems)


def test_validate_rejects_invalid_yaml():
    problems = validate_card_metadata("---\nlicense: [mit\n---\n")
    assert any("Invalid YAML" in problem for problem in problems)
