"""The command line as a new user first meets it: --version, --help on every
command, and the demo command that builds a tiny model without the Hub."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from hubquant import __version__
from hubquant.cli import main


def _commands(group, prefix=()):
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))


def test_version_printed():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


@pytest.mark.parametrize("path", list(_commands(main)), ids=" ".join)
def test_help_on_every_command(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage:")
    assert "--help" in result.output


def test_run_help_names_calibration_options():
    output = CliRunner().invoke(main, ["run", "--help"]).output
    for option in ("--calibration", "--calibration-dataset", "--imatrix-chunk-size", "--imatrix-min-chunks", "--imatrix-max-chunks"):
        assert option in output, option
    assert "--log-level" in CliRunner().invoke(main, ["--help"]).output


def test_demo_builds_a_loadable_folder(tmp_path):
    out = tmp_path / "tiny-phi3"
    result = subprocess.run(
        [sys.executable, "-m", "hubquant.cli", "demo", "build-model", "phi-3-mini-4k-instruct", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Phi3ForCausalLM"]
    assert config["num_hidden_layers"] == 2
    for name in ("model.safetensors", "tokenizer.json", "tokenizer.model", "generation_config.json"):
        assert (out / name).is_file(), name
