"""Reference outputs of the source model, computed once per job in transformers.

Every backend compares its unquantized artifact with these logits and greedy
continuations, so a conversion bug shows up as a measured difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hubquant import toolchains

# Fixed prompts: plain text and chat-template prompts (the latter only when the
# source has a chat template). Short, so a CPU run stays in seconds.
TEXT_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Photosynthesis converts light energy into",
]
CHAT_PROMPTS = [
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "What is 17 times 3?"},
    ],
]
MAX_NEW_TOKENS = 8

# A LongRoPE model (Phi-3-128k, Phi-3.5, Phi-4-mini) switches from its short to
# its long rope factors when a sequence passes original_max_position_embeddings.
# One prompt that long checks the long factors at run time. Only the logits of
# its last positions are kept, because a full logit matrix of 4k positions is
# gigabytes for a 200k vocabulary.
LONG_PROMPT_BEYOND = 16
LONG_PROMPT_KEPT = 16


@dataclass
class ReferencePrompt:
    id: str
    text: str
    input_ids: list[int]
    logits_path: str | None  # None where the model did not run
    continuation: list[int]
    continuation_margins: list[float] = field(default_factory=list)


@dataclass
class ReferenceOutputs:
    """Reference logits (as .npy files), continuations and tokenizer facts."""

    prompts: list[ReferencePrompt]
    eos_ids: list[int]
    chat_template: str | None
    vocab_size: int
    parameters: int
    max_new_tokens: int = MAX_NEW_TOKENS
    # False where only the tokenizer ran (not enough memory for the model): the
    # prompts have ids but no logits or continuations.
    model_ran: bool = True
    # Past original_max_position_embeddings, for LongRoPE sources; its logits
    # cover only its last LONG_PROMPT_KEPT positions, and it has no continuation.
    long_prompt: ReferencePrompt | None = None

    def long_prompt_request(self, reference_logits: str | None = None) -> dict | None:
        """Return the long prompt as the backend workers take it, compared with
        ``reference_logits`` (a logits file) or else with transformers'."""
        if self.long_prompt is None:
            return None
        return {
            "id": self.long_prompt.id,
            "input_ids": self.long_prompt.input_ids,
            "reference_logits": reference_logits or self.long_prompt.logits_path,
            "keep_last": LONG_PROMPT_KEPT,
        }


def prompt_requests(has_chat_template: bool) -> list[dict]:
    prompts = [
        {"id": f"text{index}", "kind": "text", "text": text}
        for index, text in enumerate(TEXT_PROMPTS)
    ]
    if has_chat_template:
        prompts += [
            {"id": f"chat{index}", "kind": "chat", "messages": messages}
            for index, messages in enumerate(CHAT_PROMPTS)
        ]
    return prompts


def original_context(config: dict) -> int | None:
    """Return original_max_position_embeddings of a LongRoPE config, else None."""
    scaling = config.get("rope_scaling") or config.get("rope_parameters")
    if not isinstance(scaling, dict) or not scaling.get("long_factor"):
        return None
    value = config.get("original_max_position_embeddings") or scaling.get("original_max_position_embeddings")
    return int(value) if value else None


def long_prompt_request(config: dict) -> dict | None:
    original = original_context(config)
    if original is None:
        return None
    return {"id": "long", "length": original + LONG_PROMPT_BEYOND, "keep_last": LONG_PROMPT_KEPT}


def compute_reference(
    model_dir: Path, out_dir: Path, *, has_chat_template: bool, timeout: float | None = None, tokens_only: bool = False,
    config: dict | None = None,
) -> ReferenceOutputs:
    """Run the source in transformers, or with ``tokens_only`` only its tokenizer.
    With ``config`` of a LongRoPE source, add a prompt past its original context."""
    toolchain = toolchains.ensure("reference")
    result = toolchains.run_step(
        toolchain,
        "reference",
        {
            "model_dir": str(model_dir),
            "out_dir": str(out_dir),
            "max_new_tokens": MAX_NEW_TOKENS,
            "prompts": prompt_requests(has_chat_template),
            "tokens_only": tokens_only,
            "long_prompt": None if tokens_only or config is None else long_prompt_request(config),
        },
        timeout=timeout,
    ).data
    return ReferenceOutputs(
        prompts=[ReferencePrompt(**prompt) for prompt in result["prompts"]],
        eos_ids=result["eos_ids"],
        chat_template=result["chat_template"],
        vocab_size=result["vocab_size"],
        parameters=result["parameters"],
        model_ran=result.get("model_ran", True),
        long_prompt=ReferencePrompt(**result["long_prompt"]) if result.get("long_prompt") else None,
    )
