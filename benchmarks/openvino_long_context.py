"""Measure OpenVINO IRs of tiny LongRoPE models past their original context.

For each model, the IR exported by optimum-cli (fp32 and fp16) and the source in
transformers (float32) run the same random token ids of several lengths, and the
largest logit difference over the last 16 positions is printed. A control
compares the fp16 IR with a copy of the source whose long factors were replaced
by the short ones. Then, once per model, it records what each runtime does when
a sequence passes the original context: optimum-intel's generate on a prompt
longer than it, and openvino-genai's greedy tokens on a prompt that crosses it
while generating, against transformers'. Usage::

    python benchmarks/openvino_long_context.py phi-3.5-mini-instruct phi-4-mini-instruct
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from hubquant import toolchains
from hubquant.toolchains.runner import worker_environment
from hubquant.tinymodels import build_tiny_model

LENGTHS = [64, 1000, 4000, 4096, 4097, 4112]

INNER = r"""
import json, sys
import numpy as np, torch
import openvino as ov, openvino_genai
from optimum.intel import OVModelForCausalLM
from transformers import AutoModelForCausalLM

source, altered, irs, lengths = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
config = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}
ids = np.random.default_rng(0).integers(100, 30000, size=max(lengths)).tolist()
models = {name: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval() for name, path in (("source", source), ("altered", altered))}
rows = []
for precision, folder in irs.items():
    ir = OVModelForCausalLM.from_pretrained(folder, ov_config=config)
    for length in lengths:
        x = torch.tensor([ids[:length]])
        with torch.no_grad():
            got = ir(input_ids=x, attention_mask=torch.ones_like(x)).logits[0, -16:].numpy()
            for name, model in models.items():
                if name == "altered" and (precision != "fp16" or length != max(lengths)):
                    continue
                want = model(x, logits_to_keep=16).logits[0].numpy()
                rows.append({"ir": precision, "against": name, "length": length,
                             "max_abs_diff": float(np.abs(want - got).max()),
                             "top1": float((want.argmax(-1) == got.argmax(-1)).mean())})
folder = irs["fp32"]
ir = OVModelForCausalLM.from_pretrained(folder, ov_config=config)
original = int(json.loads(open(source + "/config.json").read())["original_max_position_embeddings"])
x = torch.tensor([ids[: original + 16]])
try:
    ir.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=2, do_sample=False)
    optimum_long = "generated"
except Exception as error:
    optimum_long = f"{type(error).__name__}: {error}"
start = original - 4
x = torch.tensor([ids[:start]])
with torch.no_grad():
    want = models["source"].generate(x, attention_mask=torch.ones_like(x), max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)[0, start:].tolist()
pipe = openvino_genai.LLMPipeline(folder, "CPU", **config)
settings = openvino_genai.GenerationConfig()
settings.max_new_tokens, settings.do_sample, settings.ignore_eos = 12, False, True
array = x.numpy().astype(np.int64)
got = list(pipe.generate(openvino_genai.TokenizedInputs(ov.Tensor(array), ov.Tensor(np.ones_like(array))), settings).tokens[0])
first = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), None)
print(json.dumps({"rows": rows, "optimum_generate_past_original": optimum_long,
                  "genai_crossing": {"prompt_tokens": start, "first_difference_at_token": first,
                                     "first_difference_at_position": None if first is None else start + first}}))
"""


def main(names: list[str]) -> None:
    toolchain = toolchains.ensure("openvino")
    for name in names:
        with tempfile.TemporaryDirectory() as temporary:
            work = Path(temporary)
            env = worker_environment(work / "home")  # offline, no telemetry, no token
            source = build_tiny_model(name, work / "source")
            altered = work / "altered"
            subprocess.run(["cp", "-r", str(source), str(altered)], check=True)
            config = json.loads((altered / "config.json").read_text())
            scaling = config.get("rope_scaling") or config["rope_parameters"]
            scaling["long_factor"] = list(scaling["short_factor"])
            (altered / "config.json").write_text(json.dumps(config))
            irs = {}
            for precision in ("fp32", "fp16"):
                irs[precision] = str(work / precision)
                subprocess.run(
                    [str(toolchain.python), "-m", "optimum.commands.optimum_cli", "export", "openvino", "--model",
                     str(source), "--task", "text-generation-with-past", "--weight-format", precision, irs[precision]],
                    check=True, capture_output=True, env=env,
                )  # fmt: skip
            result = subprocess.run(
                [str(toolchain.python), "-c", INNER, str(source), str(altered), json.dumps(irs), json.dumps(LENGTHS)],
                check=True, capture_output=True, text=True, env=env,
            )
            print(json.dumps({"model": name, **json.loads(result.stdout.strip().splitlines()[-1])}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:] or ["phi-3.5-mini-instruct"])
