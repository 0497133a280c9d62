"""ONNX Runtime GenAI backend: one builder run per variant, validated on the CPU.

Each target is one variant of onnxruntime-genai's model builder: a precision for
an execution provider, with the builder's quantization options. All variants go
into one repo, each in its own self-contained folder named like the folders of
Microsoft's own ONNX releases (``cpu-int4-rtn-block-32-acc-level-4/``).

An fp32 CPU variant is always built first and compared with the source run in
transformers. Every other CPU variant is compared with it in onnxruntime-genai.
Variants for providers this machine cannot run (CUDA, DirectML, WebGPU,
TensorRT-RTX) get the structural checks only, and the card states that.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from hubquant import toolchains
from hubquant.backends.base import Artifact, BuildContext, Release
from hubquant.errors import SourceError, ToolchainError, UsageError
from hubquant.progress import CALIBRATING, CONVERTING, DONE, FAILED, QUANTIZING, VALIDATING
from hubquant.resources import MEMORY_BASE
from hubquant.targets import Target
from hubquant.validation import ValidationReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Provider:
    """An execution provider of the pinned builder and what it can build."""

    name: str  # hubquant's name, used in targets and folder names
    builder_name: str  # the builder's -e value
    label: str
    precisions: tuple[str, ...]
    runs_here: bool
    package: str | None  # the pip package with this provider, None when there is none


# The combinations onnxruntime-genai 0.18.0's builder prints as valid (in
# builder.py, get_args): FP32 CPU/CUDA, FP16 CUDA/DML/TRT-RTX, BF16 CUDA/TRT-RTX,
# INT8 CPU/CUDA/WebGPU, INT4 CPU/CUDA/DML/WebGPU. fp16 on the CPU is added because
# it builds, runs in onnxruntime-genai and validates (max logit difference 0.015 on
# the tiny Phi-3 model). bf16 on the CPU builds but does not load in
# onnxruntime 1.32 ("Could not find an implementation for Where(16)"). fp32 for
# CUDA is left out although the builder lists it: its graph declares the
# present.N.key and present.N.value outputs but no node produces them, so the
# ONNX checker rejects it.
PROVIDERS = {
    provider.name: provider
    for provider in (
        Provider("cpu", "cpu", "CPU", ("int4", "int8", "fp16", "fp32"), True, "onnxruntime-genai"),
        Provider("cuda", "cuda", "CUDA", ("int4", "int8", "fp16", "bf16"), False, "onnxruntime-genai-cuda"),
        Provider("dml", "dml", "DirectML", ("int4", "fp16"), False, "onnxruntime-genai-directml"),
        Provider("webgpu", "webgpu", "WebGPU", ("int4", "int8"), False, None),
        Provider("trt-rtx", "NvTensorRtRtx", "NVIDIA TensorRT-RTX", ("fp16", "bf16"), False, None),
    )
}
PROVIDER_ALIASES = {"directml": "dml", "nvtensorrtrtx": "trt-rtx", "trtrtx": "trt-rtx"}
QUANTIZED = ("int4", "int8")
# The builder's algo_config base methods (quantization/quant_config.py, METHODS).
# Both are data-free. The builder has no data-aware algorithm of its own: AWQ,
# GPTQ and Quark appear only as loaders of checkpoints quantized elsewhere.
ALGORITHMS = {"rtn": "rtn", "kquant": "k_quant"}
# GPTQ comes from onnxruntime's MatMulNBitsQuantizer instead, run by hubquant on
# the fp32 CPU variant with the job's calibration text (CPU int4 only).
GPTQ = "gptq"
DATA_AWARE = ("awq", "hqq", "quark")
# The maximum number of calibration prompts GPTQ runs, each --imatrix-chunk-size tokens long.
GPTQ_MAX_ROWS = 128
BLOCK_SIZES = (16, 32, 64, 128, 256)
DEFAULT_BLOCK_SIZE = 32
# The builder's default accuracy level (quantization/quant_config.py): 4, int8
# activations, for the CPU and WebGPU, and none (0) for the other providers.
# Its --extra_options help text reads "4 for the CPU EP and 0 for non-CPU EPs".
DEFAULT_ACCURACY_LEVELS = {"cpu": 4, "webgpu": 4}

# Architectures the pinned builder converts. The test suite checks the fp32 CPU
# variant against transformers for the tiny Phi-3-mini 4k and 128k (both rope
# scaling spellings), Phi-4-mini and Phi-4 models. Phi-2 (PhiForCausalLM) and
# Phi-3.5 matched transformers too (max logit difference 0.002 and 3e-5) when
# run by hand, outside the suite.
# PhiMoEForCausalLM is left out: 0.18.0 builds it only for CUDA in int4, and on
# the tiny Phi-tiny-MoE config it fails with "'PhimoeConfig' object has no
# attribute 'original_max_position_embeddings'".
# NOTE: Llama, Mistral and Qwen2 are listed because the builder supports them;
# only the Phi family is exercised by the tests.
ARCHITECTURES = frozenset(
    {"Phi3ForCausalLM", "PhiForCausalLM", "LlamaForCausalLM", "MistralForCausalLM",
     "Qwen2ForCausalLM"}
)  # fmt: skip

# Pass/fail limits of the runtime checks. The fp32 variant is compared with
# transformers in float32: tiny Phi-3 models measured 3e-5, Phi-2 0.002. The
# others are compared with the fp32 variant, with limits at about three times the
# KL (and well below the top-1 agreement) measured on the tiny random models.
# Untrained layers amplify quantization noise, so these limits catch broken
# files and do not grade quality. Measured values are in docs/benchmarks.md.
FP32_LOGIT_LIMIT = 0.01
FP32_TOP1_MIN = 0.98
KL_LIMITS = {"fp16": (1e-3, 0.90), "int8": (0.015, 0.70), "int4": (2.0, 0.25)}

# Rough bits per weight for the disk estimate before a build. The builder keeps
# the token embedding in float for int4 and int8 on an untied model, so a small
# model's file is far above the nominal width.
# NOTE: estimates, not measurements of every model size.
ESTIMATED_BITS = {"int4": 8.0, "int8": 12.0, "fp16": 16.0, "bf16": 16.0, "fp32": 32.0}


@dataclass(frozen=True)
class Variant:
    """One builder run: provider, precision and quantization options."""

    provider: str = "cpu"
    precision: str = "fp32"
    algorithm: str = "rtn"
    block_size: int = DEFAULT_BLOCK_SIZE
    accuracy_level: int = 0
    symmetric: bool = True
    quantize_embeddings: bool = False
    lm_head: str = "default"  # "default" (the body's type), "int8" or "float"

    @property
    def quantized(self) -> bool:
        return self.precision in QUANTIZED

    @property
    def data_aware(self) -> bool:
        return self.algorithm == GPTQ

    def data_free(self) -> Variant:
        """Return the builder's round-to-nearest variant with the same settings."""
        return Variant(self.provider, self.precision, "rtn", self.block_size, self.accuracy_level,
                       self.symmetric, self.quantize_embeddings, self.lm_head)  # fmt: skip

    @property
    def provider_label(self) -> str:
        return PROVIDERS[self.provider].label

    @property
    def runs_here(self) -> bool:
        return PROVIDERS[self.provider].runs_here

    @property
    def name(self) -> str:
        """The folder and target name: ``cpu-int4-rtn-block-32-acc-level-4``."""
        parts = [self.provider, self.precision]
        if self.quantized:
            parts += [self.algorithm, "block", str(self.block_size)]
            # Level 0 is named where the provider's default is another level,
            # so the name parses back to the same variant.
            if self.accuracy_level or DEFAULT_ACCURACY_LEVELS.get(self.provider, 0):
                parts += ["acc", "level", str(self.accuracy_level)]
            if not self.symmetric:
                parts.append("asym")
            if self.quantize_embeddings:
                parts += ["embeds", "int4"]
            if self.lm_head != "default":
                parts += ["lm", "head", self.lm_head]
        return "-".join(parts)

    @property
    def short_name(self) -> str:
        """The name the hardware table uses: ``int4`` for the CPU, ``cuda-int4`` elsewhere."""
        return self.precision if self.provider == "cpu" else f"{self.provider}-{self.precision}"

    def gptq_request(self) -> dict:
        """Return the quantization settings of the worker's gptq step."""
        return {
            "bits": 4,
            "block_size": self.block_size,
            "symmetric": self.symmetric,
            "accuracy_level": self.accuracy_level,
            "exclude": ["/lm_head/MatMul"] if self.lm_head == "float" else [],
        }

    def builder_options(self, *, tied_source: bool) -> dict[str, str]:
        """Return the builder's --extra_options for this variant."""
        options = {"hf_token": "false"}
        if not tied_source:
            # Never let the builder share one matrix between the embedding and
            # the LM head of a model whose checkpoint has two.
            options["shared_embeddings"] = "false"
        elif self.provider == "dml" and self.quantized:
            # A shared quantized matrix needs GatherBlockQuantized, which DirectML
            # does not implement, so the embedding would fall back to the CPU.
            options["shared_embeddings"] = "false"
        if not self.quantized:
            return options
        options["algo_config"] = ALGORITHMS[self.algorithm]
        options["block_size"] = str(self.block_size)
        options["is_symmetric"] = "true" if self.symmetric else "false"
        if self.accuracy_level:
            options["accuracy_level"] = str(self.accuracy_level)
        if self.quantize_embeddings:
            options["op_types_to_quantize"] = "MatMul/Gather"
        if self.lm_head == "float":
            options["nodes_to_exclude"] = "/lm_head/MatMul"
        elif self.lm_head == "int8":
            options["matmul_mixed_precision"] = "last_matmul:int8"
        return options


TARGET_HELP = (
    "write [PROVIDER-]PRECISION[-rtn|-kquant|-gptq][-block-N][-acc-level-N][-asym]"
    "[-embeds-int4][-lm-head-int8|-lm-head-float], for example onnx:int4, "
    "onnx:cuda-fp16 or onnx:cpu-int4-kquant-block-128"
)


def parse_variant(text: str) -> Variant:
    """Parse a target's precision part into a Variant, raising UsageError when invalid."""
    original = text
    text = text.strip().lower().replace("k_quant", "kquant").replace("k-quant", "kquant")
    provider = "cpu"
    for alias in sorted({*PROVIDERS, *PROVIDER_ALIASES}, key=len, reverse=True):
        if text.startswith(alias + "-"):
            provider = PROVIDER_ALIASES.get(alias, alias)
            text = text[len(alias) + 1 :]
            break

    tokens = text.split("-")
    precision = tokens.pop(0)
    spec = PROVIDERS[provider]
    if precision not in spec.precisions:
        valid = ", ".join(f"{p.name}-{precision_name}" for p in PROVIDERS.values() for precision_name in p.precisions)
        raise UsageError(
            f"invalid ONNX target {original!r}: {precision or 'an empty precision'} for {spec.label} is not "
            f"supported with onnxruntime-genai 0.18.0's builder; valid provider and precision pairs: {valid}"
        )
    options: dict = {"provider": provider, "precision": precision}
    if precision in QUANTIZED:
        options["accuracy_level"] = DEFAULT_ACCURACY_LEVELS.get(provider, 0)

    while tokens:
        token = tokens.pop(0)
        if precision not in QUANTIZED:
            raise UsageError(f"invalid ONNX target {original!r}: {precision} takes no quantization options; {TARGET_HELP}")
        if token in ALGORITHMS or token == GPTQ:
            options["algorithm"] = token
        elif token in DATA_AWARE:
            raise UsageError(
                f"invalid ONNX target {original!r}: onnxruntime-genai 0.18.0's builder has no {token} "
                "quantization (only the data-free rtn and kquant), and hubquant adds gptq only"
            )
        elif token == "block":
            options["block_size"] = _number(tokens, original, "block", BLOCK_SIZES)
        elif token == "acc" and tokens[:1] == ["level"]:
            tokens.pop(0)
            options["accuracy_level"] = _number(tokens, original, "acc-level", (0, 1, 2, 3, 4))
        elif token in ("asym", "sym"):
            options["symmetric"] = token == "sym"
        elif token == "embeds" and tokens[:1] == ["int4"]:
            tokens.pop(0)
            options["quantize_embeddings"] = True
        elif token == "lm" and tokens[:1] == ["head"] and len(tokens) > 1 and tokens[1] in ("int8", "float"):
            options["lm_head"] = tokens[1]
            del tokens[:2]
        else:
            raise UsageError(f"invalid ONNX target {original!r}: unknown option {token!r}; {TARGET_HELP}")

    variant = Variant(**options)
    _check_combination(variant, original)
    return variant


def _number(tokens: list[str], original: str, option: str, allowed: tuple[int, ...]) -> int:
    value = tokens.pop(0) if tokens else ""
    if not value.isdigit() or int(value) not in allowed:
        raise UsageError(
            f"invalid ONNX target {original!r}: {option} must be one of {', '.join(map(str, allowed))}, got {value or 'nothing'}"
        )
    return int(value)


def _check_combination(variant: Variant, original: str) -> None:
    if variant.quantize_embeddings and variant.precision != "int4":
        raise UsageError(
            f"invalid ONNX target {original!r}: embeds-int4 needs int4, because the builder's "
            "quantized embedding (GatherBlockQuantized) is 4-bit only"
        )
    if variant.quantize_embeddings and variant.provider == "dml":
        raise UsageError(
            f"invalid ONNX target {original!r}: DirectML has no GatherBlockQuantized kernel, "
            "so its embeddings stay in float; drop embeds-int4"
        )
    if variant.lm_head == "int8" and variant.precision != "int4":
        raise UsageError(f"invalid ONNX target {original!r}: lm-head-int8 applies to int4 variants only")
    if variant.algorithm == GPTQ:
        if (variant.provider, variant.precision) != ("cpu", "int4"):
            raise UsageError(
                f"invalid ONNX target {original!r}: gptq is built for CPU int4 only, where hubquant can run "
                "and validate it; write onnx:int4-gptq"
            )
        if variant.quantize_embeddings or variant.lm_head == "int8":
            raise UsageError(
                f"invalid ONNX target {original!r}: gptq quantizes the MatMul weights only, so it takes "
                "neither embeds-int4 nor lm-head-int8"
            )


class OnnxBackend:
    name = "onnx"
    toolchain = "onnx"
    library_name = "onnx"

    def normalize_precision(self, precision: str) -> str:
        return parse_variant(precision).name

    def supported_architectures(self) -> frozenset[str]:
        return ARCHITECTURES

    def rejection_reason(self, architecture: str, target: Target) -> str | None:
        return None

    def release_name(self, model_name: str, target: Target) -> str:
        return f"{model_name}-onnx"

    def estimate_bytes(self, parameters: int, target: Target) -> int:
        return int(parameters * ESTIMATED_BITS[parse_variant(target.precision).precision] / 8)

    def build_memory(self, parameters: int, target: Target) -> tuple[int, str]:
        # The builder keeps the float32 model and the graph's float32 initializers in memory.
        return parameters * 8 + MEMORY_BASE, "the model builder holds the whole model twice in float32"

    # --- build ---------------------------------------------------------------

    def build(self, context: BuildContext, release: Release) -> None:
        toolchain = toolchains.ensure(self.toolchain)
        versions = toolchain.versions
        release.facts["tool_versions"] = {
            name: versions.get(name, "unknown")
            for name in ("onnxruntime-genai", "onnxruntime", "onnx", "onnx-ir", "transformers", "torch")
        }
        work = context.work_dir / "onnx"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        variants = {target: parse_variant(target.precision) for target in release.targets}
        for target in release.targets:
            context.reporter.step(self._key(release, target), CONVERTING)

        try:
            source_facts = self._check_source(context, toolchain)
        except (ToolchainError, SourceError) as error:
            for target in release.targets:
                self._fail(context, release, target, str(error))
            return
        release.facts["source_checks"] = source_facts
        self._drop_unbuildable(context, release, variants, source_facts)
        if not variants:
            return

        reference_variant = Variant("cpu", "fp32")
        published_root = work / "release"
        requested_fp32 = any(variant == reference_variant for variant in variants.values())
        if not (requested_fp32 or context.validate or any(variant.data_aware for variant in variants.values())):
            # A benchmark run without validation: nothing would read the fp32 variant.
            release.facts["reference_validation"] = ValidationReport.turned_off().to_dict()
            for target, variant in variants.items():
                self._build_and_publish(context, toolchain, release, target, variant, {}, published_root, source_facts, work)
            return
        fp32_root = published_root if requested_fp32 else work / "reference"
        try:
            fp32 = self._build_variant(context, toolchain, reference_variant, fp32_root, source_facts)
        except ToolchainError as error:
            for target in variants:
                self._fail(context, release, target, f"the fp32 CPU variant failed to build: {error}")
            return
        fp32_report = self._validate_fp32(context, toolchain, fp32, source_facts, work)
        release.facts["reference_validation"] = fp32_report.to_dict()
        if not fp32_report.passed and not context.force:
            reason = f"the fp32 CPU variant failed validation against transformers: {fp32_report.summary()}"
            for target in variants:
                self._fail(context, release, target, reason)
            return

        ordered = sorted(variants, key=lambda target: variants[target] != reference_variant)
        for target in ordered:
            variant = variants[target]
            if variant == reference_variant:
                self._publish(context, release, target, variant, fp32, fp32_report)
                continue
            self._build_and_publish(context, toolchain, release, target, variant, fp32, published_root, source_facts, work)
        if not requested_fp32:
            shutil.rmtree(work / "reference", ignore_errors=True)

    def _drop_unbuildable(self, context: BuildContext, release: Release, variants: dict, source_facts: dict) -> None:
        """Fail and remove the targets the builder cannot make for this source."""
        for target in list(variants):
            if variants[target].quantize_embeddings and not source_facts["tie_word_embeddings"]:
                # builders/base.py, make_embedding: GatherBlockQuantized is used
                # "if and only if tied embeddings are enabled".
                self._fail(
                    context, release, target,
                    "embeds-int4 needs tied embeddings: onnxruntime-genai 0.18.0's builder quantizes the "
                    "embedding only when it shares it with the LM head, and this model's are separate",
                )  # fmt: skip
                del variants[target]

    def _key(self, release: Release, target: Target) -> str:
        return f"{release.repo_name} {target}"

    def _fail(self, context: BuildContext, release: Release, target: Target, reason: str) -> None:
        release.failed[str(target)] = reason
        context.reporter.step(self._key(release, target), FAILED, reason)

    def _check_source(self, context: BuildContext, toolchain) -> dict:
        """Reject a source whose layers the builder would mistake for the LM head."""
        facts = toolchains.run_step(
            toolchain, "onnx", {"op": "check_source", "source_dir": str(context.source.path)}
        ).data
        if facts["conflicts"]:
            conflict = facts["conflicts"][0]
            raise SourceError(
                f"{conflict['module']} is an nn.{conflict['kind']} of width {conflict['width']}, equal to the "
                f"vocabulary size, so onnxruntime-genai 0.18.0's builder would wire it as the "
                f"{'LM head' if conflict['kind'] == 'Linear' else 'token embedding'} and the model would "
                "compute wrong logits; this model cannot be built with the pinned builder"
            )
        return facts

    def _build_variant(self, context: BuildContext, toolchain, variant: Variant, root: Path, source_facts: dict) -> dict:
        folder = root / variant.name
        shutil.rmtree(folder, ignore_errors=True)
        cache = root.parent / "builder-cache" / variant.name
        built = toolchains.run_step(
            toolchain,
            "onnx",
            {
                "op": "build",
                "source_dir": str(context.source.path),
                "out_dir": str(folder),
                "cache_dir": str(cache),
                "precision": variant.precision,
                "execution_provider": PROVIDERS[variant.provider].builder_name,
                "extra_options": variant.builder_options(tied_source=source_facts["tie_word_embeddings"]),
            },
        ).data
        shutil.rmtree(cache, ignore_errors=True)
        described = toolchains.run_step(toolchain, "onnx", {"op": "describe", "folder": str(folder)}).data
        command = builder_command(variant, tied_source=source_facts["tie_word_embeddings"])
        return {**described, "folder": folder, "root": root, "build_seconds": built["seconds"], "builder_command": command}

    def _evaluate(self, context: BuildContext, toolchain, folder: Path, out_dir: Path, against: dict[str, str] | None) -> dict:
        from hubquant.backends.onnx_checks import prompt_requests

        reference = context.reference
        assert reference is not None
        stop_ids = reference.prompts[0].input_ids[:4] if reference.prompts else [1]
        return toolchains.run_step(
            toolchain,
            "onnx",
            {
                "op": "evaluate",
                "folder": str(folder),
                "prompts": prompt_requests(reference, against),
                "eos_ids": reference.eos_ids,
                "stop_prompt_ids": stop_ids,
                "max_new_tokens": reference.max_new_tokens,
                "out_dir": str(out_dir),
                "threads": context.threads,
            },
        ).data

    def _validate_fp32(self, context: BuildContext, toolchain, fp32: dict, source_facts: dict, work: Path) -> ValidationReport:
        """Check the fp32 CPU variant against the source run in transformers."""
        from hubquant.backends.onnx_checks import check_against_source, check_runtime, check_structure

        report = ValidationReport()
        variant = Variant("cpu", "fp32")
        check_structure(report, fp32, variant, context, source_facts)
        if context.reference is None:
            report.skip("logits against transformers", "the reference run was skipped")
            return report
        try:
            evaluation = self._evaluate(context, toolchain, fp32["folder"], work / "eval-cpu-fp32", None)
        except ToolchainError as error:
            report.add("loads and runs in onnxruntime-genai", False, str(error))
            return report
        fp32["logits"] = {prompt["id"]: prompt["logits_path"] for prompt in evaluation["prompts"]}
        check_against_source(report, evaluation, context.reference, FP32_LOGIT_LIMIT, FP32_TOP1_MIN)
        check_runtime(report, evaluation, context.reference)
        return report

    def _validate(self, context: BuildContext, toolchain, described: dict, variant: Variant, fp32: dict, source_facts: dict, work: Path) -> ValidationReport:
        from hubquant.backends.onnx_checks import check_against_fp32, check_runtime, check_structure

        report = ValidationReport()
        check_structure(report, described, variant, context, source_facts)
        if not variant.runs_here:
            reason = (
                f"not run: this machine has no {variant.provider_label} device, and the onnxruntime-genai "
                "CPU package cannot load this provider; only the structural checks ran"
            )
            report.skip("runs in onnxruntime-genai", reason)
            return report
        if context.reference is None or "logits" not in fp32:
            report.skip("runtime comparison", "the fp32 variant was not run, so there is nothing to compare with")
            return report
        kl_limit, top1_min = KL_LIMITS[variant.precision]
        try:
            evaluation = self._evaluate(context, toolchain, described["folder"], work / f"eval-{variant.name}", fp32["logits"])
        except ToolchainError as error:
            report.add("loads and runs in onnxruntime-genai", False, str(error))
            return report
        check_against_fp32(report, evaluation, kl_limit, top1_min)
        check_runtime(report, evaluation, context.reference)
        return report

    def _build_and_publish(self, context, toolchain, release, target, variant, fp32, root, source_facts, work) -> None:
        key = self._key(release, target)
        context.reporter.step(key, QUANTIZING if variant.quantized else CONVERTING)
        extra_facts: dict = {}
        try:
            if variant.data_aware:
                described, extra_facts["calibration"] = self._build_gptq(context, toolchain, key, variant, fp32, root, source_facts)
            else:
                described = self._build_variant(context, toolchain, variant, root, source_facts)
        except (ToolchainError, UsageError) as error:
            self._fail(context, release, target, str(error))
            return
        context.reporter.step(key, VALIDATING)
        report = self._validate(context, toolchain, described, variant, fp32, source_facts, work)
        if not report.passed and not context.force:
            shutil.rmtree(described["folder"], ignore_errors=True)
            self._fail(context, release, target, f"validation failed: {report.summary()}")
            return
        if variant.data_aware and "kl_mean" in report.metrics:
            extra_facts["data_free"] = self._data_free_comparison(context, toolchain, variant, fp32, source_facts, work)
        self._publish(context, release, target, variant, described, report, extra_facts)

    def _build_gptq(self, context, toolchain, key: str, variant: Variant, fp32: dict, root: Path, source_facts: dict) -> tuple[dict, dict]:
        """Copy the fp32 CPU variant and quantize its MatMul weights with GPTQ on the calibration text."""
        context.reporter.step(key, CALIBRATING)
        calibration = context.calibration()
        folder = root / variant.name
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(fp32["folder"], folder)
        context.reporter.step(key, QUANTIZING)
        result = toolchains.run_step(toolchain, "onnx", {
            "op": "gptq", "folder": str(folder), "source_dir": str(context.source.path),
            "calibration_text": calibration.text, "sequence_length": context.calibration_options.chunk_size,
            "max_rows": GPTQ_MAX_ROWS, **variant.gptq_request(),
        }).data  # fmt: skip
        described = toolchains.run_step(toolchain, "onnx", {"op": "describe", "folder": str(folder)}).data
        command = (
            builder_command(Variant("cpu", "fp32"), tied_source=source_facts["tie_word_embeddings"])
            + f", then GPTQ on a copy with onnxruntime's MatMulNBitsQuantizer (block size {variant.block_size}, "
            + f"{'symmetric' if variant.symmetric else 'asymmetric'}, accuracy level {variant.accuracy_level})"
        )  # fmt: skip
        facts = {**calibration.card_facts(), "method": "gptq", "rows": result["rows"],
                 "sequence_length": result["sequence_length"], "tokens": result["tokens"]}  # fmt: skip
        return {**described, "folder": folder, "root": root, "build_seconds": result["seconds"], "builder_command": command}, facts

    def _data_free_comparison(self, context, toolchain, variant: Variant, fp32: dict, source_facts: dict, work: Path) -> dict | None:
        """Build the builder's round-to-nearest variant with the same settings and measure it the same way."""
        plain = variant.data_free()
        root = work / "data-free"
        try:
            described = self._build_variant(context, toolchain, plain, root, source_facts)
            evaluation = self._evaluate(context, toolchain, described["folder"], work / f"eval-data-free-{plain.name}", fp32["logits"])
        except ToolchainError as error:
            log.warning("the data-free comparison for %s failed: %s", variant.name, error)
            return None
        finally:
            shutil.rmtree(root, ignore_errors=True)
        from hubquant.comparison import summarize

        return summarize(f"onnx:{plain.name}", described["bits_per_weight"], [prompt["comparison"] for prompt in evaluation["prompts"]])

    def _publish(self, context, release, target, variant: Variant, described: dict, report: ValidationReport, extra_facts: dict | None = None) -> None:
        folder: Path = described["folder"]
        oversized = oversized_files(described["files"], context.max_file_bytes)
        if oversized:
            # NOTE: the weights are not split into several data files, which
            # onnxruntime-genai would have to be configured to find.
            from hubquant.cards import human_size

            name, size = oversized[0]
            self._fail(
                context, release, target,
                f"{variant.name}/{name} is {human_size(size)}, over the limit of {human_size(context.max_file_bytes)} "
                "for one file on the Hub; choose a smaller precision such as int4",
            )  # fmt: skip
            return
        files = sorted(path for path in folder.rglob("*") if path.is_file())
        artifact = Artifact(
            target=target,
            files=files,
            size_bytes=sum(path.stat().st_size for path in files),
            bits_per_weight=described["bits_per_weight"],
            validation=report,
            facts={**variant_facts(variant, described, forced=not report.passed), **(extra_facts or {})},
            root=described["root"],
        )
        release.artifacts.append(artifact)
        if context.on_artifact is not None:
            context.on_artifact(release, artifact)
        context.reporter.step(self._key(release, target), DONE, "" if report.passed else "published despite failed checks (--force)")

    # --- card ----------------------------------------------------------------

    def card_context(self, **facts) -> dict:
        return card_context(**facts)

    def render_card(self, release: Release, context: dict) -> str:
        from hubquant.cards import card_metadata, render_card

        context = dict(context)
        source_card = context.pop("source_card")
        extra_tags = []
        for variant in context["variants"]:
            for tag in (variant["provider"], variant["precision"], *variant["hardware"]):
                if tag not in extra_tags:
                    extra_tags.append(tag)
        source = context["source"]
        context["metadata"] = card_metadata(
            source_card,
            base_model=source["id"] or source["declared_base_model"],
            library_name=self.library_name,
            backend_tags=["onnx", "onnxruntime-genai", "quantized"],
            extra_tags=extra_tags,
        )
        return render_card("onnx.md.j2", context)


def oversized_files(files: dict[str, int], max_bytes: int) -> list[tuple[str, int]]:
    """Return the (name, size) of each file larger than `max_bytes`, largest first."""
    return sorted(((name, size) for name, size in files.items() if size > max_bytes), key=lambda item: -item[1])


def variant_facts(variant: Variant, described: dict, *, forced: bool) -> dict:
    """Return the card and manifest facts of one variant, read from its graph."""
    nodes = described["quantized_nodes"]
    matmuls = [node for node in nodes if node["op"] == "MatMulNBits"]
    groups: dict[str, int] = {}
    for node in matmuls:
        groups[node["group"]] = groups.get(node["group"], 0) + 1
    first = matmuls[0] if matmuls else None
    return {
        "folder": variant.name,
        "provider": variant.provider,
        "precision": variant.precision,
        "short_name": variant.short_name,
        "run_here": variant.runs_here,
        "options": {
            "algorithm": variant.algorithm if variant.quantized else None,
            "block_size": variant.block_size if variant.quantized else None,
            "accuracy_level": variant.accuracy_level if variant.quantized else None,
            "symmetric": variant.symmetric if variant.quantized else None,
            "quantize_embeddings": variant.quantize_embeddings,
            "lm_head": variant.lm_head,
        },
        "quantization": {
            "bits": sorted({node["bits"] for node in matmuls}),
            "block_size": first["block_size"] if first else None,
            "accuracy_level": first["accuracy_level"] if first else None,
            "symmetric": all(node["symmetric"] for node in matmuls) if matmuls else None,
            "matrices": groups,
            "lm_head_bits": next((node["bits"] for node in matmuls if node["group"] == "lm_head"), None),
            "embeddings": _embedding_kind(described),
        },
        "shared_embeddings": described["shared_embeddings"],
        "opsets": described["opsets"],
        "ir_version": described["ir_version"],
        "producer": described["producer"],
        "io_types": {
            "kv_cache": described["inputs"].get("past_key_values.0.key"),
            "logits": described["outputs"].get("logits"),
        },
        "ops": described["ops"],
        "file_sizes": described["files"],
        "build_seconds": round(described["build_seconds"], 1),
        "builder_command": described["builder_command"],
        "forced": forced,
    }


def _embedding_kind(described: dict) -> str:
    embedding = described["embedding"]
    if embedding["op"] == "GatherBlockQuantized":
        bits = [node["bits"] for node in described["quantized_nodes"] if node["op"] == "GatherBlockQuantized"]
        return f"int{bits[0] if bits else 4}"
    return "float"


def builder_command(variant: Variant, *, tied_source: bool) -> str:
    """Return the builder invocation that makes this variant from a source folder."""
    import shlex

    options = [f"{key}={value}" for key, value in variant.builder_options(tied_source=tied_source).items()]
    arguments = [
        "python", "-m", "onnxruntime_genai.models.builder", "-i", "SOURCE_FOLDER", "-o", variant.name,
        "-p", variant.precision, "-e", PROVIDERS[variant.provider].builder_name, "--extra_options", *options,
    ]  # fmt: skip
    return shlex.join(arguments)


# --- card ---------------------------------------------------------------------

# Hardware table keys a provider's variants may list, and the default when the
# table has no entry for a variant (hubquant.hardware names most ONNX targets
# by short name, such as onnx:int4 for the CPU and onnx:cuda-int4).
PROVIDER_HARDWARE = {
    "cpu": (("phone", "iot", "intel-ai-pc", "snapdragon-pc", "any-cpu"), "any-cpu"),
    "cuda": (("nvidia-gpu",), "nvidia-gpu"),
    "dml": (("windows-gpu", "snapdragon-pc"), "windows-gpu"),
    "webgpu": (("browser",), "browser"),
    "trt-rtx": (("nvidia-gpu",), "nvidia-gpu"),
}


def variant_hardware(provider: str, precision: str) -> list[str]:
    """Return the hardware keys of a variant, in the hardware table's order."""
    from hubquant.hardware import hardware_for_target

    allowed, default = PROVIDER_HARDWARE[provider]
    names = [f"{provider}-{precision}"] + ([precision] if provider == "cpu" else [])
    keys: list[str] = []
    for name in names:
        for key in hardware_for_target("onnx", name):
            if key in allowed and key not in keys:
                keys.append(key)
    return keys or [default]


def _variant_entry(entry: dict) -> dict:
    facts = entry["facts"]
    validation = entry["validation"]
    provider = PROVIDERS[facts["provider"]]
    folder = facts["folder"]
    return {
        "name": folder,
        "type": facts["short_name"],
        "target": entry["target"],
        "provider": facts["provider"],
        "provider_label": provider.label,
        "precision": facts["precision"],
        "package": provider.package,
        "run_here": facts["run_here"],
        "size_bytes": entry["size_bytes"],
        "bits_per_weight": entry["bits_per_weight"],
        "hardware": variant_hardware(facts["provider"], facts["precision"]),
        "files": [{"name": name, "size_bytes": size} for name, size in sorted(facts["file_sizes"].items())],
        "quantization": facts["quantization"],
        "options": facts["options"],
        "shared_embeddings": facts["shared_embeddings"],
        "opsets": facts["opsets"],
        "ir_version": facts["ir_version"],
        "producer": facts["producer"],
        "io_types": facts["io_types"],
        "builder_command": facts["builder_command"],
        "calibration": facts.get("calibration"),
        "data_free": facts.get("data_free"),
        "validation": {
            "status": "forced" if facts.get("forced") else validation["status"],
            "checks": validation["checks"],
            "kl_mean": validation.get("kl_mean"),
            "kl_max": validation.get("kl_max"),
            "top1_agreement": validation.get("top1_agreement"),
            "max_abs_diff": validation.get("max_abs_diff"),
        },
    }


def _variant_order(entry: dict) -> tuple:
    facts = entry["facts"]
    order = list(PROVIDERS)
    precisions = ("int4", "int8", "fp16", "bf16", "fp32")
    return (order.index(facts["provider"]), precisions.index(facts["precision"]), facts["folder"])


def card_context(**facts) -> dict:
    """Build the context of templates/onnx.md.j2 from the release facts.

    The source, validation, prompt-format and license parts are those of the GGUF
    card; the variant, provenance and memory parts are the ONNX ones.
    """
    from hubquant.cards_context import card_context as common_context
    from hubquant.hardware import memory_guidance

    context = common_context(**facts)
    release: Release = facts["release"]
    variants = [_variant_entry(entry) for entry in sorted(facts["artifacts"], key=_variant_order)]
    hardware_keys: list[str] = []
    for variant in variants:
        hardware_keys += [key for key in variant["hardware"] if key not in hardware_keys]
    context["files"] = variants
    context["variants"] = variants
    context["memory_guidance"] = memory_guidance(hardware_keys)
    context["not_run"] = [variant for variant in variants if not variant["run_here"]]
    context["provenance"] = {
        "hubquant_version": context["provenance"]["hubquant_version"],
        "date": facts["date"],
        "tool_versions": release.facts.get("tool_versions", {}),
        "command": facts["command"],
    }
    return context
