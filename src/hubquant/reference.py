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


def compute_reference(
    model_dir: Path, out_dir: Path, *, has_chat_template: bool, timeout: float | None = None, tokens_only: bool = False
) -> ReferenceOutputs:
    """Run the source in transformers, or with ``tokens_only`` only its tokenizer."""
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
    )
