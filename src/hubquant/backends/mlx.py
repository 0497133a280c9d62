"""MLX backend: MLX weights for mlx-lm and MLX Swift, one Hub repo per target.

Each target is converted from the source by mlx-lm in its own toolchain. An
unquantized target is validated against the transformers reference. A
quantized one is compared with the source run in mlx-lm in float32, and that
run is checked against transformers first. mlx-lm's own upload path calls
``HfApi.upload_large_folder``, which huggingface_hub 2.4.0 no longer has, so
the folder is published by hubquant's publisher.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import logging
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from hubquant import toolchains
from hubquant.backends.base import Artifact, BuildContext, Release
from hubquant.errors import SourceError, ToolchainError, UsageError
from hubquant.progress import CALIBRATING, CONVERTING, DONE, FAILED, QUANTIZING, VALIDATING
from hubquant.source import CONFIG_FILES, TOKENIZER_FILES, LocalSource, read_safetensors_header
from hubquant.targets import Target
from hubquant.validation import ValidationReport

log = logging.getLogger(__name__)

# Architectures whose mlx-lm 0.32.2 conversion the test suite validates
# against transformers (max |logit difference| under 1e-4 in float32 on the
# tiny models): Phi-3, Phi-3.5, Phi-4 and Phi-4-mini (phi3), phi-2 (phi) and
# Phi-tiny-MoE (phimoe). mlx-lm implements many more model types, but hubquant
# has checked only these.
ARCHITECTURES = frozenset({"Phi3ForCausalLM", "PhiForCausalLM", "PhiMoEForCausalLM"})

# Architectures whose unquantized experts MLX's CPU build (mlx-cpu 0.32.4)
# multiplies only in float32: a bf16 or fp16 PhiMoE fails there with
# "[GatherMM::eval] Currently only supports float32". Quantized experts run.
# NOTE: the Metal and CUDA builds were not tried.
CPU_FLOAT32_EXPERTS = frozenset({"PhiMoEForCausalLM"})

# RoPE types each mlx-lm 0.32.2 model file implements. phi3 prints a warning
# and falls back to plain RoPE for any other type, phi reads no rope_scaling
# at all, and phimoe indexes short_mscale and long_mscale unconditionally.
ROPE_TYPES = {
    "Phi3ForCausalLM": ("default", "linear", "su", "longrope"),
    "PhiForCausalLM": ("default",),
    "PhiMoEForCausalLM": ("default", "su", "longrope"),
}
# Keys mlx-lm's phi, phi3 and phimoe read at the top level of config.json,
# which transformers 5 saves inside rope_parameters instead.
HOISTED_ROPE_KEYS = ("rope_theta", "partial_rotary_factor", "original_max_position_embeddings")

BITS = (2, 3, 4, 5, 6, 8)
# Group sizes mlx.core.quantize accepts for affine quantization (mlx 0.32.4);
# mlx-lm's default is 64.
AFFINE_GROUP_SIZES = (32, 64, 128)
DEFAULT_GROUP_SIZE = 64
# mlx-lm 0.32.2's mixed recipes (mlx_lm.convert.QUANT_RECIPES): low and high bits.
RECIPES = {"mixed_2_6": (2, 6), "mixed_3_4": (3, 4), "mixed_3_6": (3, 6), "mixed_4_6": (4, 6)}
# Floating-point modes: bits and the one group size each allows.
FLOAT_MODES = {"mxfp4": (4, 32), "nvfp4": (4, 16), "mxfp8": (8, 32)}
UNQUANTIZED = {"bf16": "bfloat16", "fp16": "float16"}
ALIASES = {"bfloat16": "bf16", "float16": "fp16", "f16": "fp16"}

_PRECISION = re.compile(r"^(?P<base>[a-z0-9_-]+?)(?:-g(?P<group>\d+))?(?:-(?P<method>gptq|awq|dwq))?$")
# Data-aware methods of mlx_lm.quant that hubquant runs, fed with the job's calibration text.
# mlx-lm 0.32's AWQ has configurations for llama-, qwen-, gemma- and deepseek-style
# models only (mlx_lm.quant.awq.AWQ_MODEL_CONFIGS), none for the Phi family. DWQ
# trains the quantized model against the original, which is impractical on MLX's
# CPU build. Both are rejected with that reason.
DATA_AWARE_METHODS = ("gptq",)
_BITS = re.compile(r"^(?P<bits>\d)bit$")
_RECIPE = re.compile(r"^mixed[_-](?P<low>\d)[_-](?P<high>\d)$")

SAFETENSORS_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}
STOP_PROMPT = "Hello"


@dataclass(frozen=True)
class MlxFormat:
    """A parsed MLX precision: an unquantized dtype, or a quantization's settings."""

    name: str  # normalised precision, used in targets and repo names
    dtype: str | None = None  # unquantized targets: "bfloat16" or "float16"
    mode: str | None = None  # "affine", "mxfp4", "nvfp4" or "mxfp8"
    bits: int | None = None  # the low bits for a mixed recipe
    group_size: int | None = None
    recipe: str | None = None
    method: str | None = None  # a data-aware method such as "gptq", or None for round-to-nearest

    @property
    def quantized(self) -> bool:
        return self.mode is not None

    def quantization(self) -> dict | None:
        """Return the settings the worker's convert step takes, or None."""
        if not self.quantized:
            return None
        return {"mode": self.mode, "bits": self.bits, "group_size": self.group_size, "recipe": self.recipe,
                "method": self.method}  # fmt: skip

    def data_free(self) -> MlxFormat:
        """Return the same format quantized without calibration data."""
        return MlxFormat(self.name.removesuffix(f"-{self.method}"), self.dtype, self.mode, self.bits, self.group_size, self.recipe)

    @property
    def nominal_bits_per_weight(self) -> float:
        """Estimate bits per weight before conversion, for the disk check.

        Affine groups store a scale and a bias (16 bits each) per group, the
        floating-point modes an 8-bit scale. A mixed recipe is counted at its
        high bits for about a quarter of the weights.
        """
        if not self.quantized:
            return 16.0
        assert self.bits is not None and self.group_size is not None
        overhead = (32 if self.mode == "affine" else 8) / self.group_size
        bits = float(self.bits)
        if self.recipe is not None:
            low, high = RECIPES[self.recipe]
            bits = 0.75 * low + 0.25 * high
        return bits + overhead


def parse_precision(text: str) -> MlxFormat:
    """Parse an MLX precision such as ``4bit``, ``4bit-g32``, ``mixed_3_6``, ``mxfp4`` or ``bf16``.

    The name is normalised: lower case, the default group size left out, so
    ``4bit-g64`` and ``4bit`` are one target and one repo. Raise UsageError
    for an unknown precision or a group size the mode does not allow.
    """
    lowered = text.strip().lower()
    lowered = ALIASES.get(lowered, lowered)
    match = _PRECISION.match(lowered)
    if match is None:
        raise UsageError(f"unknown MLX precision {text!r}; {_known_precisions()}")
    base, group, method = match.group("base"), match.group("group"), match.group("method")
    base = ALIASES.get(base, base)
    group_size = int(group) if group is not None else None
    if method is not None:
        return _data_aware_format(text, f"{base}-g{group}" if group else base, method)

    if base in UNQUANTIZED:
        if group_size is not None:
            raise UsageError(f"MLX precision {text!r}: {base} is not quantized, so it takes no group size")
        return MlxFormat(base, dtype=UNQUANTIZED[base])
    if base in FLOAT_MODES:
        bits, own_group = FLOAT_MODES[base]
        if group_size not in (None, own_group):
            raise UsageError(
                f"MLX precision {text!r}: {base} uses group size {own_group} only; write mlx:{base}"
            )
        return MlxFormat(base, mode=base, bits=bits, group_size=own_group)

    if group_size is not None and group_size not in AFFINE_GROUP_SIZES:
        sizes = ", ".join(str(size) for size in AFFINE_GROUP_SIZES)
        raise UsageError(f"MLX precision {text!r}: group size {group_size} is not one of {sizes}")
    group_size = group_size or DEFAULT_GROUP_SIZE
    suffix = "" if group_size == DEFAULT_GROUP_SIZE else f"-g{group_size}"

    bits_match = _BITS.match(base)
    if bits_match is not None and int(bits_match.group("bits")) in BITS:
        bits = int(bits_match.group("bits"))
        return MlxFormat(f"{bits}bit{suffix}", mode="affine", bits=bits, group_size=group_size)
    recipe_match = _RECIPE.match(base)
    if recipe_match is not None:
        recipe = f"mixed_{recipe_match.group('low')}_{recipe_match.group('high')}"
        if recipe in RECIPES:
            low, _ = RECIPES[recipe]
            return MlxFormat(f"{recipe}{suffix}", mode="affine", bits=low, group_size=group_size, recipe=recipe)
    raise UsageError(f"unknown MLX precision {text!r}; {_known_precisions()}")


def _data_aware_format(text: str, base: str, method: str) -> MlxFormat:
    if method == "awq":
        raise UsageError(
            f"MLX precision {text!r}: mlx-lm 0.32's AWQ has no configuration for the Phi family; use -gptq"
        )
    if method == "dwq":
        raise UsageError(
            f"MLX precision {text!r}: DWQ trains the quantized model against the original, which MLX's "
            "CPU build is too slow for; use -gptq"
        )
    plain = parse_precision(base)
    if plain.mode != "affine" or plain.recipe is not None:
        raise UsageError(f"MLX precision {text!r}: {method} applies to the affine Nbit formats only, such as 4bit-{method}")
    return MlxFormat(f"{plain.name}-{method}", mode="affine", bits=plain.bits, group_size=plain.group_size, method=method)


def _known_precisions() -> str:
    bits = ", ".join(f"{bits}bit" for bits in BITS)
    return (
        f"known precisions: {bits}, {', '.join(RECIPES)} (add -g32 or -g128 for another group "
        f"size than {DEFAULT_GROUP_SIZE}, and -gptq to calibrate an Nbit format), "
        f"{', '.join(FLOAT_MODES)}, {', '.join(UNQUANTIZED)}"
    )


# --- the config handed to mlx-lm -------------------------------------------------


@dataclass
class MlxInput:
    """The folder mlx-lm converts: the source's files with a normalised config.json."""

    path: Path
    config: dict
    # The changes normalisation made, for the card.
    rope: dict


def rope_type_of(scaling: dict | None) -> str:
    if not isinstance(scaling, dict):
        return "default"
    return str(scaling.get("type") or scaling.get("rope_type") or "default")


def normalise_config(config: dict, architecture: str) -> tuple[dict, dict]:
    """Return the config.json to hand to mlx-lm and what was changed in it.

    mlx-lm 0.32.2's phi, phi3 and phimoe read ``rope_theta``,
    ``partial_rotary_factor`` and ``rope_scaling`` only at the top level of
    config.json, while transformers 5 saves them inside ``rope_parameters``.
    Without them mlx-lm silently uses its defaults (theta 10000, no scaling,
    phi3's full rotary width), so these keys are copied to the top level, and
    ``rope_parameters``, which transformers reads first, wins over an older
    top-level value.

    mlx-lm 0.32.2's SuScaledRoPE applies the LongRoPE long factors at every
    position, while the source (and transformers) uses the short factors up to
    ``original_max_position_embeddings`` tokens and the long ones only beyond.
    On the tiny Phi-4-mini model that alone moved the logits by up to 6.4. The
    long factors are replaced by the short ones, so the MLX model matches the
    source up to that length, and the card states the limit.

    Raise SourceError for a RoPE type the architecture's mlx-lm model does
    not implement.
    """
    config = copy.deepcopy(config)
    facts: dict = {"hoisted": [], "type": "default", "context_limit": None}
    nested = config.get("rope_parameters")
    if isinstance(nested, dict) and not any(isinstance(value, dict) for value in nested.values()):
        for key in HOISTED_ROPE_KEYS:
            if key in nested and config.get(key) != nested[key]:
                config[key] = nested[key]
                facts["hoisted"].append(key)
        if rope_type_of(nested) == "default":
            config["rope_scaling"] = None
        else:
            scaling = {key: value for key, value in nested.items() if key not in HOISTED_ROPE_KEYS}
            scaling["type"] = rope_type_of(nested)
            if config.get("rope_scaling") != scaling:
                facts["hoisted"].append("rope_scaling")
            config["rope_scaling"] = scaling

    scaling = config.get("rope_scaling")
    rope_type = rope_type_of(scaling)
    facts["type"] = rope_type
    supported = ROPE_TYPES.get(architecture, ("default",))
    if rope_type not in supported:
        raise SourceError(
            f"the source uses RoPE type {rope_type!r}, which mlx-lm 0.32.2 does not implement for "
            f"{architecture} (it implements {', '.join(supported)}); choose another backend"
        )
    if rope_type == "linear":
        scaling["factor"] = float(scaling["factor"])
    if rope_type in ("su", "longrope"):
        if architecture == "PhiMoEForCausalLM" and not {"short_mscale", "long_mscale"} <= set(scaling):
            raise SourceError(
                "the source's LongRoPE settings lack short_mscale and long_mscale, which "
                "mlx-lm 0.32.2's phimoe model requires; choose another backend"
            )
        if list(scaling["long_factor"]) != list(scaling["short_factor"]):
            _use_short_factors(scaling)
            if isinstance(nested, dict) and "long_factor" in nested:
                _use_short_factors(nested)
            facts["context_limit"] = int(config.get("original_max_position_embeddings") or 4096)
    return config, facts


def _use_short_factors(scaling: dict) -> None:
    scaling["long_factor"] = list(scaling["short_factor"])
    if "short_mscale" in scaling:
        scaling["long_mscale"] = scaling["short_mscale"]


def prepare_input(source: LocalSource, folder: Path) -> MlxInput:
    """Build the folder mlx-lm reads: links to the source files and a normalised config.

    Only config, tokenizer and safetensors files are linked, because
    ``mlx_lm.utils.save`` copies every ``*.py`` file of its input into the
    output. The source folder itself is never changed.
    """
    weights = sorted(path.name for path in source.path.glob("model*.safetensors"))
    if not weights:
        raise SourceError(
            f"{source.path.name} has no model*.safetensors files, the only weights mlx-lm reads; "
            "use a source with safetensors weights"
        )
    config, rope = normalise_config(source.config, source.architecture)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    patterns = [*CONFIG_FILES, *TOKENIZER_FILES, "model*.safetensors", "model.safetensors.index.json"]
    for entry in sorted(source.path.iterdir()):
        if entry.is_file() and entry.name != "config.json" and _matches(entry.name, patterns):
            (folder / entry.name).symlink_to(entry.resolve())
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return MlxInput(folder, config, rope)


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def source_eos_ids(folder: Path) -> list[int]:
    """Collect every EOS id config.json and generation_config.json declare."""
    ids: set[int] = set()
    for name in CONFIG_FILES:
        path = folder / name
        if path.is_file():
            value = json.loads(path.read_text()).get("eos_token_id")
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list):
                ids.update(int(item) for item in value)
    return sorted(ids)


def quantized_float_dtype(source_dtype: str) -> str:
    """Return the dtype of a quantized release's unquantized tensors and scales.

    A 16-bit source keeps its dtype. A float32 source gets bfloat16, which has
    float32's range at half the size.
    """
    return source_dtype if source_dtype in ("bfloat16", "float16") else "bfloat16"


# --- the release folder ------------------------------------------------------------


def finalize_folder(folder: Path, source: LocalSource, eos_ids: list[int]) -> dict:
    """Make mlx-lm's output folder the published release, and describe its tensors.

    mlx-lm's placeholder README.md goes (the pipeline writes the card), the
    tokenizer files are the source's own, byte for byte, instead of
    transformers' re-save, and config.json and generation_config.json list
    every EOS id of the source. config.json's dtype keys are set to the dtype
    the safetensors headers show, because mlx-lm keeps the source's value.
    """
    (folder / "README.md").unlink(missing_ok=True)
    for entry in list(folder.iterdir()):
        if _matches(entry.name, TOKENIZER_FILES):
            entry.unlink()
    for entry in sorted(source.path.iterdir()):
        if entry.is_file() and _matches(entry.name, TOKENIZER_FILES):
            shutil.copyfile(entry, folder / entry.name)

    tensors = describe_tensors(folder)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    if eos_ids:
        config["eos_token_id"] = _merged_ids(config.get("eos_token_id"), eos_ids)
    for key in ("torch_dtype", "dtype"):
        if key in config and tensors["float_dtype"] is not None:
            config[key] = tensors["float_dtype"]
    config_file.write_text(json.dumps(config, indent=4, sort_keys=True))

    generation_file = folder / "generation_config.json"
    if generation_file.is_file() and eos_ids:
        generation = json.loads(generation_file.read_text())
        generation["eos_token_id"] = _merged_ids(generation.get("eos_token_id"), eos_ids)
        generation_file.write_text(json.dumps(generation, indent=2))
    return tensors


def _merged_ids(value, eos_ids: list[int]) -> int | list[int]:
    ids = set(eos_ids)
    if isinstance(value, int):
        ids.add(value)
    elif isinstance(value, list):
        ids.update(int(item) for item in value)
    merged = sorted(ids)
    return merged[0] if len(merged) == 1 else merged


def describe_tensors(folder: Path) -> dict:
    """Count tensor dtypes in the safetensors headers and name the float dtype stored."""
    dtypes: dict[str, int] = {}
    float_elements: dict[str, int] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        for entry in read_safetensors_header(shard).values():
            dtype = entry["dtype"]
            dtypes[dtype] = dtypes.get(dtype, 0) + 1
            if dtype in SAFETENSORS_DTYPES:
                count = 1
                for dim in entry["shape"]:
                    count *= dim
                float_elements[dtype] = float_elements.get(dtype, 0) + count
    stored = max(float_elements, key=float_elements.get) if float_elements else None
    return {"tensor_dtypes": dtypes, "float_dtype": SAFETENSORS_DTYPES.get(stored) if stored else None}


def summarise_layers(layers: dict, fmt: MlxFormat) -> dict:
    """Group quantized layers by their settings and list the layers that differ from the target.

    ``fallback_layers`` got a smaller group size than the target's, because
    the target's does not divide their input width. ``unquantized_layers``
    stayed in their float dtype, because no valid group size divides it.
    """
    settings: dict[tuple, list[str]] = {}
    for layer in layers["quantized"]:
        key = (layer["bits"], layer["group_size"], layer["mode"])
        settings.setdefault(key, []).append(layer["path"])
    majority = max(settings, key=lambda key: len(settings[key])) if settings else None
    layer_settings = [
        {
            "bits": bits,
            "group_size": group_size,
            "mode": mode,
            "count": len(paths),
            # Only the layers outside the most common setting are listed.
            "layers": [] if key == majority else paths,
        }
        for key, paths in sorted(settings.items())
        for bits, group_size, mode in [key]
    ]
    fallbacks = [
        {"path": layer["path"], "group_size": layer["group_size"]}
        for layer in layers["quantized"]
        if fmt.group_size is not None and layer["group_size"] != fmt.group_size
    ]
    return {
        "layer_settings": layer_settings,
        "fallback_layers": fallbacks,
        "unquantized_layers": layers["unquantized"] if fmt.quantized else [],
    }


# --- the backend ---------------------------------------------------------------------


class MlxBackend:
    name = "mlx"
    toolchain = "mlx"
    library_name = "mlx"
    # LongRoPE sources get a prompt past their original context, measured on the
    # source run in mlx-lm (see mlx_checks.check_long_prompt).
    checks_long_context = True

    def normalize_precision(self, precision: str) -> str:
        return parse_precision(precision).name

    def supported_architectures(self) -> frozenset[str]:
        return ARCHITECTURES

    def rejection_reason(self, architecture: str, target: Target) -> str | None:
        fmt = parse_precision(target.precision)
        if fmt.recipe and architecture == "PhiForCausalLM":
            return (
                f"{target}: mlx-lm 0.32.2's mixed recipes pick layers by names that {architecture} "
                "(phi-2) does not have; choose a single bit width such as mlx:4bit"
            )
        if not fmt.quantized and architecture in CPU_FLOAT32_EXPERTS and sys.platform != "darwin":
            return (
                f"{target}: MLX's CPU build, the one used on {sys.platform}, runs unquantized {architecture} "
                "experts only in float32 ([GatherMM::eval] supports float32 only), so this release cannot be "
                "validated here; build it on a Mac, or choose a quantized target such as mlx:4bit"
            )
        return None

    def release_name(self, model_name: str, target: Target) -> str:
        # The MLX community's naming, with the format named: a personal
        # namespace, unlike mlx-community, does not say it.
        return f"{model_name}-mlx-{target.precision}"

    def estimate_bytes(self, parameters: int, target: Target) -> int:
        return int(parameters * parse_precision(target.precision).nominal_bits_per_weight / 8)

    def build_memory(self, parameters: int, target: Target) -> tuple[int, str]:
        return parameters * 2, "mlx-lm loads the whole model in 16-bit to convert it"

    def build(self, context: BuildContext, release: Release) -> None:
        from hubquant.backends import mlx_checks

        toolchain = toolchains.ensure(self.toolchain)
        release.facts["tool_versions"] = {
            name: toolchain.versions.get(name, "unknown")
            for name in ("mlx-lm", "mlx", "transformers")
        }
        release.facts["validated_on"] = _validated_on(toolchain.versions)
        for target in release.targets:
            context.reporter.step(self._key(release, target), CONVERTING)
        try:
            mlx_input = prepare_input(context.source, context.work_dir / "mlx-input")
            source_run = mlx_checks.source_run(context, toolchain, mlx_input)
        except (SourceError, ToolchainError) as error:
            for target in release.targets:
                self._fail(context, release, target, str(error))
            return
        release.facts["reference_validation"] = source_run["report"]
        # The measures past the original context go to the card with the rope facts.
        mlx_input.rope["long_prompt"] = source_run.get("long_prompt")
        release.facts["rope"] = mlx_input.rope
        if source_run["report"]["status"] == "failed" and not context.force:
            summary = "; ".join(
                f"{check['name']}: {check['detail']}"
                for check in source_run["report"]["checks"]
                if check["status"] == "failed"
            )
            for target in release.targets:
                self._fail(context, release, target, f"the source run in mlx-lm failed validation: {summary}")
            return
        for target in release.targets:
            self._build_target(context, toolchain, release, target, mlx_input, source_run)

    def _key(self, release: Release, target: Target) -> str:
        return f"{release.repo_name} {target}"

    def _fail(self, context: BuildContext, release: Release, target: Target, reason: str) -> None:
        release.failed[str(target)] = reason
        context.reporter.step(self._key(release, target), FAILED, reason)

    def _build_target(self, context, toolchain, release: Release, target: Target, mlx_input: MlxInput, source_run: dict) -> None:
        from hubquant.backends import mlx_checks

        key = self._key(release, target)
        fmt = parse_precision(target.precision)
        out_dir = context.work_dir / f"release-{fmt.name}"
        shutil.rmtree(out_dir, ignore_errors=True)
        if not fmt.quantized and context.source.architecture in CPU_FLOAT32_EXPERTS and "mlx-cpu" in toolchain.versions:
            self._fail(
                context, release, target,
                f"MLX's CPU build (mlx-cpu {toolchain.versions['mlx-cpu']}) runs unquantized "
                f"{context.source.architecture} experts only in float32 ([GatherMM::eval] supports "
                f"float32 only), so an {target} release cannot be validated here; build it on a Mac, "
                "or choose a quantized target",
            )  # fmt: skip
            return
        eos_ids = source_eos_ids(context.source.path)
        dtype = fmt.dtype or quantized_float_dtype(context.source.dtype)
        request = {
            "op": "convert",
            "source_dir": str(mlx_input.path),
            "out_dir": str(out_dir),
            "dtype": dtype,
            "quantization": fmt.quantization(),
            "max_shard_bytes": context.max_file_bytes,
        }
        calibration = None
        if fmt.method:
            context.reporter.step(key, CALIBRATING)
            try:
                calibration = context.calibration()
            except UsageError as error:
                self._fail(context, release, target, f"calibration text: {error}")
                return
            request["calibration_text"] = calibration.text
            request["calibration_sequence_length"] = context.calibration_options.chunk_size
        if fmt.quantized:
            context.reporter.step(key, QUANTIZING)
        try:
            converted = toolchains.run_step(toolchain, "mlx", request, on_event=_progress_forwarder(context)).data
            tensors = finalize_folder(out_dir, context.source, eos_ids)
        except (ToolchainError, SourceError) as error:
            shutil.rmtree(out_dir, ignore_errors=True)
            self._fail(context, release, target, str(error))
            return

        context.reporter.step(key, VALIDATING)
        if context.validate:
            report, evaluation = mlx_checks.validate_release(
                context, toolchain, out_dir, fmt, mlx_input, converted, source_run, eos_ids
            )
        else:
            report, evaluation = ValidationReport.turned_off(), None
        if not report.passed and not context.force:
            shutil.rmtree(out_dir, ignore_errors=True)
            self._fail(context, release, target, f"validation failed: {report.summary()}")
            return

        data_free = None
        if calibration is not None and evaluation is not None:
            data_free = self._data_free_comparison(context, toolchain, fmt, dtype, mlx_input, source_run, eos_ids)
        files = sorted(path for path in out_dir.iterdir() if path.is_file())
        artifact = Artifact(
            target=target,
            files=files,
            size_bytes=sum(path.stat().st_size for path in files),
            bits_per_weight=(evaluation or converted)["bits_per_weight"],
            validation=report,
            facts={
                "format": fmt.quantization() or {"dtype": fmt.dtype},
                "float_dtype": tensors["float_dtype"],
                "tensor_dtypes": tensors["tensor_dtypes"],
                **summarise_layers(converted["layers"], fmt),
                "rope": mlx_input.rope,
                "file_sizes": {path.name: path.stat().st_size for path in files},
                "forced": not report.passed,
                "calibration": {**calibration.card_facts(), "method": fmt.method, "sequence_length": converted.get("calibration_sequence_length"),
                                "samples": converted.get("calibration_samples")} if calibration else None,
                "data_free": data_free,
            },
            root=out_dir,
        )
        release.artifacts.append(artifact)
        if context.on_artifact is not None:
            context.on_artifact(release, artifact)
        context.reporter.step(key, DONE, "" if report.passed else "published despite failed checks (--force)")

    def _data_free_comparison(self, context, toolchain, fmt: MlxFormat, dtype: str, mlx_input: MlxInput, source_run: dict, eos_ids: list[int]) -> dict | None:
        """Convert the same format without calibration data and validate it the same way, for the card."""
        from hubquant.backends import mlx_checks

        plain = fmt.data_free()
        out_dir = context.work_dir / f"data-free-{plain.name}"
        shutil.rmtree(out_dir, ignore_errors=True)
        try:
            converted = toolchains.run_step(toolchain, "mlx", {
                "op": "convert", "source_dir": str(mlx_input.path), "out_dir": str(out_dir),
                "dtype": dtype, "quantization": plain.quantization(),
            }).data  # fmt: skip
            finalize_folder(out_dir, context.source, eos_ids)
            report, _ = mlx_checks.validate_release(context, toolchain, out_dir, plain, mlx_input, converted, source_run, eos_ids)
        except (ToolchainError, SourceError) as error:
            log.warning("the data-free comparison for %s failed: %s", fmt.name, error)
            return None
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
        metrics = report.metrics
        return {
            "target": f"mlx:{plain.name}",
            "bits_per_weight": converted["bits_per_weight"],
            "kl_mean": metrics.get("kl_mean"),
            "kl_max": metrics.get("kl_max"),
            "top1_agreement": metrics.get("top1_agreement"),
        }

    def card_context(self, **facts) -> dict:
        return card_context(**facts)

    def render_card(self, release: Release, context: dict) -> str:
        return render(self.library_name, context)


def _progress_forwarder(context: BuildContext):
    def forward(event: dict) -> None:
        if event.get("event") == "progress":
            context.reporter.progress(event.get("step", ""), event.get("done", 0), event.get("total"))

    return forward


# --- the model card ------------------------------------------------------------------

MLX_INSTALL = "https://ml-explore.github.io/mlx/build/html/install.html"
MLX_SWIFT_LM = "https://github.com/ml-explore/mlx-swift-lm"
MLX_LM_README = "https://github.com/ml-explore/mlx-lm/blob/main/README.md"

# Platforms MLX runs on, with the install line its documentation gives and
# the hubquant.hardware entry whose memory rule applies. Sources: the MLX install
# page (macOS 14 on Apple silicon, mlx[cuda12] and mlx[cpu] on Linux with
# glibc 2.35 or newer) and the MLX Swift LM README (LLMs in Swift apps).
MLX_PLATFORMS = (
    {
        "name": "Macs with Apple silicon",
        "runtime": "mlx-lm on the GPU through Metal: pip install mlx-lm (macOS 14 or newer)",
        "memory_key": "apple-silicon",
        "url": MLX_INSTALL,
    },
    {
        "name": "iPhone and iPad",
        "runtime": "MLX Swift apps through the MLX Swift LM package, which loads this folder format",
        "memory_key": "phone",
        "url": MLX_SWIFT_LM,
    },
    {
        "name": "Linux, CPU",
        "runtime": 'MLX\'s CPU build: pip install "mlx[cpu]" mlx-lm (glibc 2.35 or newer)',
        "memory_key": "any-cpu",
        "url": MLX_INSTALL,
    },
    {
        "name": "Linux, NVIDIA GPU",
        "runtime": 'MLX\'s CUDA build: pip install "mlx[cuda12]" mlx-lm (compute capability 7.5 or newer)',
        "memory_key": "nvidia-gpu",
        "url": MLX_INSTALL,
    },
)


class MlxCardContext(TypedDict):
    """Context of `templates/mlx.md.j2`. Every key is required."""

    metadata: dict[str, Any]  # YAML header, from `hubquant.cards.card_metadata`
    repo_id: str
    model_name: str
    target: str  # such as "mlx:4bit"
    source: dict[str, Any]  # `hubquant.cards.SourceInfo`
    format: dict[str, Any]  # name, quantized, dtype, mode, bits, group_size, recipe, high_bits
    files: list[dict[str, Any]]  # name, size_bytes
    size_bytes: int
    bits_per_weight: float  # mlx-lm's compute_bits_per_weight on the loaded release
    float_dtype: str | None  # from the safetensors headers
    tensor_dtypes: dict[str, int]  # safetensors dtype -> number of tensors
    layer_settings: list[dict[str, Any]]  # bits, group_size, mode, count, layers
    fallback_layers: list[dict[str, Any]]  # path, group_size
    unquantized_layers: list[dict[str, Any]]  # path, width, dtype
    rope: dict[str, Any]  # hoisted (keys), type, context_limit
    validation: dict[str, Any]  # status, checks and the measured numbers
    reference_validation: dict[str, Any]  # the source run in mlx-lm against transformers
    platforms: list[dict[str, Any]]  # name, runtime, url, memory rule, needed bytes
    validated_on: str
    chat_template: str | None
    prompt_example: str | None
    eos_tokens: list[dict[str, Any]]  # id, text
    license_files: list[str]
    provenance: dict[str, Any]  # hubquant_version, date, tool_versions, options, command
    calibration: dict[str, Any] | None  # the text and method of a data-aware release
    data_free: dict[str, Any] | None  # the same format without calibration data, measured the same way


def _validation_entry(validation: dict, forced: bool, quantized: bool) -> dict:
    return {
        "status": "forced" if forced else validation["status"],
        "checks": validation["checks"],
        "baseline": "the source run in mlx-lm in float32" if quantized else "the source run in transformers in float32",
        "kl_mean": validation.get("kl_mean"),
        "kl_max": validation.get("kl_max"),
        "top1_agreement": validation.get("top1_agreement"),
        "max_abs_diff": validation.get("max_abs_diff"),
        "greedy_match": validation.get("greedy_match"),
        "prompts": validation.get("prompts", 0),
    }


def _validated_on(versions: dict) -> str:
    """Describe the machine and MLX build that validation runs on."""
    import platform

    if "mlx-metal" in versions:
        build = f"Metal build (mlx-metal {versions['mlx-metal']})"
    elif "mlx-cpu" in versions:
        build = f"CPU build (mlx-cpu {versions['mlx-cpu']})"
    else:
        build = f"mlx {versions.get('mlx', 'unknown')}"
    return f"{platform.system()} {platform.machine()}, MLX {build}"


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
    """Build the context of templates/mlx.md.j2 from the release's measured facts."""
    from hubquant import __version__, hardware
    from hubquant.cards_context import _token_text, render_prompt_example, source_context
    from hubquant.source import chat_template_of

    # A repo contains one target, so its manifest has one artifact.
    entry = artifacts[0]
    precision = entry["target"].split(":", 1)[1]
    fmt = parse_precision(precision)
    facts = entry["facts"]
    size = entry["size_bytes"]
    guidance = {item["key"]: item for item in hardware.memory_guidance([p["memory_key"] for p in MLX_PLATFORMS])}
    platforms = [
        {
            **platform,
            "rule": guidance[platform["memory_key"]]["rule"],
            "typical_memory": guidance[platform["memory_key"]]["typical_memory"],
            "needed_bytes": hardware.required_bytes(size, guidance[platform["memory_key"]]["headroom"]),
        }
        for platform in MLX_PLATFORMS
    ]
    template = chat_template_of(source.path)
    reference = release.facts.get("reference_validation") or {"status": "skipped", "checks": []}
    return {
        "repo_id": repo_id,
        "model_name": source.model_name,
        "target": entry["target"],
        "source": source_context(source, endpoint),
        "format": {
            "name": fmt.name,
            "quantized": fmt.quantized,
            "dtype": fmt.dtype,
            "mode": fmt.mode,
            "bits": fmt.bits,
            "group_size": fmt.group_size,
            "recipe": fmt.recipe,
            "high_bits": RECIPES[fmt.recipe][1] if fmt.recipe else None,
            "method": fmt.method,
        },
        "calibration": facts.get("calibration"),
        "data_free": facts.get("data_free"),
        "files": [
            {"name": name, "size_bytes": (facts.get("file_sizes") or {}).get(name)}
            for name in entry["files"]
        ],
        "size_bytes": size,
        "bits_per_weight": entry["bits_per_weight"],
        "float_dtype": facts.get("float_dtype"),
        "tensor_dtypes": facts.get("tensor_dtypes", {}),
        "layer_settings": facts.get("layer_settings", []),
        "fallback_layers": facts.get("fallback_layers", []),
        "unquantized_layers": facts.get("unquantized_layers", []),
        "rope": facts.get("rope") or {"hoisted": [], "type": "default", "context_limit": None},
        "validation": _validation_entry(entry["validation"], facts.get("forced", False), fmt.quantized),
        "reference_validation": {
            "status": reference.get("status", "skipped"),
            "checks": reference.get("checks", []),
            "max_abs_diff": reference.get("max_abs_diff"),
            "top1_agreement": reference.get("top1_agreement"),
            "prompts": reference.get("prompts", 0),
            "greedy_match": reference.get("greedy_match"),
        },
        "platforms": platforms,
        "validated_on": release.facts.get("validated_on", "a machine hubquant did not record"),
        "chat_template": template,
        "prompt_example": render_prompt_example(template, source.path),
        "eos_tokens": [{"id": token, "text": _token_text(source.path, token)} for token in source_eos_ids(source.path)],
        "license_files": license_files,
        "provenance": {
            "hubquant_version": __version__,
            "date": date,
            "tool_versions": release.facts.get("tool_versions", {}),
            "options": {"target": entry["target"], **(fmt.quantization() or {"dtype": fmt.dtype})},
            "command": command,
        },
        "source_card": source.card_data or {},
    }


def card_tags(fmt: MlxFormat) -> tuple[list[str], list[str]]:
    """Return the backend tags and the format tags of a release's card."""
    backend_tags = ["mlx", "mlx-lm"] + (["quantized"] if fmt.quantized else [])
    if not fmt.quantized:
        format_tags = [fmt.name]
    elif fmt.recipe:
        format_tags = [fmt.recipe]
    else:
        format_tags = [f"{fmt.bits}-bit"] + ([] if fmt.mode == "affine" else [str(fmt.mode)])
    return backend_tags, [*format_tags, "apple-silicon"]


def render(library_name: str, context: dict) -> str:
    """Render README.md for an MLX release, checking the context's keys first."""
    from hubquant.cards import card_metadata, render_card

    context = dict(context)
    source_card = context.pop("source_card")
    missing = sorted(key for key in MlxCardContext.__required_keys__ if key not in context and key != "metadata")
    if missing:
        raise KeyError(f"card context for mlx.md.j2 is missing keys: {', '.join(missing)}")
    backend_tags, format_tags = card_tags(parse_precision(context["format"]["name"]))
    source = context["source"]
    context["metadata"] = card_metadata(
        source_card,
        base_model=source["id"] or source["declared_base_model"],
        library_name=library_name,
        backend_tags=backend_tags,
        extra_tags=format_tags,
    )
    return render_card("mlx.md.j2", context)
