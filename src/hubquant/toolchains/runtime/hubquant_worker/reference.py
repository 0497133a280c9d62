"""Reference outputs of the source model in transformers (float32 on CPU).

Request: ``model_dir``, ``prompts`` (each ``{"id", "kind": "text"|"chat", "text" |
"messages"}``), ``max_new_tokens``, ``out_dir``, ``tokens_only`` (tokenize the
prompts without loading the weights) and ``long_prompt`` (``id``, ``length``,
``keep_last``: one prompt past a LongRoPE source's original context). For every
prompt the result contains the exact input ids, the path of a ``.npy`` file with the logits of every position,
and the greedy continuation. The tokenizer facts the backends must preserve (EOS
ids, chat template) come back too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hubquant_worker.protocol import StepError, info, serve


def source_eos_ids(model_dir: Path, config) -> list[int]:
    """Collect every EOS id that config.json and generation_config.json declare."""
    ids: list[int] = []
    for value in (getattr(config, "eos_token_id", None),):
        ids.extend(_as_id_list(value))
    generation_file = model_dir / "generation_config.json"
    if generation_file.is_file():
        ids.extend(_as_id_list(json.loads(generation_file.read_text()).get("eos_token_id")))
    return sorted(set(ids))


def _as_id_list(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(item) for item in value]


def encode_prompt(tokenizer, prompt: dict) -> tuple[str, list[int]]:
    if prompt["kind"] == "chat":
        if not tokenizer.chat_template:
            raise StepError("the source tokenizer has no chat template")
        text = tokenizer.apply_chat_template(
            prompt["messages"], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        text = prompt["text"]
        ids = tokenizer(text)["input_ids"]
    return text, list(ids)


def _continuation_margins(model, sequence, prompt_length: int, steps: int) -> list[float]:
    """Return, for each greedy step, the gap between the top two logits.

    A backend whose greedy token differs only where this gap is within its
    logit tolerance has met a near tie, not a conversion error.
    """
    import torch

    if steps == 0:
        return []
    with torch.no_grad():
        logits = model(sequence).logits[0].float()
    chosen = logits[prompt_length - 1 : prompt_length - 1 + steps]
    top = torch.topk(chosen, 2, dim=-1).values
    return (top[:, 0] - top[:, 1]).tolist()


def handle(request: dict) -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(request["model_dir"])
    out_dir = Path(request["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    config = AutoConfig.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if request.get("tokens_only"):
        return _tokens_only(request, model_dir, config, tokenizer)
    info(f"loading {model_dir.name} in transformers (float32)")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    eos_ids = source_eos_ids(model_dir, config)

    results = []
    for prompt in request["prompts"]:
        text, ids = encode_prompt(tokenizer, prompt)
        input_ids = torch.tensor([ids])
        with torch.no_grad():
            logits = model(input_ids).logits[0].float().numpy()
            generated = model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=request.get("max_new_tokens", 8),
                do_sample=False,
                eos_token_id=eos_ids or None,
                pad_token_id=eos_ids[0] if eos_ids else 0,
            )
        continuation = generated[0, len(ids) :].tolist()
        margins = _continuation_margins(model, generated, len(ids), len(continuation))
        logits_path = out_dir / f"{prompt['id']}.logits.npy"
        np.save(logits_path, logits.astype(np.float32))
        results.append(
            {
                "id": prompt["id"],
                "text": text,
                "input_ids": ids,
                "logits_path": str(logits_path),
                "continuation": continuation,
                "continuation_margins": margins,
            }
        )

    long_prompt = None
    if request.get("long_prompt"):
        long_prompt = _long_prompt(model, tokenizer, request["long_prompt"], out_dir)

    return {
        "prompts": results,
        "long_prompt": long_prompt,
        "eos_ids": eos_ids,
        "chat_template": tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None,
        "vocab_size": int(config.vocab_size),
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }


def long_prompt_ids(tokenizer, length: int) -> list[int]:
    """Return the ids of ordinary text, repeated to ``length`` tokens."""
    text = (
        "The river runs past the old mill, where the miller counts sacks of grain "
        "and writes each number in a ledger kept since his grandfather's time. "
    )
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return (ids * (length // len(ids) + 1))[:length]


def _long_prompt(model, tokenizer, request: dict, out_dir: Path) -> dict:
    """Run one sequence past original_max_position_embeddings, keeping the
    logits of its last ``keep_last`` positions."""
    import torch

    ids = long_prompt_ids(tokenizer, int(request["length"]))
    keep = int(request["keep_last"])
    info(f"running a {len(ids)}-token prompt past the original context")
    with torch.no_grad():
        logits = model(torch.tensor([ids]), logits_to_keep=keep).logits[0].float().numpy()
    path = out_dir / f"{request['id']}.logits.npy"
    np.save(path, logits[-keep:].astype(np.float32))
    return {"id": request["id"], "text": "", "input_ids": ids, "logits_path": str(path), "continuation": []}


def _tokens_only(request: dict, model_dir: Path, config, tokenizer) -> dict:
    """Return the prompts' ids and the tokenizer facts without loading the
    weights (for a machine without the memory to run the model in float32)."""
    info(f"tokenizing the prompts with {model_dir.name}'s tokenizer; the model is not loaded")
    results = []
    for prompt in request["prompts"]:
        text, ids = encode_prompt(tokenizer, prompt)
        results.append(
            {"id": prompt["id"], "text": text, "input_ids": ids, "logits_path": None,
             "continuation": [], "continuation_margins": []}
        )  # fmt: skip
    return {
        "prompts": results,
        "eos_ids": source_eos_ids(model_dir, config),
        "chat_template": tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None,
        "vocab_size": int(config.vocab_size),
        "parameters": 0,
        "model_ran": False,
    }


if __name__ == "__main__":
    serve(handle)
