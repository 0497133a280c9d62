"""Validation must fail on broken GGUF files, each for the right reason."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hubquant import toolchains
from hubquant.backends.base import BuildContext
from hubquant.backends.gguf import GgufBackend, parse_variant
from hubquant.progress import Reporter
from hubquant.reference import compute_reference
from hubquant.source import chat_template_of, inspect_folder
from hubquant.toolchains.runner import RUNTIME_DIR

TAMPER = Path(__file__).with_name("tamper_gguf.py")


@pytest.fixture(scope="module")
def converted(tiny_model, gguf_toolchain, tmp_path_factory):
    """A validated BF16 conversion of the 128k (longrope) model and its context."""
    folder = tiny_model("phi-3-mini-128k-instruct")
    work = tmp_path_factory.mktemp("catch")
    source = inspect_folder(folder)
    reference = compute_reference(folder, work / "reference", has_chat_template=chat_template_of(folder) is not None)
    context = BuildContext(source=source, reference=reference, work_dir=work, reporter=Reporter(), max_file_bytes=10**12)
    backend = GgufBackend()
    intermediate = backend._convert(context, gguf_toolchain, work, "BF16")
    return backend, context, intermediate, work


def _tampered(converted, gguf_toolchain, kind: str) -> dict:
    backend, context, intermediate, work = converted
    dest = work / f"{kind}.gguf"
    subprocess.run(
        [str(gguf_toolchain.python), str(TAMPER), kind, str(intermediate["path"]), str(dest)],
        check=True,
        env={"PYTHONPATH": str(RUNTIME_DIR)},
    )
    described = toolchains.run_step(gguf_toolchain, "gguf", {"op": "inspect", "file": str(dest)}).data
    return {**intermediate, **described, "path": dest}


def _failed_checks(converted, gguf_toolchain, candidate: dict) -> set[str]:
    backend, context, _, work = converted
    report = backend.validate_unquantized(context, gguf_toolchain, candidate, work / candidate["path"].stem)
    return {check.name for check in report.failures}


def test_intact_conversion_passes(converted, gguf_toolchain):
    assert _failed_checks(converted, gguf_toolchain, converted[2]) == set()


def test_swapped_rope_factors_fail(converted, gguf_toolchain):
    failed = _failed_checks(converted, gguf_toolchain, _tampered(converted, gguf_toolchain, "swap-rope"))
    assert "rope long factors" in failed
    assert "rope short factors" in failed


def test_missing_rope_factors_fail(converted, gguf_toolchain):
    failed = _failed_checks(converted, gguf_toolchain, _tampered(converted, gguf_toolchain, "drop-rope"))
    assert "rope long factors" in failed


def test_dropped_eos_id_fails(converted, gguf_toolchain):
    failed = _failed_checks(converted, gguf_toolchain, _tampered(converted, gguf_toolchain, "drop-eos-key"))
    assert "every EOS id ends generation" in failed


def test_wrong_chat_template_fails(converted, gguf_toolchain):
    failed = _failed_checks(converted, gguf_toolchain, _tampered(converted, gguf_toolchain, "wrong-template"))
    assert "chat template" in failed


def test_corrupted_tensor_fails(converted, gguf_toolchain):
    failed = _failed_checks(converted, gguf_toolchain, _tampered(converted, gguf_toolchain, "corrupt-tensor"))
    assert "logits match transformers" in failed


def test_corrupted_quantized_tensor_fails(converted, gguf_toolchain):
    backend, context, intermediate, work = converted
    logits = intermediate.get("logits")
    if logits is None:
        backend.validate_unquantized(context, gguf_toolchain, intermediate, work / "base")
        logits = intermediate["logits"]
    candidate = _tampered(converted, gguf_toolchain, "corrupt-tensor")
    report = backend.validate_quantized(context, gguf_toolchain, candidate, parse_variant("BF16"), logits, work / "q")
    assert "KL divergence to the unquantized conversion" in {check.name for check in report.failures}


def test_dropped_eos_id_does_not_stop(converted, gguf_toolchain):
    """The forced-stop run (made for every published file) catches the same file by running it."""
    from hubquant.backends.gguf_checks import check_stops
    from hubquant.validation import ValidationReport

    _, context, intermediate, _ = converted
    intact = ValidationReport()
    check_stops(intact, gguf_toolchain, intermediate["path"], context)
    assert intact.failures == []
    tampered = _tampered(converted, gguf_toolchain, "drop-eos-key")
    report = ValidationReport()
    check_stops(report, gguf_toolchain, tampered["path"], context)
    assert [check.name for check in report.failures] == ["generation stops at EOS"]
    assert "does not stop on EOS ids [32001]" in report.failures[0].detail
