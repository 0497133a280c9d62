"""Build the model-card context from measured facts of a release."""

from __future__ import annotations

import json

from hubquant import __version__
from hubquant.backends.base import Release
from hubquant.source import LocalSource, chat_template_of

EXAMPLE_CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "How do I quantize a model?"},
]


def render_prompt_example(template: str | None, folder) -> str | None:
    """Render the chat template on a fixed conversation with the source's tokens."""
    if not template:
        return None
    return render_conversation(template, folder, EXAMPLE_CONVERSATION, add_generation_prompt=True)


def render_conversation(template: str, folder, messages: list[dict], *, add_generation_prompt: bool = False) -> str | None:
    """Render ``messages`` through a chat template in a sandbox; None if the template fails."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    tokens = _special_tokens(folder)
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    try:
        return environment.from_string(template).render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=tokens.get("bos_token", ""),
            eos_token=tokens.get("eos_token", ""),
        )
    except Exception:  # a template may rely on helpers only transformers defines
        return None


def _special_tokens(folder) -> dict[str, str]:
    config_file = folder / "tokenizer_config.json"
    if not config_file.is_file():
        return {}
    config = json.loads(config_file.read_text())
    tokens = {}
    for key in ("bos_token", "eos_token"):
        value = config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            tokens[key] = value
    return tokens


def _token_text(folder, token: int) -> str:
    from hubquant.backends.gguf import _token_texts

    return _token_texts(folder).get(token, "")


def _file_entry(entry: dict) -> dict:
    from hubquant.hardware import gguf_type_hint

    from hubquant.backends.gguf import IMATRIX_TYPES, GgufVariant, parse_variant

    backend, precision = entry["target"].split(":", 1)
    # The ONNX card builds on this context too; only GGUF targets carry GGUF options.
    variant = parse_variant(precision) if backend == "gguf" else GgufVariant(precision)
    hint = gguf_type_hint(variant.type)
    validation = entry["validation"]
    facts = entry.get("facts", {})
    files = entry["files"]
    return {
        "name": files[0],
        # The file's label (Q4_K_M, or Q4_K_M-imatrix-output-Q8_0 for a variant).
        "type": variant.file_label,
        "imatrix": bool(facts.get("imatrix")),
        "imatrix_required": variant.type in IMATRIX_TYPES,
        "output_type": facts.get("output_type"),
        "embedding_type": facts.get("embedding_type"),
        "data_free": facts.get("data_free"),
        "size_bytes": entry["size_bytes"],
        "bits_per_weight": entry["bits_per_weight"],
        "tensor_types": facts.get("tensor_types", {}),
        "fallbacks": facts.get("fallbacks", []),
        "parts": files if len(files) > 1 else [],
        "hardware": hint.hardware,
        "quality": hint.quality,
        "validation": {
            "status": "forced" if facts.get("forced") else validation["status"],
            "checks": validation["checks"],
            "kl_mean": validation.get("kl_mean"),
            "kl_max": validation.get("kl_max"),
            "top1_agreement": validation.get("top1_agreement"),
            "max_abs_diff": validation.get("max_abs_diff"),
        },
    }


def card_context(
    *,
    repo_id: str,
    source: LocalSource,
    release: Release,
    artifacts: list[dict],
    license_files: list[str],
    command: str,
    date: str,
    endpoint: str,
) -> dict:
    from hubquant.hardware import memory_guidance

    card = source.card_data or {}
    template = chat_template_of(source.path)
    reference = release.facts.get("reference_validation") or {"status": "skipped", "checks": []}
    files = [_file_entry(entry) for entry in sorted(artifacts, key=lambda e: -e["bits_per_weight"])]
    hardware_keys: list[str] = []
    for item in files:
        for key in item["hardware"]:
            if key not in hardware_keys:
                hardware_keys.append(key)
    eos_ids = sorted(set(config_eos_ids(source)))
    llama_cpp = release.facts.get("llama_cpp", {})
    return {
        "repo_id": repo_id,
        "model_name": source.model_name,
        "backend": release.backend,
        "source": source_context(source, endpoint),
        "files": files,
        "reference_validation": {
            "status": reference.get("status", "skipped"),
            "checks": reference.get("checks", []),
            "max_abs_diff": reference.get("max_abs_diff"),
            "top1_agreement": reference.get("top1_agreement"),
            "prompts": reference.get("prompts", 0),
            "greedy_match": reference.get("greedy_match"),
        },
        "chat_template": template,
        "prompt_example": render_prompt_example(template, source.path),
        "eos_tokens": [{"id": token, "text": _token_text(source.path, token)} for token in eos_ids],
        "license_files": license_files,
        "provenance": {
            "hubquant_version": __version__,
            "date": date,
            "tool_versions": release.facts.get("tool_versions", {}),
            "llama_cpp_build": f"b{llama_cpp['build_number']}" if llama_cpp else "",
            "llama_cpp_commit": llama_cpp.get("commit", ""),
            "options": {
                "intermediate_type": release.facts.get("intermediate_type", ""),
                "targets": ", ".join(entry["target"] for entry in artifacts),
            },
            "command": command,
        },
        "memory_guidance": memory_guidance(hardware_keys),
        "calibration": _calibration_context(artifacts),
        "source_card": card,
    }


def _calibration_context(artifacts: list[dict]) -> dict | None:
    """Return the card's facts about the importance matrix, or None when no file used one."""
    used = [entry["facts"]["imatrix"] for entry in artifacts if entry.get("facts", {}).get("imatrix")]
    if not used:
        return None
    imatrix = used[0]
    calibration = imatrix["calibration"]
    return {
        "file": imatrix["file"],
        "chunks": imatrix["chunks"],
        "chunk_size": imatrix["chunk_size"],
        "tokens": imatrix["tokens"],
        "tokens_used": imatrix["tokens_used"],
        "min_chunks": imatrix["min_chunks"],
        "text": {
            "name": calibration["name"],
            "kind": calibration["kind"],
            "description": calibration["description"],
            "license": calibration["license"],
            "sha256": calibration["sha256"],
            "characters": calibration["characters"],
            "documents": calibration["documents"],
            "chat_rendered": calibration["chat_rendered"],
        },
    }


def source_context(source: LocalSource, endpoint: str) -> dict:
    """Return the card's ``source`` section: identity, links, shape and license."""
    card = source.card_data or {}
    url = f"{endpoint}/{source.repo_id}" if source.repo_id else None
    return {
        "id": source.repo_id,
        "sha": source.sha,
        "url": url,
        "revision_url": f"{url}/tree/{source.sha}" if url and source.sha else None,
        "local": source.repo_id is None,
        "declared_base_model": source.declared_base_model,
        "architecture": source.architecture,
        "parameters": source.parameters,
        "dtype": source.dtype,
        "license": card.get("license"),
        "license_link": card.get("license_link"),
        "private": source.private,
        "gated": source.gated,
    }


def config_eos_ids(source: LocalSource) -> list[int]:
    """Return the EOS ids that config.json and generation_config.json declare."""
    ids: list[int] = []
    for name in ("config.json", "generation_config.json"):
        path = source.path / name
        if path.is_file():
            value = json.loads(path.read_text()).get("eos_token_id")
            if isinstance(value, int):
                ids.append(value)
            elif isinstance(value, list):
                ids.extend(int(v) for v in value)
    return ids
