"""Load a model folder with transformers and report what the tests check, as JSON.

Runs in the reference toolchain (torch, transformers), not in the orchestrator
environment. Usage: ``python hf_check.py REQUESTS_JSON``, where the file contains
a list of requests, each

    {"key": ..., "model_dir": ..., "messages": [...], "prompt": ...,
     "texts": [...], "generate_tokens": 8, "probes": [[tensor_name, index], ...]}

``messages`` are rendered with the chat template when the tokenizer has one,
else ``prompt`` is used. stdout gets one JSON object mapping each key to its
report: ids for each text, the prompt ids, greedy generation and model facts.
One process serves all requests, so torch and transformers load only once.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402


def check_tokenizer(tokenizer, texts: list[str]) -> list[dict]:
    results = []
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        results.append(
            {
                "text": text,
                "ids": ids,
                "decoded": tokenizer.decode(ids),
                "tokens": tokenizer.convert_ids_to_tokens(ids),
            }
        )
    return results


def check_model(request: dict) -> dict:
    model_dir = request["model_dir"]
    config = AutoConfig.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()

    if tokenizer.chat_template and request.get("messages"):
        prompt = tokenizer.apply_chat_template(request["messages"], tokenize=False, add_generation_prompt=True)
    else:
        prompt = request["prompt"]
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    input_ids = torch.tensor([prompt_ids])
    new_tokens = request.get("generate_tokens", 8)
    with torch.no_grad():
        logits = model(input_ids).logits
        generated = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        )

    state = model.state_dict()
    probes = {}
    for name, index in request.get("probes", []):
        probes[name] = float(state[name][tuple(index)])

    embed = model.get_input_embeddings().weight
    output = model.get_output_embeddings().weight
    return {
        "config_class": type(config).__name__,
        "model_class": type(model).__name__,
        "tokenizer_class": type(tokenizer).__name__,
        "num_parameters": sum(parameter.numel() for parameter in model.parameters()),
        "tied_embeddings": embed.data_ptr() == output.data_ptr(),
        "logits_shape": list(logits.shape),
        "logits_finite": bool(torch.isfinite(logits).all()),
        "prompt": prompt,
        "prompt_ids": prompt_ids,
        "prompt_decoded": tokenizer.decode(prompt_ids),
        "generated_ids": generated[0, len(prompt_ids) :].tolist(),
        "texts": check_tokenizer(tokenizer, request.get("texts", [])),
        "probes": probes,
        "has_chat_template": bool(tokenizer.chat_template),
    }


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as handle:
        requests = json.load(handle)
    reports = {}
    for request in requests:
        reports[request["key"]] = check_model(request)
    json.dump(reports, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
