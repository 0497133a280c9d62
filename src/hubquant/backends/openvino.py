"""OpenVINO backend: export with optimum-intel, compress weights with NNCF, validate.

Each precision is its own release repo (``{model}-int4-ov``, ...). The
unquantized IR (fp16, or fp32 for weights beyond the fp16 range) is exported
once per job and checked against the source run in transformers. Quantized IRs
are checked against it in OpenVINO. Every artifact runs in both runtimes that
users load these repos with: optimum-intel's ``OVModelForCausalLM`` and
openvino-genai's ``LLMPipeline``.

Weight compression options are part of the target, for example
``openvino:int4:group-size=64,ratio=0.8,sym=true``. Every int4 and int8 export
passes its options explicitly, because optimum-cli otherwise applies presets
matched by model or folder name, some of which download a data set.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from hubquant import toolchains
from hubquant.backends.base import Artifact, BuildContext, Release
from hubquant.errors import SourceError, ToolchainError, UsageError
from hubquant.progress import CALIBRATING, CONVERTING, DONE, FAILED, QUANTIZING, VALIDATING
from hubquant.reference import original_context
from hubquant.resources import MEMORY_BASE
from hubquant.targets import Target
from hubquant.validation import ValidationReport

log = logging.getLogger(__name__)

F16_MAX = 65504.0


@dataclass(frozen=True)
class Precision:
    """An OpenVINO target precision, its options and its pass/fail limits."""

    name: str
    quantized: bool
    # Option names a target of this precision may set.
    options: tuple[str, ...]
    # Nominal bits per weight, for disk estimates before anything is built.
    nominal_bits: float
    # Unquantized IRs are compared with transformers (max |logit difference|),
    # quantized ones with the unquantized IR (mean KL in nats).
    logit_limit: float | None = None
    kl_mean_limit: float | None = None
    top1_min: float = 0.0
    # Max |logit difference| from transformers on the prompt past a LongRoPE
    # model's original context (unquantized IRs only).
    long_logit_limit: float | None = None


INT4_OPTIONS = (
    "group-size", "ratio", "sym", "backup-precision", "all-layers", "awq",
    # Data-aware: each of these feeds the job's calibration text to NNCF.
    "calibrate", "scale-estimation", "gptq", "sensitivity-metric",
)  # fmt: skip
# NNCF's metrics for assigning int4 or the backup precision when ratio < 1.
# Every one but weight_quantization_error reads activations, so needs data.
SENSITIVITY_METRICS = (
    "weight_quantization_error", "hessian_input_activation", "mean_activation_variance",
    "max_activation_variance", "mean_activation_magnitude",
)  # fmt: skip
BOOLEAN_OPTIONS = ("sym", "all-layers", "awq", "calibrate", "scale-estimation", "gptq")

# The limits catch broken files, they do not grade quality. They were set from
# the tiny random Phi-3 models of the test suite (docs/benchmarks.md has the
# measurements). fp32 differed from transformers by at most 3e-5 and fp16 by
# 0.016. Against the unquantized fp16 IR, the int8 variants measured a mean KL
# of 0.0039-0.0045 (top-1 90-95%) and the int4 variants 0.31-0.94 (top-1
# 28-61%, the worst with all-layers). An untrained network amplifies
# quantization noise far more than a trained one, so the 4-bit limits are loose.
# Past the original context (4112 tokens of text, tiny Phi-3.5-mini), fp32
# differed by 2.5e-5 and fp16 by 0.30. The fp16 IR's error grows with the
# position: 0.10 at 64 random tokens, 0.72 at 1000 and 2.0 at 4112. Wrong long
# factors measured 17.1 with 0% top-1 (docs/benchmarks.md has the table).
PRECISIONS = {
    precision.name: precision
    for precision in (
        Precision("fp32", False, (), 32.0, logit_limit=0.01, top1_min=0.98, long_logit_limit=0.01),
        Precision("fp16", False, (), 16.0, logit_limit=0.1, top1_min=0.95, long_logit_limit=1.0),
        Precision("int8", True, ("sym",), 8.5, kl_mean_limit=0.05, top1_min=0.6),
        Precision("int4", True, INT4_OPTIONS, 5.0, kl_mean_limit=2.5, top1_min=0.1),
    )
}

BACKUP_PRECISIONS = ("none", "int8_sym", "int8_asym")

# Architectures whose export the test suite validates against transformers.
# Exported to fp32 with optimum-intel 2.2.0, the tiny Phi-3 (both LongRoPE
# spellings), Phi-3.5, Phi-4-mini, Phi-4, Phi-tiny-MoE and Phi-2 models all
# matched transformers within 4e-5 in their logits, with identical greedy
# tokens. NNCF 3.4 compresses PhiMoE's fused expert weights like other weights.
ARCHITECTURES = frozenset({"Phi3ForCausalLM", "PhiMoEForCausalLM", "PhiForCausalLM"})

# Properties for both runtimes during validation. A CPU with avx512_bf16
# infers in bf16 by default, which would hide differences, and the KV cache and
# dynamic activation quantization would add their own rounding. With these
# settings the comparison measures the weights alone.
VALIDATION_RUNTIME_CONFIG = {
    "INFERENCE_PRECISION_HINT": "f32",
    "KV_CACHE_PRECISION": "f32",
    "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0",
}

# openvino-genai and optimum-intel compile the IR separately and may pick
# different attention kernels, so their greedy tokens may differ, but only
# where the top two logits are this close.
RUNTIME_TIE_MARGIN = 0.05

# Files every release holds, plus chat_template.jinja when the source has a
# chat template. LLMPipeline needs the tokenizer and detokenizer models.
REQUIRED_FILES = (
    "openvino_model.xml",
    "openvino_model.bin",
    "openvino_tokenizer.xml",
    "openvino_tokenizer.bin",
    "openvino_detokenizer.xml",
    "openvino_detokenizer.bin",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


# --- weight compression settings ---------------------------------------------


@dataclass(frozen=True)
class Int4Recipe:
    """Default int4 settings for one model, with where they come from."""

    group_size: int
    ratio: float
    sym: bool
    awq: bool
    source: str
    url: str | None = None


OPTIMUM_INTEL_CONFIGS = "optimum-intel 2.2.0, optimum/intel/openvino/configuration.py"

# optimum-intel's default for models without a preset (_DEFAULT_4BIT_WQ_CONFIG).
GENERIC_INT4 = Int4Recipe(
    128, 1.0, False, False, f"{OPTIMUM_INTEL_CONFIGS}, the default for models without a preset"
)

# Per-model int4 defaults, keyed by the lower-cased Hub id of the source or of
# its declared base model. Only recipes that need no data set are used: this
# export runs offline, and data-free AWQ (awq without a data set) scales
# weights by their per-column magnitudes.
INT4_RECIPES = {
    "microsoft/phi-3.5-mini-instruct": Int4Recipe(
        128,
        0.6,
        True,
        False,
        "Phi Cookbook, Quantizing Phi-3.5 using Intel OpenVINO",
        "https://github.com/microsoft/PhiCookBook/blob/8fa6cd7864d25f137482b421fdb9ec1dc05d68ac/"
        "translations/en/md/01.Introduction/04/UsingIntelOpenVINOQuantifyingPhi.md",
    ),
    "microsoft/phi-4-mini-instruct": Int4Recipe(
        64, 1.0, False, True, f"{OPTIMUM_INTEL_CONFIGS}, preset for microsoft/Phi-4-mini-instruct"
    ),
    "microsoft/phi-4-reasoning": Int4Recipe(
        64, 1.0, False, False, f"{OPTIMUM_INTEL_CONFIGS}, preset for microsoft/Phi-4-reasoning"
    ),
}

# optimum-intel presets left out because they calibrate on a data set.
DATA_AWARE_PRESETS = {
    "microsoft/phi-3-mini-4k-instruct": "scale estimation on wikitext2",
    "microsoft/phi-2": "AWQ and scale estimation on wikitext2",
}


@dataclass(frozen=True)
class Compression:
    """The weight format of one target and where each setting came from."""

    precision: str
    options: dict = field(default_factory=dict)
    # Option name -> "target" (set in the target string) or the recipe source.
    sources: dict = field(default_factory=dict)
    recipe: str | None = None
    recipe_url: str | None = None
    skipped_preset: str | None = None

    @property
    def quantized(self) -> bool:
        return PRECISIONS[self.precision].quantized

    def export_arguments(self) -> list[str]:
        """Return the optimum-cli arguments after ``--model SOURCE``."""
        arguments = ["--task", "text-generation-with-past", "--library", "transformers",
                     "--weight-format", self.precision]  # fmt: skip
        options = self.options
        if self.precision == "int8":
            # One scale per output channel. Naming it keeps optimum-cli's presets off.
            arguments += ["--group-size", "-1"]
            if options["sym"]:
                arguments.append("--sym")
        elif self.precision == "int4":
            arguments += [
                "--group-size", str(options["group-size"]),
                "--ratio", _format_number(options["ratio"]),
                "--backup-precision", options["backup-precision"],
                "--group-size-fallback", "adjust",
            ]  # fmt: skip
            if options["sym"]:
                arguments.append("--sym")
            if options["all-layers"]:
                arguments.append("--all-layers")
            if options["awq"]:
                arguments.append("--awq")
            if options.get("scale-estimation"):
                arguments.append("--scale-estimation")
            if options.get("gptq"):
                arguments.append("--gptq")
            if options.get("sensitivity-metric"):
                arguments += ["--sensitivity-metric", options["sensitivity-metric"]]
        return arguments

    @property
    def data_aware(self) -> bool:
        """Whether NNCF compresses with activations of the calibration text."""
        options = self.options
        metric = options.get("sensitivity-metric")
        return self.precision == "int4" and bool(
            options.get("calibrate") or options.get("scale-estimation") or options.get("gptq")
            or (metric and metric != "weight_quantization_error")
        )  # fmt: skip

    def data_free(self) -> Compression:
        """Return the same setting without its data-aware parts, for comparison."""
        options = {**self.options, "calibrate": False, "scale-estimation": False, "gptq": False, "sensitivity-metric": None}
        return Compression(self.precision, options, self.sources, self.recipe, self.recipe_url, self.skipped_preset)

    def expected_modes(self) -> set[str]:
        """Return the weight formats this setting may produce in the IR."""
        options = self.options
        if self.precision in ("fp16", "fp32"):
            return {self.precision}
        if self.precision == "int8":
            return {"int8_sym" if options["sym"] else "int8_asym"}
        primary = "int4_sym" if options["sym"] else "int4_asym"
        backup = options["backup-precision"]
        if backup == "none":
            # Weights left out keep the exported precision (fp16 for 16-bit sources).
            return {primary, "fp16", "fp32", "bf16"}
        return {primary, backup}


def _format_number(value: float) -> str:
    return f"{value:g}"


def parse_precision(text: str) -> tuple[str, dict]:
    """Split ``int4:group-size=64,sym=true`` into the precision and typed options.

    Raise UsageError naming the bad part for an unknown precision or option, a
    malformed value or an option the precision does not take.
    """
    name, _, option_text = text.strip().partition(":")
    name = name.strip().lower()
    if name not in PRECISIONS:
        known = ", ".join(PRECISIONS)
        raise UsageError(f"unknown OpenVINO precision {name!r}; known precisions: {known}")
    allowed = PRECISIONS[name].options
    options: dict = {}
    if not option_text.strip():
        return name, options
    for item in option_text.split(","):
        key, equals, value = item.strip().partition("=")
        key = key.strip().lower()
        if not equals:
            raise UsageError(f"invalid option {item!r} in openvino:{text}: write NAME=VALUE, such as group-size=64")
        if key not in allowed:
            known = ", ".join(allowed) or "none"
            raise UsageError(f"openvino:{name} takes no option {key!r}; its options: {known}")
        options[key] = _parse_option(key, value.strip(), text)
    return name, options


def _parse_option(key: str, value: str, text: str):
    if key in BOOLEAN_OPTIONS:
        lowered = value.lower()
        if lowered not in ("true", "false"):
            raise UsageError(f"option {key} in openvino:{text} must be true or false, got {value!r}")
        return lowered == "true"
    if key == "group-size":
        try:
            size = int(value)
        except ValueError:
            raise UsageError(f"group-size in openvino:{text} must be an integer, got {value!r}") from None
        if size != -1 and size < 2:
            raise UsageError(f"group-size in openvino:{text} must be -1 (one scale per channel) or at least 2, got {size}")
        return size
    if key == "ratio":
        try:
            ratio = float(value)
        except ValueError:
            raise UsageError(f"ratio in openvino:{text} must be a number, got {value!r}") from None
        if not 0.0 < ratio <= 1.0:
            raise UsageError(f"ratio in openvino:{text} must be in (0, 1], got {ratio:g}")
        return ratio
    if key == "sensitivity-metric":
        if value.lower() not in SENSITIVITY_METRICS:
            raise UsageError(f"sensitivity-metric in openvino:{text} must be one of {', '.join(SENSITIVITY_METRICS)}, got {value!r}")
        return value.lower()
    assert key == "backup-precision"
    if value.lower() not in BACKUP_PRECISIONS:
        raise UsageError(f"backup-precision in openvino:{text} must be one of {', '.join(BACKUP_PRECISIONS)}, got {value!r}")
    return value.lower()


def canonical_precision(name: str, options: dict) -> str:
    """Write a precision and its options the one way targets compare equal."""
    if not options:
        return name
    parts = []
    for key in sorted(options):
        value = options[key]
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, float):
            text = _format_number(value)
        else:
            text = str(value)
        parts.append(f"{key}={text}")
    return f"{name}:{','.join(parts)}"


def resolve_compression(precision_text: str, model_ids: list[str]) -> Compression:
    """Fill in every weight compression setting of a target.

    Settings the target names win. The rest come from the int4 recipe of the
    first of ``model_ids`` (source repo id, declared base model) that has one,
    else optimum-intel's generic defaults. Backup precision int8_asym and
    all-layers false are NNCF's defaults.
    """
    name, given = parse_precision(precision_text)
    sources = {key: "target" for key in given}
    if name in ("fp16", "fp32"):
        return Compression(name)
    if name == "int8":
        options = {"sym": given.get("sym", False)}
        sources.setdefault("sym", "NNCF default (asymmetric int8)")
        return Compression(name, options, sources)

    recipe, skipped = GENERIC_INT4, None
    for model_id in model_ids:
        key = model_id.lower()
        if key in INT4_RECIPES:
            recipe = INT4_RECIPES[key]
            break
        if key in DATA_AWARE_PRESETS:
            skipped = f"optimum-intel's preset for {model_id} uses {DATA_AWARE_PRESETS[key]}"
            break
    defaults = {
        "group-size": recipe.group_size,
        "ratio": recipe.ratio,
        "sym": recipe.sym,
        "awq": recipe.awq,
        "backup-precision": "int8_asym",
        "all-layers": False,
        "calibrate": False,
        "scale-estimation": False,
        "gptq": False,
        "sensitivity-metric": None,
    }
    options = {**defaults, **given}
    for key in ("group-size", "ratio", "sym", "awq"):
        sources.setdefault(key, recipe.source)
    sources.setdefault("backup-precision", "NNCF default")
    sources.setdefault("all-layers", "NNCF default (embeddings and the last layer stay 8-bit)")
    for key in ("calibrate", "scale-estimation", "gptq"):
        sources.setdefault(key, "off unless the target sets it")
    sources.setdefault("sensitivity-metric", "NNCF default")
    return Compression(name, options, sources, recipe.source, recipe.url, skipped)


# --- the backend ---------------------------------------------------------------


@dataclass
class Unquantized:
    """An unquantized export of the source and its check against transformers."""

    precision: str
    folder: Path
    described: dict
    evaluation: dict | None
    report: ValidationReport
    export: dict


class OpenvinoBackend:
    name = "openvino"
    toolchain = "openvino"
    library_name = "openvino"
    # A repo per precision contains one variant. Its options are not in the file
    # names, so another variant replaces it (see the pipeline).
    one_variant_per_repo = True
    # LongRoPE sources get a prompt past their original context (see reference.py).
    checks_long_context = True

    def normalize_precision(self, precision: str) -> str:
        name, options = parse_precision(precision)
        return canonical_precision(name, options)

    def supported_architectures(self) -> frozenset[str]:
        return ARCHITECTURES

    def rejection_reason(self, architecture: str, target: Target) -> str | None:
        return None

    def release_name(self, model_name: str, target: Target) -> str:
        base = target.precision.split(":", 1)[0]
        return f"{model_name}-{base}-ov"

    def build_memory(self, parameters: int, target: Target) -> tuple[int, str]:
        return parameters * 4 + MEMORY_BASE, "optimum-intel loads the whole model in float32 to export it"

    def estimate_bytes(self, parameters: int, target: Target) -> int:
        precision = PRECISIONS[target.precision.split(":", 1)[0]]
        size = int(parameters * precision.nominal_bits / 8)
        if precision.quantized:
            # The fp16 export that quantized files are checked against is on disk too.
            size += parameters * 2
        return size

    # --- build ---------------------------------------------------------------

    def build(self, context: BuildContext, release: Release) -> None:
        toolchain = toolchains.ensure(self.toolchain)
        versions = toolchain.versions
        release.facts["tool_versions"] = {
            name: versions.get(name, "unknown")
            for name in ("optimum-intel", "optimum", "nncf", "openvino", "openvino-genai",
                         "openvino-tokenizers", "transformers", "torch")
        }  # fmt: skip
        target, *extra = release.targets
        for other in extra:
            self._fail(context, release, other, (
                f"{target} and {other} both go to {release.repo_name}; build one "
                f"{target.precision.split(':')[0]} variant per run"
            ))  # fmt: skip
        key = self._key(release, target)
        source = context.source
        model_ids = [name for name in (source.repo_id, source.declared_base_model) if name]
        compression = resolve_compression(target.precision, model_ids)
        release.facts["compression"] = _compression_facts(compression)
        work = context.work_dir / "openvino"
        work.mkdir(parents=True, exist_ok=True)

        if compression.quantized and not context.validate and not compression.data_aware:
            # A benchmark run without validation: nothing would read the unquantized export.
            self._build_unvalidated(context, toolchain, work, release, target, compression)
            return

        context.reporter.step(key, CONVERTING)
        try:
            base = self._unquantized(context, toolchain, work, compression)
        except (ToolchainError, SourceError) as error:
            self._fail(context, release, target, str(error))
            return
        release.facts["reference_validation"] = base.report.to_dict()
        release.facts["unquantized_precision"] = base.precision
        long_prompt = (base.evaluation or {}).get("long_prompt")
        if long_prompt is not None:
            release.facts["long_context"] = {
                "tokens": len(context.reference.long_prompt.input_ids),
                "original": original_context(context.source.config),
                "optimum_generate_error": long_prompt["optimum_generate_error"],
                "versions": {name: release.facts["tool_versions"][name] for name in ("optimum-intel", "transformers")},
            }
        if not base.report.passed and not context.force:
            reason = f"the unquantized {base.precision} export failed validation: {base.report.summary()}"
            self._fail(context, release, target, reason)
            return

        if compression.quantized:
            built = self._quantized(context, toolchain, work, release, target, compression, base)
            if built is None:
                return
            folder, described, report, export = built
        else:
            folder, described, export = base.folder, base.described, base.export
            report = self._copy_report(base.report)

        if not report.passed and not context.force:
            self._fail(context, release, target, f"validation failed: {report.summary()}")
            return
        self._publish(context, release, target, folder, described, report, compression, export)

    def _build_unvalidated(self, context, toolchain, work: Path, release: Release, target: Target, compression: Compression) -> None:
        """Export and publish a quantized target without the unquantized export it is validated against."""
        context.reporter.step(self._key(release, target), QUANTIZING)
        try:
            source_dir = export_input(context.source, work)
            folder, described, export = self._export(toolchain, work, f"{release.repo_name}-export", source_dir, compression)
        except (ToolchainError, SourceError) as error:
            self._fail(context, release, target, str(error))
            return
        report = ValidationReport.turned_off()
        release.facts["reference_validation"] = report.to_dict()
        self._publish(context, release, target, folder, described, report, compression, export)

    def _key(self, release: Release, target: Target) -> str:
        return f"{release.repo_name} {target}"

    def _fail(self, context: BuildContext, release: Release, target: Target, reason: str) -> None:
        release.failed[str(target)] = reason
        context.reporter.step(self._key(release, target), FAILED, reason)

    def _copy_report(self, report: ValidationReport) -> ValidationReport:
        return ValidationReport(list(report.checks), dict(report.metrics))

    def _export(self, toolchain, work: Path, name: str, source_dir: Path, compression: Compression, calibration_texts: list[str] | None = None) -> tuple[Path, dict, dict]:
        out_dir = work / name
        shutil.rmtree(out_dir, ignore_errors=True)
        request = {"op": "export", "source_dir": str(source_dir), "out_dir": str(out_dir), "arguments": compression.export_arguments()}
        if compression.data_aware:
            assert calibration_texts, "a data-aware export needs calibration texts"
            request["calibration_texts"] = calibration_texts
        export = toolchains.run_step(toolchain, "openvino", request).data
        described = toolchains.run_step(toolchain, "openvino", {"op": "inspect", "folder": str(out_dir)}).data
        return out_dir, described, export

    def _unquantized(self, context: BuildContext, toolchain, work: Path, compression: Compression) -> Unquantized:
        """Export (once per job) and validate the unquantized IR.

        An fp32 target uses an fp32 export. Every other target uses fp16,
        unless the source has weights beyond the fp16 range: then an fp16
        target fails and quantized targets are checked against fp32.
        """
        from hubquant.backends.openvino_checks import validate_unquantized

        precision = "fp32" if compression.precision == "fp32" else "fp16"
        if precision == "fp16" and context.source.dtype != "float16":
            peak = self._max_abs_weight(toolchain, work, context.source.path)
            if peak > F16_MAX:
                if compression.precision == "fp16":
                    raise SourceError(
                        f"the source has weights up to {peak:.6g}, beyond the fp16 range "
                        f"({F16_MAX:g}), which would become inf; choose fp32 or int8 instead of fp16"
                    )
                precision = "fp32"
        cache = work / f"unquantized-{precision}.json"
        folder = work / f"unquantized-{precision}"
        if cache.is_file() and folder.is_dir():
            log.info("reusing the validated unquantized %s export of this job", precision)
            saved = json.loads(cache.read_text())
            report = _report_from_dict(saved["report"])
            return Unquantized(precision, folder, saved["described"], saved["evaluation"], report, saved["export"])

        source_dir = export_input(context.source, work)
        folder, described, export = self._export(toolchain, work, folder.name, source_dir, Compression(precision))
        evaluation = None
        if context.reference is not None:
            evaluation = self._evaluate(toolchain, folder, context, work / f"eval-{folder.name}", None)
        report = validate_unquantized(context, PRECISIONS[precision], folder, described, evaluation, Compression(precision))
        saved = {"described": described, "evaluation": evaluation, "export": export, "report": report.to_dict()}
        cache.write_text(json.dumps(saved))
        return Unquantized(precision, folder, described, evaluation, report, export)

    def _max_abs_weight(self, toolchain, work: Path, source_dir: Path) -> float:
        cache = work / "max-abs-weight.json"
        if cache.is_file():
            return json.loads(cache.read_text())["max_abs"]
        peak = toolchains.run_step(toolchain, "openvino", {"op": "max_abs", "source_dir": str(source_dir)}).data["max_abs"]
        cache.write_text(json.dumps({"max_abs": peak}))
        return peak

    def _quantized(self, context, toolchain, work: Path, release: Release, target: Target, compression: Compression, base: Unquantized):
        from hubquant.backends.openvino_checks import validate_quantized

        key = self._key(release, target)
        texts = None
        if compression.data_aware:
            context.reporter.step(key, CALIBRATING)
            try:
                calibration = context.calibration()
            except UsageError as error:
                self._fail(context, release, target, f"calibration text: {error}")
                return None
            texts = calibration.samples()
            release.facts["calibration"] = {**calibration.card_facts(), "samples": len(texts)}
        context.reporter.step(key, QUANTIZING)
        try:
            source_dir = export_input(context.source, work)
            folder, described, export = self._export(toolchain, work, f"{release.repo_name}-export", source_dir, compression, texts)
        except ToolchainError as error:
            self._fail(context, release, target, str(error))
            return None
        context.reporter.step(key, VALIDATING)
        evaluation = None
        if context.reference is not None and base.evaluation is not None:
            against = _logits_paths(base.evaluation)
            try:
                evaluation = self._evaluate(toolchain, folder, context, work / f"eval-{folder.name}", against)
            except ToolchainError as error:
                self._fail(context, release, target, f"the {target} export does not run: {error}")
                return None
        report = validate_quantized(context, PRECISIONS[compression.precision], folder, described, evaluation, compression)
        if compression.data_aware and evaluation is not None:
            release.facts["data_free"] = self._data_free_comparison(context, toolchain, work, release, compression, base)
        return folder, described, report, export

    def _data_free_comparison(self, context, toolchain, work: Path, release: Release, compression: Compression, base: Unquantized) -> dict | None:
        """Export the same setting without calibration data and measure it the same way, for the card."""
        plain = compression.data_free()
        try:
            folder, described, _ = self._export(toolchain, work, f"{release.repo_name}-data-free", export_input(context.source, work), plain)
            against = _logits_paths(base.evaluation)
            evaluation = self._evaluate(toolchain, folder, context, work / f"eval-{folder.name}", against)
        except ToolchainError as error:
            log.warning("the data-free comparison export failed: %s", error)
            return None
        shutil.rmtree(folder, ignore_errors=True)
        from hubquant.comparison import summarize

        summary = summarize(f"openvino:{plain.precision}", described.get("bits_per_weight"),
                            [prompt["comparison"] for prompt in evaluation["prompts"]])  # fmt: skip
        return {**summary, "export_arguments": plain.export_arguments()}

    def _evaluate(self, toolchain, folder: Path, context: BuildContext, out_dir: Path, against: dict[str, str] | None) -> dict:
        """Run ``folder`` on the reference prompts; compare with ``against`` (logit
        files by prompt id, from the unquantized IR) or else with transformers."""
        reference = context.reference
        assert reference is not None
        prompts = [
            {
                "id": prompt.id,
                "kind": "chat" if prompt.id.startswith("chat") else "text",
                "text": prompt.text,
                "input_ids": prompt.input_ids,
                "reference_logits": against[prompt.id] if against is not None else prompt.logits_path,
            }
            for prompt in reference.prompts
        ]
        long_prompt = None
        if reference.long_prompt is not None:
            long_prompt = reference.long_prompt_request(against["long"] if against is not None else None)
        return toolchains.run_step(
            toolchain,
            "openvino",
            {
                "op": "evaluate",
                "folder": str(folder),
                "prompts": prompts,
                "long_prompt": long_prompt,
                "eos_ids": reference.eos_ids,
                "max_new_tokens": reference.max_new_tokens,
                "out_dir": str(out_dir),
                "runtime_config": VALIDATION_RUNTIME_CONFIG,
            },
        ).data

    def _publish(self, context: BuildContext, release: Release, target: Target, folder: Path, described: dict, report: ValidationReport, compression: Compression, export: dict) -> None:
        from hubquant.backends.openvino_checks import compression_facts_from_ir
        from hubquant.cards import human_size

        oversized = [path for path in sorted(folder.iterdir()) if path.is_file() and path.stat().st_size > context.max_file_bytes]
        if oversized:
            largest = oversized[0]
            self._fail(context, release, target, (
                f"{largest.name} is {human_size(largest.stat().st_size)}, over the "
                f"{human_size(context.max_file_bytes)} limit for one file, and an OpenVINO "
                "IR cannot be split; choose a smaller precision such as int8 or int4"
            ))  # fmt: skip
            return
        # The published copy is made of hard links, so uploading (which removes
        # files) leaves the cached unquantized export for later releases.
        staged = context.work_dir / "openvino" / f"{release.repo_name}-files"
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        files = []
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.name == "openvino_config.json":
                # openvino_config.json records "quant_method: default" and loses
                # the real settings, which the IR's runtime info keeps.
                continue
            copy = staged / path.name
            try:
                os.link(path, copy)
            except OSError:
                shutil.copy2(path, copy)
            files.append(copy)
        ir_facts = compression_facts_from_ir(described, compression)
        artifact = Artifact(
            target=target,
            files=files,
            size_bytes=sum(path.stat().st_size for path in files),
            bits_per_weight=described["bits_per_weight"],
            validation=report,
            facts={
                **ir_facts,
                "file_sizes": {path.name: path.stat().st_size for path in files},
                "export_seconds": export["seconds"],
                "export_peak_rss_bytes": export["peak_rss_bytes"],
                "forced": not report.passed,
            },
            root=staged,
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
        source = context["source"]
        precision = context["precision"]
        backend_tags = ["openvino", "nncf", "optimum-intel"]
        if PRECISIONS[precision].quantized:
            backend_tags.append("quantized")
        context["metadata"] = card_metadata(
            source_card,
            base_model=source["id"] or source["declared_base_model"],
            library_name=self.library_name,
            backend_tags=backend_tags,
            extra_tags=[precision, *context["files"][0]["hardware"]],
        )
        return render_card("openvino.md.j2", context)


def _compression_facts(compression: Compression) -> dict:
    return {
        "precision": compression.precision,
        "options": dict(compression.options),
        "sources": dict(compression.sources),
        "recipe": compression.recipe,
        "recipe_url": compression.recipe_url,
        "skipped_preset": compression.skipped_preset,
        "export_arguments": compression.export_arguments(),
    }


def _logits_paths(evaluation: dict) -> dict[str, str]:
    """Return the logit files of an evaluation by prompt id, the long prompt's included."""
    paths = {prompt["id"]: prompt["logits_path"] for prompt in evaluation["prompts"]}
    if evaluation.get("long_prompt"):
        paths[evaluation["long_prompt"]["id"]] = evaluation["long_prompt"]["logits_path"]
    return paths


def _report_from_dict(data: dict) -> ValidationReport:
    from hubquant.validation import Check

    checks = [Check(item["name"], item["status"], item["detail"]) for item in data["checks"]]
    metrics = {key: value for key, value in data.items() if key not in ("status", "checks")}
    return ValidationReport(checks, metrics)


def export_input(source, work: Path) -> Path:
    """Return the folder optimum-cli reads, with legacy config spellings updated.

    transformers 5.5.4 (the version optimum-intel 2.2.0 allows) rejects a
    ``rope_scaling`` of type "su", the first public spelling of LongRoPE in
    Phi-3-mini-128k's config (May 2024): "Missing required keys in
    rope_parameters for rope_type longrope: original_max_position_embeddings".
    "su" and "longrope" name the same method, so the copy uses "longrope".
    The source folder itself is never changed.
    """
    scaling = source.config.get("rope_scaling")
    if not isinstance(scaling, dict) or scaling.get("type") != "su":
        return source.path
    config = dict(source.config)
    config["rope_scaling"] = {**scaling, "type": "longrope"}
    shadow = work / "export-input"
    shutil.rmtree(shadow, ignore_errors=True)
    shadow.mkdir(parents=True)
    for entry in source.path.iterdir():
        if entry.name != "config.json":
            (shadow / entry.name).symlink_to(entry.resolve())
    (shadow / "config.json").write_text(json.dumps(config, indent=2))
    return shadow


# --- card context ----------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """An OpenVINO device kind, which precisions suit it, and the source."""

    name: str
    hardware: str
    precisions: str
    source: str
    url: str


# Each entry rests on the OpenVINO documentation named in it.
DEVICES = (
    Device(
        "CPU",
        "Intel Core and Xeon processors (x86-64 with AVX2 or newer); Arm CPUs too",
        "every precision; fp32 and fp16 files need the most memory",
        "OpenVINO Supported Devices",
        "https://docs.openvino.ai/2025/documentation/compatibility-and-support/supported-devices.html",
    ),
    Device(
        "GPU",
        "Intel integrated graphics (HD, Iris, Arc in Core Ultra) and Arc discrete GPUs",
        "every precision; int4 and int8 files fit integrated GPUs' shared memory best",
        "OpenVINO Supported Devices (GPU plugin hardware list)",
        "https://docs.openvino.ai/2023.1/openvino_docs_OV_UG_supported_plugins_Supported_Devices.html",
    ),
    Device(
        "NPU",
        "the NPU of Intel Core Ultra processors",
        "symmetric int4 (openvino:int4:sym=true), with group size 128, or -1 (one scale per channel) for models above 1B parameters",
        "OpenVINO GenAI on NPU: symmetrically quantized INT4 models are preferred",
        "https://docs.openvino.ai/2024/learn-openvino/llm_inference_guide/genai-guide-npu.html",
    ),
)


def _npu_fit(precision: str, weight_compression: dict) -> str:
    """Return one sentence on whether this release suits the NPU."""
    if precision == "int4" and weight_compression.get("mode") == "int4_sym":
        return "This release suits the NPU: its 4-bit weights are symmetric."
    if precision == "int4":
        return (
            "This release is not in the NPU's preferred format, because its 4-bit weights are "
            "asymmetric. Build openvino:int4:sym=true for the NPU."
        )
    return f"This {precision} release is not in the NPU's preferred format. Build openvino:int4:sym=true for the NPU."


def card_context(
    *,
    repo_id: str,
    source,
    release: Release,
    artifacts: list[dict],
    license_files: list[str],
    command: str,
    date: str,
    endpoint: str,
) -> dict:
    """Build the context of templates/openvino.md.j2 from a release's measured facts."""
    from hubquant import __version__
    from hubquant.cards_context import _token_text, config_eos_ids, render_prompt_example, source_context
    from hubquant.hardware import hardware_for_target, memory_guidance
    from hubquant.source import chat_template_of

    built = {str(artifact.target) for artifact in release.artifacts}
    entry = next(item for item in artifacts if item["target"] in built)
    precision = entry["target"].split(":", 2)[1]
    facts = entry["facts"]
    validation = entry["validation"]
    hardware = hardware_for_target("openvino", precision)
    card = source.card_data or {}
    template = chat_template_of(source.path)
    reference = release.facts.get("reference_validation") or {"status": "skipped", "checks": []}
    compression = release.facts["compression"]
    weight_compression = facts.get("weight_compression", {})
    return {
        "repo_id": repo_id,
        "model_name": source.model_name,
        "backend": release.backend,
        "target": entry["target"],
        "precision": precision,
        "quantized": PRECISIONS[precision].quantized,
        "source": source_context(source, endpoint),
        # One entry for the whole release, in the shape the memory partial reads.
        "files": [{"name": "all files of this release", "type": precision,
                   "size_bytes": entry["size_bytes"], "hardware": hardware}],  # fmt: skip
        "release_files": [{"name": name, "size_bytes": facts.get("file_sizes", {}).get(name, 0)} for name in sorted(entry["files"])],
        "size_bytes": entry["size_bytes"],
        "bits_per_weight": entry["bits_per_weight"],
        "weight_formats": facts.get("weight_formats", {}),
        "weight_compression": weight_compression,
        "ir_versions": facts.get("ir_versions", {}),
        "group_size_fallbacks": facts.get("group_size_fallbacks", []),
        "compression": compression,
        "calibration": release.facts.get("calibration"),
        "data_free": release.facts.get("data_free"),
        "unquantized_precision": release.facts.get("unquantized_precision", "fp16"),
        "long_context": release.facts.get("long_context"),
        "validation": {
            "status": "forced" if facts.get("forced") else validation["status"],
            "checks": validation["checks"],
            "kl_mean": validation.get("kl_mean"),
            "kl_max": validation.get("kl_max"),
            "top1_agreement": validation.get("top1_agreement"),
            "max_abs_diff": validation.get("max_abs_diff"),
        },
        "reference_validation": {
            "status": reference.get("status", "skipped"),
            "checks": reference.get("checks", []),
            "max_abs_diff": reference.get("max_abs_diff"),
            "top1_agreement": reference.get("top1_agreement"),
            "prompts": reference.get("prompts", 0),
            "greedy_match": reference.get("greedy_match"),
        },
        "runtime_config": dict(VALIDATION_RUNTIME_CONFIG),
        "devices": [
            {"name": device.name, "hardware": device.hardware, "precisions": device.precisions,
             "source": device.source, "url": device.url}
            for device in DEVICES
        ],  # fmt: skip
        "npu_fit": _npu_fit(precision, weight_compression),
        "chat_template": template,
        "prompt_example": render_prompt_example(template, source.path),
        "eos_tokens": [{"id": token, "text": _token_text(source.path, token)} for token in sorted(set(config_eos_ids(source)))],
        "license_files": license_files,
        "provenance": {
            "hubquant_version": __version__,
            "date": date,
            "tool_versions": release.facts.get("tool_versions", {}),
            "command": command,
            "export_command": "optimum-cli export openvino --model SOURCE "
            + " ".join(compression["export_arguments"]) + " OUTPUT",
        },
        "memory_guidance": memory_guidance(hardware),
        "source_card": card,
    }
