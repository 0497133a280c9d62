"""llama.cpp GGUF backend: convert once, quantize to every requested type, validate.

The conversion keeps the source precision (a BF16 source gives a BF16 intermediate)
so nothing is silently downcast; every other type is quantized from it.
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
from hubquant.targets import Target
from hubquant.validation import ValidationReport

log = logging.getLogger(__name__)

F16_MAX = 65504.0


@dataclass(frozen=True)
class GgufType:
    """A GGUF file type: nominal bits per weight (llama.cpp's quantize help) and limits."""

    name: str
    nominal_bpw: float
    kl_mean_limit: float
    top1_min: float


# Nominal sizes are those llama-quantize prints for a 7B Llama in the pinned release.
# The KL and top-1 limits are pass/fail bounds for the comparison with the
# unquantized conversion. They were set at about three times the KL (and well
# below the top-1 agreement) measured on the tiny random Phi-3 model of the test
# suite, whose untrained layers amplify quantization noise far more than a
# trained model's: they catch broken files (inf, NaN, corrupted tensors), they do
# not grade quality. Measured values for every type are in docs/benchmarks.md.
GGUF_TYPES = {
    t.name: t
    for t in [
        GgufType("F32", 32.0, 1e-3, 0.98),
        GgufType("BF16", 16.0, 5e-3, 0.95),
        GgufType("F16", 16.0, 5e-3, 0.95),
        GgufType("Q8_0", 8.5, 0.03, 0.70),
        GgufType("Q6_K", 6.56, 0.15, 0.55),
        GgufType("Q5_K_M", 5.7, 0.4, 0.45),
        GgufType("Q5_K_S", 5.54, 0.4, 0.45),
        GgufType("Q5_0", 5.5, 0.4, 0.45),
        GgufType("Q4_K_M", 4.89, 1.0, 0.35),
        GgufType("Q4_K_S", 4.58, 1.0, 0.35),
        GgufType("Q4_0", 4.5, 1.5, 0.25),
        GgufType("IQ4_XS", 4.25, 1.5, 0.30),
        GgufType("IQ4_NL", 4.5, 1.5, 0.25),
        GgufType("Q3_K_L", 4.27, 2.5, 0.15),
        GgufType("Q3_K_M", 3.91, 2.5, 0.15),
        GgufType("Q3_K_S", 3.5, 2.5, 0.15),
        GgufType("Q2_K", 3.0, 8.0, 0.02),
        # Types that the quantizer runs only with an importance matrix. Nominal
        # sizes from llama-quantize's type list (Q2_K_S: 2.96 GB for an 8B Llama).
        # Their top-1 agreement on the tiny random models is near zero (0.9% for
        # IQ2_XS), so only the KL limit, at two to three times the measured mean,
        # bounds them.
        GgufType("IQ3_M", 3.66, 3.0, 0.0),
        GgufType("IQ3_S", 3.44, 4.0, 0.0),
        GgufType("IQ3_XS", 3.3, 4.0, 0.0),
        GgufType("IQ3_XXS", 3.06, 5.0, 0.0),
        GgufType("Q2_K_S", 2.95, 10.0, 0.0),
        GgufType("IQ2_M", 2.7, 6.0, 0.0),
        GgufType("IQ2_S", 2.5, 6.0, 0.0),
        GgufType("IQ2_XS", 2.31, 10.0, 0.0),
        GgufType("IQ2_XXS", 2.06, 10.0, 0.0),
        GgufType("IQ1_M", 1.75, 12.0, 0.0),
        GgufType("IQ1_S", 1.56, 12.0, 0.0),
    ]
}
UNQUANTIZED = ("F32", "F16", "BF16")
# Types whose quantizer refuses to run without an importance matrix.
IMATRIX_TYPES = (
    "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS",
    "IQ3_S", "IQ3_M", "Q2_K_S",
)  # fmt: skip
# Tensor types that --target options may give the output and token-embedding tensors.
TENSOR_TYPES = (
    "F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K", "Q5_0", "Q5_1", "Q4_K", "Q4_0", "Q4_1",
    "Q3_K", "Q2_K", "IQ4_NL", "IQ4_XS",
)  # fmt: skip


@dataclass(frozen=True)
class GgufVariant:
    """A GGUF target: a file type, whether an importance matrix is used, and tensor-type overrides."""

    type: str
    imatrix: bool = False
    output_type: str | None = None
    embedding_type: str | None = None

    @property
    def precision(self) -> str:
        """The canonical target text after ``gguf:``, for example ``Q4_K_M:imatrix,output=Q8_0``."""
        options = []
        if self.imatrix and self.type not in IMATRIX_TYPES:
            options.append("imatrix")
        if self.output_type:
            options.append(f"output={self.output_type}")
        if self.embedding_type:
            options.append(f"embeddings={self.embedding_type}")
        return f"{self.type}:{','.join(options)}" if options else self.type

    @property
    def file_label(self) -> str:
        """The part of the file name after the model name: ``Q4_K_M-imatrix-output-Q8_0``."""
        parts = [self.type]
        if self.imatrix and self.type not in IMATRIX_TYPES:
            parts.append("imatrix")
        if self.output_type:
            parts.append(f"output-{self.output_type}")
        if self.embedding_type:
            parts.append(f"embeddings-{self.embedding_type}")
        return "-".join(parts)

    @property
    def plain(self) -> bool:
        return not (self.imatrix or self.output_type or self.embedding_type)


def parse_variant(precision: str) -> GgufVariant:
    """Parse ``TYPE[:OPTION,...]``; options are ``imatrix``, ``output=TYPE`` and ``embeddings=TYPE``."""
    name, _, option_text = precision.strip().partition(":")
    type_name = name.strip().upper()
    if type_name not in GGUF_TYPES:
        known = ", ".join(GGUF_TYPES)
        raise UsageError(f"unknown GGUF type {name!r}; known types: {known}")
    imatrix = type_name in IMATRIX_TYPES
    overrides: dict[str, str] = {}
    for option in filter(None, (part.strip() for part in option_text.split(","))):
        key, equals, value = option.partition("=")
        key = key.strip().lower()
        if key == "imatrix" and not equals:
            if type_name in UNQUANTIZED:
                raise UsageError(f"gguf:{precision}: an importance matrix has no effect on the unquantized type {type_name}")
            imatrix = True
        elif key in ("output", "embeddings") and equals:
            tensor_type = value.strip().upper()
            if tensor_type not in TENSOR_TYPES:
                raise UsageError(
                    f"gguf:{precision}: unknown tensor type {value!r} for {key}; use one of {', '.join(TENSOR_TYPES)}"
                )
            overrides[key] = tensor_type
        else:
            raise UsageError(
                f"gguf:{precision}: unknown option {option!r}; use imatrix, output=TYPE or embeddings=TYPE "
                "(for example gguf:Q4_K_M:imatrix,output=Q8_0)"
            )
    return GgufVariant(type_name, imatrix, overrides.get("output"), overrides.get("embeddings"))

# Architectures whose llama.cpp conversion the test suite validates against
# transformers.
# NOTE: Llama, Mistral and Qwen2 are listed because llama.cpp supports them;
# only the Phi family is exercised by the tests.
ARCHITECTURES = frozenset(
    {"Phi3ForCausalLM", "PhiForCausalLM", "LlamaForCausalLM", "MistralForCausalLM",
     "Qwen2ForCausalLM"}
)  # fmt: skip

# Architectures llama.cpp converts and runs, but whose GGUF computes another
# function than the source. PhiMoE: llama.cpp b11312 builds its experts with
# Phi-3's graph and a softmax over the router logits, renormalised over the top
# two (src/models/phi3.cpp, build_moe_ffn with norm_w), while transformers
# weighs them with sparsemixer (modeling_phimoe.py), whose weights do not sum to
# one. On the tiny Phi-tiny-MoE model the F32 conversion measured a max logit
# difference of 14.7 and 13% top-1 agreement with transformers.
DIVERGING_ARCHITECTURES = {
    "PhiMoEForCausalLM": (
        "llama.cpp b11312 routes PhiMoE's experts with a renormalised softmax over the top two, "
        "while the source uses sparsemixer, so a GGUF would not compute what the source computes "
        "(measured on a tiny PhiMoE: max logit difference 14.7, top-1 agreement 13%)"
    ),
}

SOURCE_DTYPE_TO_GGUF = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}

# Max |logit difference| between the unquantized conversion and transformers in
# float32, by intermediate type, for logits with a std of about 4. The BF16
# conversion of the tiny Phi-3 test model measured 0.12 (llama.cpp rounds the
# activations to bf16 for bf16 weights); F32 and F16 measured under 0.02.
SOURCE_LOGIT_LIMITS = {"F32": 0.05, "F16": 0.1, "BF16": 0.4}
SOURCE_TOP1_MIN = 0.95


class GgufBackend:
    name = "gguf"
    toolchain = "gguf"
    library_name = "gguf"
    # Where the source model could not run for lack of memory, the conversion
    # still runs memory-mapped on the tokenized prompts, and quantized files are
    # measured against it.
    checks_without_source_run = True

    def normalize_precision(self, precision: str) -> str:
        return parse_variant(precision).precision

    def supported_architectures(self) -> frozenset[str]:
        return ARCHITECTURES

    def rejection_reason(self, architecture: str, target: Target) -> str | None:
        reason = DIVERGING_ARCHITECTURES.get(architecture)
        if reason is None:
            return None
        return (
            f"{target}: {reason}; choose openvino: or mlx: targets for {architecture}, "
            f"or a source with one of {', '.join(sorted(ARCHITECTURES))}"
        )

    def repo_name(self, model_name: str) -> str:
        return f"{model_name}-GGUF"

    def release_name(self, model_name: str, target: Target) -> str:
        return self.repo_name(model_name)

    def file_name(self, model_name: str, precision: str) -> str:
        return f"{model_name}-{parse_variant(precision).file_label}.gguf"

    def shared_file_names(self, model_name: str, targets: list[Target]) -> list[str]:
        """Return the files a release of these targets holds beside theirs: the importance matrix."""
        if any(parse_variant(target.precision).imatrix for target in targets):
            return [f"{model_name}.imatrix.gguf"]
        return []

    def estimate_bytes(self, parameters: int, target: Target) -> int:
        return int(parameters * GGUF_TYPES[parse_variant(target.precision).type].nominal_bpw / 8)

    def build_memory(self, parameters: int, target: Target) -> tuple[int, str]:
        # The converter loads tensors lazily, the quantizer one tensor at a time,
        # and llama.cpp memory-maps the files it runs.
        return 0, "llama.cpp works memory-mapped"

    # --- build ---------------------------------------------------------------

    def build(self, context: BuildContext, release: Release) -> None:
        source = context.source
        toolchain = toolchains.ensure(self.toolchain)
        release.facts["tool_versions"] = {
            "llama.cpp": f"b{toolchain.info['llama_cpp']['build_number']}",
            "llama-cpp-python": toolchain.info["llama_cpp"]["llama_cpp_python"],
            "transformers": toolchain.versions.get("transformers", "unknown"),
            "torch": toolchain.versions.get("torch", "unknown"),
        }
        release.facts["llama_cpp"] = toolchain.info["llama_cpp"]
        work = context.work_dir / "gguf"
        work.mkdir(parents=True, exist_ok=True)

        intermediate_type = SOURCE_DTYPE_TO_GGUF.get(source.dtype, "F32")
        release.facts["intermediate_type"] = intermediate_type
        model_name = source.model_name
        for target in release.targets:
            context.reporter.step(self._key(release, target), CONVERTING)
        try:
            intermediate = self._convert(context, toolchain, work, intermediate_type)
        except (ToolchainError, SourceError) as error:
            for target in release.targets:
                self._fail(context, release, target, str(error))
            return

        if context.validate:
            source_report = self.validate_unquantized(context, toolchain, intermediate, work)
        else:
            source_report = ValidationReport.turned_off()
        release.facts["reference_validation"] = source_report.to_dict()
        if not source_report.passed and not context.force:
            reason = f"the unquantized conversion failed validation: {source_report.summary()}"
            for target in release.targets:
                self._fail(context, release, target, reason)
            return

        ordered = list(release.targets)
        imatrix = None
        needing = [target for target in ordered if parse_variant(target.precision).imatrix]
        if needing:
            from hubquant.backends import gguf_imatrix

            for target in needing:
                context.reporter.step(self._key(release, target), CALIBRATING)
            try:
                imatrix = gguf_imatrix.compute(
                    context, toolchain, intermediate, work, model_name, on_event=_progress_forwarder(context)
                )
            except (ToolchainError, SourceError, UsageError) as error:
                for target in needing:
                    self._fail(context, release, target, f"importance matrix: {error}")
                ordered = [target for target in ordered if target not in needing]
            else:
                release.facts["imatrix"] = imatrix["facts"]

        # The intermediate's own type is produced last, by moving the file, so the
        # disk never holds a second copy of it.
        ordered.sort(key=lambda t: t.precision == intermediate["type"])
        for target in ordered:
            self._build_target(context, toolchain, release, target, intermediate, work, model_name, imatrix)
        intermediate["path"].unlink(missing_ok=True)
        if imatrix is not None:
            if any(artifact.facts.get("imatrix") for artifact in release.artifacts):
                release.shared_files.append(imatrix["path"])
            else:
                imatrix["path"].unlink(missing_ok=True)

    def _key(self, release: Release, target: Target) -> str:
        return f"{release.repo_name} {target}"

    def _fail(self, context: BuildContext, release: Release, target: Target, reason: str) -> None:
        release.failed[str(target)] = reason
        context.reporter.step(self._key(release, target), FAILED, reason)

    def _convert(self, context, toolchain, work: Path, outtype: str) -> dict:
        source = context.source
        out_file = work / f"{source.model_name}-{outtype}.intermediate.gguf"
        converted = toolchains.run_step(
            toolchain,
            "gguf",
            {
                "op": "convert",
                "source_dir": str(self._converter_input(source, work)),
                "out_file": str(out_file),
                "outtype": outtype,
                "model_name": gguf_model_name(source.path, source.model_name, source.architecture),
            },
            on_event=_progress_forwarder(context, f"convert to {outtype}"),
        ).data
        overrides = self._eog_overrides(converted["metadata"], context)
        patched = work / f"{source.model_name}-{outtype}.gguf"
        if overrides:
            # Rewrite the metadata in one copy pass; tensors are copied unchanged.
            toolchains.run_step(
                toolchain,
                "gguf",
                {
                    "op": "quantize",
                    "input": str(out_file),
                    "output": str(patched),
                    "type": outtype,
                    "only_copy": True,
                    "kv_overrides": overrides,
                },
            )
            out_file.unlink()
        else:
            out_file.rename(patched)
        description = toolchains.run_step(
            toolchain, "gguf", {"op": "inspect", "file": str(patched)}
        ).data
        return {"path": patched, "type": outtype, "overrides": overrides, **description}

    def _converter_input(self, source, work: Path) -> Path:
        """Return the folder the converter reads, with config.json gaps filled.

        llama.cpp's Phi-3 and PhiMoE converters require
        ``original_max_position_embeddings``, which configs without rope scaling
        (such as Phi-tiny-MoE's) omit; without scaling it equals
        ``max_position_embeddings``. The source folder itself is never changed.
        """
        import json

        config = dict(source.config)
        scaling = config.get("rope_scaling") or {}
        if "original_max_position_embeddings" in config or scaling.get("long_factor"):
            return source.path
        if source.architecture not in ("Phi3ForCausalLM", "PhiMoEForCausalLM"):
            return source.path
        config["original_max_position_embeddings"] = config.get("max_position_embeddings", 4096)
        shadow = work / "converter-input"
        shutil.rmtree(shadow, ignore_errors=True)
        shadow.mkdir(parents=True)
        for entry in source.path.iterdir():
            if entry.name != "config.json":
                (shadow / entry.name).symlink_to(entry.resolve())
        (shadow / "config.json").write_text(json.dumps(config, indent=2))
        return shadow

    def _eog_overrides(self, metadata: dict, context: BuildContext) -> dict:
        """Map source EOS ids that llama.cpp would not stop on to its EOT/EOM keys.

        llama.cpp ends generation on its EOS, EOT and EOM ids and on tokens whose
        text it recognises (``<|end|>``, ``<|endoftext|>``, ...). Phi-3's
        generation_config also lists ``<|assistant|>`` (32001), which none of those
        cover, so a GGUF would run past it without this.
        """
        from hubquant.cards_context import config_eos_ids

        eos_ids = sorted(set(config_eos_ids(context.source)))
        declared = {
            metadata.get("tokenizer.ggml.eos_token_id"),
            metadata.get("tokenizer.ggml.eot_token_id"),
            metadata.get("tokenizer.ggml.eom_token_id"),
        }
        free_keys = [
            key
            for key in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")
            if metadata.get(key) is None
        ]
        overrides = {}
        for token in eos_ids:
            if token in declared or token in self._eog_by_text(context, token):
                continue
            if not free_keys:
                break
            overrides[free_keys.pop(0)] = token
        return overrides

    def _eog_by_text(self, context: BuildContext, token: int) -> set[int]:
        # Token texts llama.cpp's vocab loader treats as end of generation.
        texts = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"}
        vocab = _token_texts(context.source.path)
        return {token} if vocab.get(token) in texts else set()

    def _evaluate(self, toolchain, file: Path, context: BuildContext, out_dir: Path, against: dict[str, str] | None):
        reference = context.reference
        assert reference is not None
        prompts = [
            {
                "id": prompt.id,
                "text": prompt.text,
                "input_ids": prompt.input_ids,
                "reference_logits": (against or {}).get(prompt.id, prompt.logits_path) if against is not None else prompt.logits_path,
                "continuation": prompt.continuation,
            }
            for prompt in reference.prompts
        ]
        return toolchains.run_step(
            toolchain,
            "gguf",
            {
                "op": "evaluate",
                "file": str(file),
                "prompts": prompts,
                "eos_ids": reference.eos_ids,
                "max_new_tokens": reference.max_new_tokens,
                "out_dir": str(out_dir),
                "threads": context.threads,
            },
        ).data

    def validate_unquantized(self, context, toolchain, intermediate: dict, work: Path) -> ValidationReport:
        """Check the unquantized conversion against the source run in transformers."""
        from hubquant.backends.gguf_checks import check_metadata, check_runtime_against_source

        report = ValidationReport()
        if context.reference is None:
            report.skip("logits against transformers", "the transformers reference run was skipped for lack of memory; the file was checked with a memory-mapped llama.cpp run only")
            check_metadata(report, intermediate, context)
            return report
        try:
            evaluation = self._evaluate(toolchain, intermediate["path"], context, work / "eval-intermediate", None)
        except ToolchainError as error:
            report.add("loads and runs in llama.cpp", False, str(error))
            check_metadata(report, intermediate, context)
            return report
        intermediate["logits"] = {p["id"]: p["logits_path"] for p in evaluation["prompts"]}
        check_metadata(report, intermediate, context, evaluation=evaluation)
        if not context.reference.model_ran:
            report.skip(
                "logits against transformers",
                "the source did not run in transformers for lack of memory; the conversion ran memory-mapped "
                "in llama.cpp on the same tokenized prompts, and quantized files are measured against it",
            )
            return report
        check_runtime_against_source(
            report, evaluation, context.reference, SOURCE_LOGIT_LIMITS[intermediate["type"]], SOURCE_TOP1_MIN
        )
        return report

    def validate_quantized(self, context, toolchain, described: dict, variant: GgufVariant, intermediate_logits: dict[str, str], work: Path) -> ValidationReport:
        """Check a quantized file against the unquantized conversion's logits."""
        from hubquant.backends.gguf_checks import check_metadata, check_quantized, check_stops

        report = ValidationReport()
        limits = GGUF_TYPES[variant.type]
        try:
            if context.reference is None:
                report.skip("runtime comparison", "the transformers reference run was skipped for lack of memory; the file was checked with a memory-mapped llama.cpp run only")
                check_metadata(report, described, context)
            else:
                evaluation = self._evaluate(toolchain, described["path"], context, work / f"eval-{variant.file_label}", intermediate_logits)
                check_metadata(report, described, context, evaluation=evaluation)
                check_quantized(report, evaluation, limits.kl_mean_limit, limits.top1_min)
            check_stops(report, toolchain, described["path"], context)
        except ToolchainError as error:
            report.add("loads and runs in llama.cpp", False, str(error))
        return report

    def validate_copy_of_intermediate(self, context, toolchain, described: dict, release: Release) -> ValidationReport:
        """The intermediate's own type is the validated conversion itself."""
        from hubquant.backends.gguf_checks import check_metadata, check_stops

        report = ValidationReport()
        reference_validation = release.facts["reference_validation"]
        report.metrics.update({k: v for k, v in reference_validation.items() if k not in ("checks", "status")})
        check_metadata(report, described, context)
        report.add("same file as the validated conversion", reference_validation["status"] == "passed", "this is the unquantized conversion checked against transformers")
        try:
            check_stops(report, toolchain, described["path"], context)
        except ToolchainError as error:
            report.add("loads and runs in llama.cpp", False, str(error))
        return report

    def _build_target(self, context, toolchain, release: Release, target: Target, intermediate: dict, work: Path, model_name: str, imatrix: dict | None = None) -> None:
        key = self._key(release, target)
        variant = parse_variant(target.precision)
        type_name = variant.type
        out_path = work / self.file_name(model_name, target.precision)
        try:
            if target.precision == intermediate["type"]:
                shutil.move(intermediate["path"], out_path)
                description = {k: intermediate[k] for k in ("tensor_types", "tensor_bytes", "parameters", "bits_per_weight", "metadata", "tensors")}
                description["fallbacks"] = []
            else:
                if type_name == "F16":
                    self._check_f16_range(toolchain, intermediate)
                context.reporter.step(key, QUANTIZING)
                description = self._quantize(context, toolchain, intermediate, out_path, variant, imatrix)
        except (ToolchainError, SourceError) as error:
            self._fail(context, release, target, str(error))
            return

        context.reporter.step(key, VALIDATING)
        described = {**description, "path": out_path}
        if not context.validate:
            report = ValidationReport.turned_off()
        elif target.precision == intermediate["type"]:
            report = self.validate_copy_of_intermediate(context, toolchain, described, release)
        else:
            report = self.validate_quantized(context, toolchain, described, variant, intermediate.get("logits", {}), work)
            check_variant_layout(report, described, variant, imatrix["facts"] if imatrix else None)

        if not report.passed and not context.force:
            out_path.unlink(missing_ok=True)
            self._fail(context, release, target, f"validation failed: {report.summary()}")
            return

        data_free = None
        if variant.imatrix and variant.type not in IMATRIX_TYPES and context.validate and context.reference is not None:
            try:
                data_free = self._data_free_comparison(context, toolchain, intermediate, variant, work)
            except ToolchainError as error:
                log.warning("the data-free comparison for %s failed: %s", target, error)

        files = [out_path]
        if out_path.stat().st_size > context.max_file_bytes:
            try:
                parts = toolchains.run_step(
                    toolchain,
                    "gguf",
                    {"op": "split", "file": str(out_path), "max_bytes": context.max_file_bytes},
                ).data["parts"]
            except ToolchainError as error:
                out_path.unlink(missing_ok=True)
                self._fail(context, release, target, str(error))
                return
            files = [Path(part) for part in parts]
        artifact = Artifact(
            target=target,
            files=files,
            size_bytes=sum(path.stat().st_size for path in files),
            bits_per_weight=description["bits_per_weight"],
            validation=report,
            facts={
                "tensor_types": description["tensor_types"],
                "fallbacks": description.get("fallbacks", []),
                "split": len(files) > 1,
                "forced": not report.passed,
                "output_type": variant.output_type,
                "embedding_type": variant.embedding_type,
                "imatrix": imatrix["facts"] if variant.imatrix and imatrix else None,
                "data_free": data_free,
            },
        )
        release.artifacts.append(artifact)
        if context.on_artifact is not None:
            context.on_artifact(release, artifact)
        context.reporter.step(key, DONE, "" if report.passed else "published despite failed checks (--force)")

    def _quantize(self, context, toolchain, intermediate: dict, out_path: Path, variant: GgufVariant, imatrix: dict | None) -> dict:
        request = {
            "op": "quantize",
            "input": str(intermediate["path"]),
            "output": str(out_path),
            "type": variant.type,
            "threads": context.threads,
            "kv_overrides": intermediate["overrides"],
            "output_tensor_type": variant.output_type,
            "token_embedding_type": variant.embedding_type,
        }
        if variant.imatrix:
            assert imatrix is not None, "importance-matrix variants are built only after the matrix"
            request["imatrix"] = str(imatrix["path"])
        return toolchains.run_step(
            toolchain, "gguf", request, on_event=_progress_forwarder(context, f"quantize {variant.file_label}")
        ).data

    def _data_free_comparison(self, context, toolchain, intermediate: dict, variant: GgufVariant, work: Path) -> dict:
        """Quantize the same type without the matrix and measure it the same way, for the card."""
        plain = GgufVariant(variant.type, False, variant.output_type, variant.embedding_type)
        path = work / f"data-free-{plain.file_label}.gguf"
        try:
            described = self._quantize(context, toolchain, intermediate, path, plain, None)
            evaluation = self._evaluate(toolchain, path, context, work / f"eval-data-free-{plain.file_label}", intermediate.get("logits", {}))
        finally:
            path.unlink(missing_ok=True)
        from hubquant.comparison import summarize

        return summarize(f"gguf:{plain.precision}", described["bits_per_weight"], [prompt["comparison"] for prompt in evaluation["prompts"]])

    def _check_f16_range(self, toolchain, intermediate: dict) -> None:
        if intermediate["type"] == "F16":
            return
        peak = intermediate.get("max_abs_weight")
        if peak is None:
            peak = toolchains.run_step(
                toolchain, "gguf", {"op": "max_abs", "file": str(intermediate["path"])}
            ).data["max_abs"]
            intermediate["max_abs_weight"] = peak
        if peak > F16_MAX:
            raise SourceError(
                f"the source has weights up to {peak:.6g}, beyond the F16 range "
                f"({F16_MAX:g}), which would become inf; choose BF16 or F32 instead of F16"
            )

    def card_context(self, **facts) -> dict:
        from hubquant.cards_context import card_context

        return card_context(**facts)

    def render_card(self, release: Release, context: dict) -> str:
        from hubquant.cards import card_metadata, render_card

        context = dict(context)
        source_card = context.pop("source_card")
        extra_tags = [item["type"].lower() for item in context["files"]]
        for item in context["files"]:
            extra_tags += [key for key in item["hardware"] if key not in extra_tags]
        source = context["source"]
        context["metadata"] = card_metadata(
            source_card,
            base_model=source["id"] or source["declared_base_model"],
            library_name=self.library_name,
            backend_tags=["gguf", "llama.cpp", "quantized"],
            extra_tags=extra_tags,
        )
        return render_card("gguf.md.j2", context)


def gguf_model_name(folder: Path, model_name: str, architecture: str) -> str:
    """Return the ``general.name`` to write, keeping Phi-3 chat tokenization right.

    llama.cpp (b11312, llama-vocab.cpp) gives special tokens the right-strip
    attribute that Phi-3's tokenizer.json declares only when ``general.name``
    contains "phi3" or "phi-3". A Phi-3 fine-tune under another name would
    tokenize chat prompts differently from transformers, so such a name gets a
    "(Phi-3)" suffix.
    """
    lowered = model_name.lower()
    if architecture != "Phi3ForCausalLM" or "phi3" in lowered or "phi-3" in lowered:
        return model_name
    import json

    tokenizer_file = folder / "tokenizer.json"
    if not (folder / "tokenizer.model").is_file() or not tokenizer_file.is_file():
        return model_name
    added = json.loads(tokenizer_file.read_text()).get("added_tokens", [])
    if any(token.get("special") and token.get("rstrip") for token in added):
        return f"{model_name} (Phi-3)"
    return model_name


def _progress_forwarder(context: BuildContext, label: str | None = None):
    """Pass a worker's progress events to the job's reporter, under ``label`` if given."""

    def forward(event: dict) -> None:
        if event.get("event") == "progress":
            context.reporter.progress(label or event.get("step", ""), event.get("done", 0), event.get("total"))

    return forward


def _token_texts(folder: Path) -> dict[int, str]:
    import json

    texts: dict[int, str] = {}
    for name in ("added_tokens.json",):
        path = folder / name
        if path.is_file():
            for text, token in json.loads(path.read_text()).items():
                texts[int(token)] = text
    config = folder / "tokenizer_config.json"
    if config.is_file():
        for token, entry in json.loads(config.read_text()).get("added_tokens_decoder", {}).items():
            texts[int(token)] = entry.get("content", "")
    return texts


def check_variant_layout(report: ValidationReport, described: dict, variant: GgufVariant, imatrix: dict | None) -> None:
    """Check that the file records its importance matrix and has the requested tensor types."""
    metadata = described["metadata"]
    if variant.imatrix and imatrix is not None:
        recorded = (metadata.get("quantize.imatrix.file"), metadata.get("quantize.imatrix.chunks_count"))
        expected = (imatrix["file"], imatrix["chunks"])
        report.add(
            "importance matrix recorded",
            recorded == expected,
            f"quantize.imatrix.* names {expected[0]} over {expected[1]} chunks" if recorded == expected
            else f"quantize.imatrix.file and chunks_count are {recorded}, expected {expected}",
        )  # fmt: skip
    types = {tensor["name"]: tensor["type"] for tensor in described["tensors"]}
    for option, name in ((variant.output_type, "output.weight"), (variant.embedding_type, "token_embd.weight")):
        if option is None or name not in types:
            continue
        report.add(f"{name} type", types[name] == option, f"{name} is {types[name]} (requested {option})")
