"""Constants and helpers shared by the Space tests and their fixtures."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx

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
# Gated (manual approval) under alice's organisation; bob is granted access.
GATED_SOURCE = "microsoft/phi3-gated-tiny"
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


def screenshot_until(page, name: str, selector: str) -> Path:
    """Save the top of the page down to the bottom of `selector` (the README's picture)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    box = page.locator(selector).bounding_box()
    scroll = page.evaluate("window.scrollY")
    height = box["y"] + scroll + box["height"] + 16
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True, clip={"x": 0, "y": 0, "width": page.viewport_size["width"], "height": height})
    return path


def wait_for_http(url: str, process: subprocess.Popen, log_path: Path, timeout: float = 120.0) -> None:
    """Wait until `url` returns 200; fail with the log tail if the process exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the Space exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the Space did not respond at {url} within {timeout:.0f} s:\n{log_path.read_text()[-4000:]}")
