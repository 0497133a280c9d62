"""Constants and helpers shared by the Space tests and their fixtures."""

from __future__ import annotations

import socket
from pathlib import Path

from hubquant.tinymodels.safetensors_io import read_safetensors_header, read_safetensors_tensor, write_safetensors

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "space"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
PRIVATE_SOURCE = "alice/phi3-private-tiny"
OVERFLOW_SOURCE = "alice/phi3-f16-overflow"
LARGE_SOURCE = "alice/phi3-large-tiny"
# Between the tiny sources (about 39 MB) and the large one (about 76 MB).
MAX_SOURCE_GB = "0.06"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def plant_f16_overflow(folder: Path) -> None:
    """Set one embedding weight of the last (unused) token to 1e5, past the F16 range.

    The validation prompts never look that row up, so the unquantized conversion
    still matches transformers, Q8_0 passes, and only F16 fails its range check.
    """
    path = folder / "model.safetensors"
    header = read_safetensors_header(path)
    tensors = {name: read_safetensors_tensor(path, name) for name in header if name != "__metadata__"}
    tensors["model.embed_tokens.weight"][-1, 0] = 1e5
    write_safetensors(path, tensors, "BF16", header.get("__metadata__"))


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
