"""Target hardware: which backends and precisions suit each kind of device.

This module is the one place that maps hardware to hubquant targets. A target
is written ``BACKEND:PRECISION`` (``gguf:Q4_K_M``, ``onnx:dml-int4``,
``openvino:int8``, ``mlx:4bit``). Each entry lists its targets in order of
preference and names the vendor or tool documentation it rests on, so a reader
can check an entry against its source.

Precision follows memory: 4-bit for phones and boards, with 8-bit and 16-bit
types offered where the machine usually has the memory for them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hubquant.errors import UsageError

BACKENDS = ("gguf", "onnx", "openvino", "mlx")

# Fraction added to a file's size to cover the KV cache at a few thousand
# tokens of context plus runtime buffers.
# NOTE: 20% is an estimate, not a measurement, and long contexts need more.
DEFAULT_HEADROOM = 0.20


@dataclass(frozen=True)
class Source:
    """Vendor or tool documentation that an entry rests on."""

    title: str
    url: str


@dataclass(frozen=True)
class MemoryGuidance:
    """How much memory the hardware usually has and how much a file needs."""

    typical_memory: str
    memory_pool: str
    headroom: float = DEFAULT_HEADROOM
    note: str = ""

    @property
    def rule(self) -> str:
        """The sizing rule as one sentence, such as "file size + 20% must fit in free RAM"."""
        return f"file size + {round(self.headroom * 100)}% must fit in {self.memory_pool}"


@dataclass(frozen=True)
class Hardware:
    """A kind of device that hubquant builds releases for."""

    key: str
    name: str
    description: str
    # Built by default for this hardware, most preferred first.
    targets: tuple[str, ...]
    # Also run well here, but are not built by default (larger or smaller types).
    also_runs: tuple[str, ...]
    memory: MemoryGuidance
    sources: tuple[Source, ...]


@dataclass(frozen=True)
class GgufTypeHint:
    """Hardware keys a GGUF type suits and a one-line note on its quality."""

    hardware: list[str]
    quality: str


# Sources, each opened when the table was written.
LLAMA_CPP_BACKENDS = Source(
    "llama.cpp README, Supported backends",
    "https://github.com/ggml-org/llama.cpp#supported-backends",
)
LLAMA_CPP_OPENCL = Source(
    "llama.cpp docs/backend/OPENCL.md (Adreno GPUs, Q4_0 optimised, Snapdragon X Elite verified)",
    "https://github.com/ggml-org/llama.cpp/blob/master/docs/backend/OPENCL.md",
)
LLAMA_CPP_REPACK = Source(
    "llama.cpp pull request 10446: Q4_0 is repacked at load time for ARM and AVX2 CPU kernels",
    "https://github.com/ggml-org/llama.cpp/pull/10446",
)
LLAMA_CPP_QUANTIZE = Source(
    "llama.cpp tools/quantize/README.md, bits per weight of each type",
    "https://github.com/ggml-org/llama.cpp/blob/master/tools/quantize/README.md",
)
ORT_GENAI_BUILDER = Source(
    "ONNX Runtime GenAI model builder README (precision and execution provider options)",
    "https://github.com/microsoft/onnxruntime-genai/blob/main/src/python/py/models/README.md",
)
ORT_DIRECTML = Source(
    "ONNX Runtime DirectML Execution Provider (DirectX 12 GPUs on Windows)",
    "https://onnxruntime.ai/docs/execution-providers/DirectML-ExecutionProvider.html",
)
MODELOPT_ORT = Source(
    "NVIDIA Model Optimizer, ONNX Runtime deployment (DirectML runs INT4 but not 8-bit models)",
    "https://nvidia.github.io/Model-Optimizer/deployment/2_onnxruntime.html",
)
ORT_WEBGPU = Source(
    "ONNX Runtime WebGPU Execution Provider",
    "https://onnxruntime.ai/docs/execution-providers/WebGPU-ExecutionProvider.html",
)
OPENVINO_NPU = Source(
    "OpenVINO GenAI on NPU (symmetric INT4 preferred, memory note for Core Ultra Series 2)",
    "https://docs.openvino.ai/2025/openvino-workflow-generative/inference-with-genai/"
    "inference-with-genai-on-npu.html",
)
MLX_LM = Source(
    "MLX LM README (Apple silicon, 4-bit quantization, wired memory limit)",
    "https://github.com/ml-explore/mlx-lm/blob/main/README.md",
)

# NOTE: the typical memory sizes are estimates for devices sold in 2024-2025,
# not figures from the sources above.
HARDWARE: dict[str, Hardware] = {
    hardware.key: hardware
    for hardware in (
        Hardware(
            key="phone",
            name="Phones and tablets",
            description=(
                "Android and iOS devices with a 64-bit ARM CPU and a mobile GPU"
                " (Adreno, Mali or Apple). llama.cpp runs Q4_0 fastest there: the"
                " ARM CPU kernels repack it at load time, and the OpenCL backend"
                " for Adreno GPUs is optimised for it."
            ),
            targets=("gguf:Q4_0", "gguf:Q4_K_M", "gguf:IQ4_XS", "onnx:int4"),
            also_runs=("gguf:Q3_K_M", "gguf:Q2_K", "gguf:IQ3_M", "gguf:IQ2_M"),
            memory=MemoryGuidance(
                typical_memory="4-16 GB of RAM, shared with the OS and other apps",
                memory_pool="the RAM the OS leaves to one app",
                note="Mobile operating systems stop apps that use much of the RAM,"
                " so leave room for the OS.",
            ),
            sources=(LLAMA_CPP_REPACK, LLAMA_CPP_OPENCL, ORT_GENAI_BUILDER),
        ),
        Hardware(
            key="iot",
            name="Raspberry Pi-class boards",
            description=(
                "Single-board computers with a 64-bit ARM CPU and no GPU that"
                " llama.cpp can use, such as the Raspberry Pi 4 and 5. Inference"
                " runs on the CPU, where Q4_0 is repacked for the ARM kernels."
            ),
            targets=("gguf:Q4_0", "gguf:Q4_K_M", "gguf:IQ4_XS", "onnx:int4"),
            also_runs=("gguf:Q3_K_M", "gguf:Q2_K", "gguf:IQ3_M", "gguf:IQ2_M"),
            memory=MemoryGuidance(
                typical_memory="2-16 GB of RAM",
                memory_pool="free RAM",
                note="Swap on an SD card is too slow for inference, so the file must fit in RAM.",
            ),
            sources=(LLAMA_CPP_REPACK, LLAMA_CPP_BACKENDS, ORT_GENAI_BUILDER),
        ),
        Hardware(
            key="apple-silicon",
            name="Macs with Apple silicon",
            description=(
                "M-series Macs, whose CPU and GPU share unified memory. llama.cpp"
                " runs on the GPU through Metal, and MLX is Apple's own framework"
                " for these chips."
            ),
            targets=("mlx:4bit", "gguf:Q4_K_M", "mlx:8bit", "gguf:Q8_0"),
            also_runs=("gguf:Q5_K_M", "gguf:Q6_K", "gguf:IQ4_XS", "gguf:F16", "mlx:bf16"),
            memory=MemoryGuidance(
                typical_memory="8-128 GB of unified memory",
                memory_pool="free unified memory",
                note="macOS lets the GPU wire only part of unified memory. The MLX LM"
                " README describes raising the limit with sysctl iogpu.wired_limit_mb.",
            ),
            sources=(LLAMA_CPP_BACKENDS, MLX_LM),
        ),
        Hardware(
            key="intel-ai-pc",
            name="Intel Core Ultra AI PCs",
            description=(
                "Laptops and desktops with an Intel Core Ultra processor, which has"
                " a CPU, an Arc integrated GPU and an NPU. OpenVINO runs on all"
                " three, and its NPU path prefers symmetric INT4 weights."
            ),
            targets=(
                "openvino:int4",
                "gguf:Q4_K_M",
                "onnx:int4",
                "openvino:int8",
                "openvino:fp16",
                "gguf:Q8_0",
            ),
            also_runs=("gguf:Q5_K_M", "gguf:Q6_K", "gguf:F16", "onnx:int8", "onnx:fp32"),
            memory=MemoryGuidance(
                typical_memory="16-32 GB of RAM, shared by CPU, GPU and NPU",
                memory_pool="free RAM",
                note="OpenVINO notes that Core Ultra Series 2 systems may need more than"
                " 16 GB for prompts over 1024 tokens with models above 7B parameters.",
            ),
            sources=(OPENVINO_NPU, LLAMA_CPP_BACKENDS, ORT_GENAI_BUILDER),
        ),
        Hardware(
            key="snapdragon-pc",
            name="Snapdragon X PCs",
            description=(
                "Windows on Arm laptops with a Qualcomm Snapdragon X processor"
                " (Oryon CPU, Adreno X GPU). llama.cpp's OpenCL backend is verified"
                " on Snapdragon X Elite and optimised for Q4_0, and DirectML runs"
                " ONNX models on the Adreno GPU."
            ),
            targets=("gguf:Q4_0", "onnx:int4", "onnx:dml-int4", "gguf:Q4_K_M", "gguf:Q8_0"),
            also_runs=("gguf:IQ4_XS", "gguf:F16", "onnx:fp32"),
            memory=MemoryGuidance(
                typical_memory="16-64 GB of RAM, shared by CPU and GPU",
                memory_pool="free RAM",
            ),
            sources=(LLAMA_CPP_OPENCL, LLAMA_CPP_REPACK, ORT_DIRECTML, ORT_GENAI_BUILDER),
        ),
        Hardware(
            key="nvidia-gpu",
            name="NVIDIA GPUs",
            description=(
                "GeForce RTX, workstation and data-centre GPUs with CUDA, on Linux"
                " or Windows. llama.cpp and ONNX Runtime both have CUDA backends."
            ),
            targets=("gguf:Q4_K_M", "onnx:cuda-int4", "gguf:Q8_0", "onnx:cuda-fp16", "gguf:F16"),
            also_runs=("gguf:Q5_K_M", "gguf:Q6_K", "gguf:IQ4_XS"),
            memory=MemoryGuidance(
                typical_memory="8-32 GB of VRAM on consumer cards, more on data-centre cards",
                memory_pool="free VRAM",
                note="llama.cpp can keep layers that do not fit in VRAM on the CPU"
                " (option --n-gpu-layers), at lower speed.",
            ),
            sources=(LLAMA_CPP_BACKENDS, ORT_GENAI_BUILDER),
        ),
        Hardware(
            key="windows-gpu",
            name="Windows PCs with a DirectX 12 GPU",
            description=(
                "Any DirectX 12 GPU on Windows (AMD, Intel, NVIDIA or Qualcomm)"
                " through DirectML. DirectML runs INT4 ONNX models but not 8-bit"
                " ones. llama.cpp reaches the same GPUs through Vulkan."
            ),
            targets=("onnx:dml-int4", "gguf:Q4_K_M", "onnx:dml-fp16"),
            also_runs=("gguf:Q8_0", "gguf:IQ4_XS"),
            memory=MemoryGuidance(
                typical_memory="4-16 GB of VRAM, or shared RAM on integrated GPUs",
                memory_pool="free VRAM (free RAM for an integrated GPU)",
            ),
            sources=(ORT_DIRECTML, MODELOPT_ORT, LLAMA_CPP_BACKENDS, ORT_GENAI_BUILDER),
        ),
        Hardware(
            key="browser",
            name="Web browsers with WebGPU",
            description=(
                "Browsers that expose WebGPU, running ONNX Runtime Web with the"
                " WebGPU execution provider on the machine's GPU."
            ),
            targets=("onnx:webgpu-int4",),
            also_runs=(),
            memory=MemoryGuidance(
                typical_memory="set by the browser and the GPU, usually well below system RAM",
                memory_pool="the GPU memory the browser grants one page",
                note="The whole file is downloaded into the page, so small models work best.",
            ),
            sources=(ORT_WEBGPU, ORT_GENAI_BUILDER),
        ),
        Hardware(
            key="any-cpu",
            name="Any 64-bit CPU",
            description=(
                "x86-64 or ARM64 computers without a supported accelerator. llama.cpp"
                " and ONNX Runtime both run on the CPU alone."
            ),
            targets=("gguf:Q4_K_M", "gguf:Q8_0", "onnx:int4", "gguf:Q4_0"),
            also_runs=(
                "gguf:Q5_K_M",
                "gguf:Q6_K",
                "gguf:IQ4_XS",
                "gguf:Q3_K_M",
                "gguf:Q2_K",
                "gguf:IQ3_M",
                "gguf:IQ2_M",
                "gguf:F16",
                "onnx:int8",
                "onnx:fp32",
            ),
            memory=MemoryGuidance(typical_memory="8-64 GB of RAM", memory_pool="free RAM"),
            sources=(LLAMA_CPP_BACKENDS, LLAMA_CPP_REPACK, ORT_GENAI_BUILDER),
        ),
    )
}

# One-line quality notes per GGUF type. The ranking by quality and the bits per
# weight follow llama.cpp's tools/quantize: the README's table for Llama-3.1-8B
# and the perplexity increases that quantize.cpp lists for Llama-3-8B. The
# recommendations are hubquant's.
GGUF_QUALITY = {
    "F32": "full 32-bit precision and the largest file, for reference and requantizing",
    "F16": "16-bit, practically lossless, twice the size of Q8_0",
    "BF16": "16-bit bfloat, practically lossless, twice the size of Q8_0",
    "Q8_0": "near-lossless at about 8.5 bits per weight, for machines with memory to spare",
    "Q6_K": "very close to the original, about 6.6 bits per weight",
    "Q5_K_M": "high quality, about 5.7 bits per weight",
    "Q5_K_S": "high quality, slightly smaller than Q5_K_M",
    "Q5_1": "legacy 5-bit type, superseded by Q5_K_M",
    "Q5_0": "legacy 5-bit type, superseded by Q5_K_S",
    "Q4_K_M": "good balance, recommended for phones and laptops",
    "Q4_K_S": "slightly smaller than Q4_K_M with a little more loss",
    "Q4_1": "legacy 4-bit type, superseded by Q4_K_M",
    "Q4_0": "legacy 4-bit type, fastest on ARM CPUs and Adreno GPUs but a little below Q4_K_M",
    "IQ4_NL": "4.5-bit non-linear type, close to Q4_K_S",
    "IQ4_XS": "4.25-bit non-linear type, close to Q4_K_S in a smaller file",
    "Q3_K_L": "small and clearly lower in quality, for devices where 4-bit does not fit",
    "Q3_K_M": "small and clearly lower in quality, for devices where 4-bit does not fit",
    "Q3_K_S": "small, lower quality than Q3_K_M",
    "Q2_K": "smallest, noticeably lower quality",
    "Q2_K_S": "smaller than Q2_K, needs an importance matrix",
    "IQ3_M": "3.66-bit type built with an importance matrix, smaller than Q3_K_M",
    "IQ3_S": "3.44-bit type built with an importance matrix",
    "IQ3_XS": "3.3-bit type built with an importance matrix",
    "IQ3_XXS": "3.06-bit type built with an importance matrix, smaller than Q3_K_S",
    "IQ2_M": "2.7-bit type built with an importance matrix, clearly lower quality",
    "IQ2_S": "2.5-bit type built with an importance matrix, clearly lower quality",
    "IQ2_XS": "2.31-bit type built with an importance matrix, low quality",
    "IQ2_XXS": "2.06-bit type built with an importance matrix, low quality",
    "IQ1_M": "1.75-bit type built with an importance matrix, for experiments and very large models only",
    "IQ1_S": "1.56-bit type built with an importance matrix, for experiments and very large models only",
}

UNKNOWN_GGUF_QUALITY = "no quality note for this type, so compare the validation numbers below"


def get_hardware(key: str) -> Hardware:
    """Return the table entry for `key`, raising UsageError for an unknown key."""
    try:
        return HARDWARE[key]
    except KeyError:
        known = ", ".join(HARDWARE)
        raise UsageError(
            f"unknown target hardware {key!r}; known hardware: {known}"
        ) from None


def parse_target(target: str) -> tuple[str, str]:
    """Split ``BACKEND:PRECISION`` into its parts, normalising the precision's case.

    GGUF types are upper case (``Q4_K_M``), the other backends' precisions lower
    case (``int4``). Raise UsageError for a malformed target or unknown backend.
    """
    backend, separator, precision = target.strip().partition(":")
    backend = backend.strip().lower()
    precision = precision.strip()
    if not separator or not backend or not precision:
        raise UsageError(
            f"invalid target {target!r}; write BACKEND:PRECISION, such as gguf:Q4_K_M"
        )
    if backend not in BACKENDS:
        raise UsageError(
            f"unknown backend {backend!r} in target {target!r};"
            f" known backends: {', '.join(BACKENDS)}"
        )
    return backend, _normalise_precision(backend, precision)


def targets_for(keys: Iterable[str], backends: Iterable[str] | None = None) -> list[str]:
    """Return the preferred targets of the given hardware, without duplicates.

    Targets keep the order of `keys`, then each entry's order of preference.
    With `backends`, only targets of those backends are kept (for example the
    backends whose toolchains are installed).
    """
    allowed = None if backends is None else {backend.lower() for backend in backends}
    result: list[str] = []
    for key in keys:
        for target in get_hardware(key).targets:
            backend, _ = parse_target(target)
            if allowed is not None and backend not in allowed:
                continue
            if target not in result:
                result.append(target)
    return result


def hardware_for_target(backend: str, precision: str) -> list[str]:
    """Return the keys of the hardware a target suits, in table order.

    A target suits hardware when it is among the entry's preferred targets or
    among the types that also run there.
    """
    requested = parse_target(f"{backend}:{precision}")
    keys = []
    for hardware in HARDWARE.values():
        listed = [parse_target(target) for target in (*hardware.targets, *hardware.also_runs)]
        if requested in listed:
            keys.append(hardware.key)
    return keys


def gguf_type_hint(gguf_type: str) -> GgufTypeHint:
    """Return the hardware a GGUF type suits and a one-line quality note.

    Types without a note (new llama.cpp types, IQ2/IQ3) get a generic note
    instead of an error, so a card can still be written for them.
    """
    normalised = gguf_type.strip().upper()
    return GgufTypeHint(
        hardware=hardware_for_target("gguf", normalised),
        quality=GGUF_QUALITY.get(normalised, UNKNOWN_GGUF_QUALITY),
    )


def memory_guidance(keys: Iterable[str]) -> list[dict]:
    """Return the memory guidance of the given hardware in the card context's shape."""
    guidance = []
    for key in keys:
        hardware = get_hardware(key)
        guidance.append(
            {
                "key": hardware.key,
                "name": hardware.name,
                "typical_memory": hardware.memory.typical_memory,
                "rule": hardware.memory.rule,
                "headroom": hardware.memory.headroom,
                "note": hardware.memory.note,
            }
        )
    return guidance


def required_bytes(file_size: int, headroom: float) -> int:
    """Return the free memory a file of `file_size` bytes needs with `headroom` added."""
    return round(file_size * (1 + headroom))


def _normalise_precision(backend: str, precision: str) -> str:
    return precision.upper() if backend == "gguf" else precision.lower()
