"""The GitHub workflows: actionlint, and the quantize workflow's run: steps run
here against the local test Hub, with inputs and secrets set as GitHub sets them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi

from hubquant.tinymodels import publish_tiny_model

ROOT = Path(__file__).parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def actionlint() -> str:
    found = shutil.which("actionlint") or shutil.which("actionlint", path=str(Path(os.sys.executable).parent))
    if found is None:
        pytest.fail("actionlint is not installed; install the bot-test extra: pip install -e '.[bot-test]'")
    return found


@pytest.mark.parametrize("name", ["quantize.yml", "ci.yml"])
def test_workflow_passes_actionlint(name):
    result = subprocess.run([actionlint(), str(WORKFLOWS / name)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_script_injection(tmp_path):
    # Untrusted event text expanded inside a run: script is a shell injection, and an
    # unquoted loop over ls output is a shellcheck finding: both must be reported.
    text = (WORKFLOWS / "quantize.yml").read_text()
    assert text.rstrip().endswith(">> \"$GITHUB_STEP_SUMMARY\""), "the steps must end the file for this test"
    bad_step = (
        "\n      - name: Unsafe step\n"
        "        run: |\n"
        "          echo ${{ github.event.head_commit.message }}\n"
        "          for f in $(ls *.txt); do echo $f; done\n"
    )
    broken = tmp_path / "broken.yml"
    broken.write_text(text + bad_step)
    result = subprocess.run([actionlint(), str(broken)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "github.event.head_commit.message" in result.stdout
    assert "shellcheck" in result.stdout


def test_hardware_input_example_names_real_presets():
    from hubquant.hardware import HARDWARE

    workflow = yaml.safe_load((WORKFLOWS / "quantize.yml").read_text())
    # PyYAML reads the "on" key as True.
    description = workflow[True]["workflow_dispatch"]["inputs"]["hardware"]["description"]
    example = re.search(r'"([^"]+)"', description).group(1)
    for key in re.split(r"[\s,]+", example):
        assert key in HARDWARE, key


def test_ci_runs_readme_test_command():
    readme_command = ".venv/bin/python -m pytest -q"
    assert readme_command in (ROOT / "README.md").read_text()
    assert readme_command in (ROOT / ".ci" / "run").read_text()
    workflow = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    runs = [step.get("run", "") for step in workflow["jobs"]["test"]["steps"]]
    assert any(".ci/run" in run for run in runs)



def test_ci_keeps_screenshots_after_failures():
    # The Space's browser tests and the benchmarks in tests write here.
    written = sorted(path.name for path in (ROOT / "tests").rglob("*.py") if "test-artifacts" in path.read_text())
    assert written, "no test writes test-artifacts/ any more"
    workflow = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    steps = workflow["jobs"]["test"]["steps"]
    upload = next(step for step in steps if step.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()"
    assert upload["with"]["path"] == "test-artifacts/"
    assert steps.index(upload) > next(index for index, step in enumerate(steps) if ".ci/run" in step.get("run", ""))


class Expressions:
    """The few GitHub expression forms the quantize workflow uses, evaluated as GitHub does."""

    def __init__(self, contexts: dict[str, dict]) -> None:
        self.contexts = contexts

    def value(self, text: str) -> str:
        comparison = re.fullmatch(r"(\S+)\s*(==|!=)\s*'([^']*)'", text)
        if comparison:
            left, operator, right = comparison.groups()
            equal = self.value(left).lower() == right.lower()
            return "true" if equal == (operator == "==") else "false"
        if re.fullmatch(r"hashFiles\(.*\)", text):
            return "hash"
        context, _, name = text.partition(".")
        if context not in self.contexts or not name:
            raise AssertionError(f"the workflow uses expression {text!r}, which this test does not evaluate")
        return str(self.contexts[context].get(name, ""))

    def substitute(self, text: str) -> str:
        return _EXPRESSION.sub(lambda match: self.value(match.group(1)), str(text))

    def condition(self, text: str | None) -> bool:
        if text is None:
            return True
        return self.value(_EXPRESSION.sub(lambda match: match.group(1), text).strip()) == "true"


def run_steps(workflow: dict, inputs: dict, secrets: dict, base_env: dict, temp: Path, workspace: Path) -> list[str]:
    """Run the run: steps of the quantize job in bash, as a runner does; return each step's output."""
    job = workflow["jobs"]["quantize"]
    for name, spec in workflow["on"]["workflow_dispatch"]["inputs"].items():
        inputs.setdefault(name, spec.get("default", ""))
    runner = {"temp": str(temp), "os": "Linux", "environment": "self-hosted"}
    expressions = Expressions({"inputs": inputs, "secrets": secrets, "runner": runner,
                               "github": {"workspace": str(workspace)}})
    files = {name: temp / f"{name.lower()}.txt" for name in ("GITHUB_PATH", "GITHUB_ENV", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY")}
    for path in files.values():
        path.touch()
    extra_path: list[str] = []
    outputs = []
    for index, step in enumerate(job["steps"]):
        if "run" not in step or not expressions.condition(step.get("if")):
            continue
        env = dict(base_env)
        env.update({key: expressions.substitute(value) for key, value in job.get("env", {}).items()})
        env.update({key: expressions.substitute(value) for key, value in step.get("env", {}).items()})
        env.update({key: str(path) for key, path in files.items()})
        env.update({"RUNNER_TEMP": str(temp), "GITHUB_WORKSPACE": str(workspace), "CI": "true"})
        env["PATH"] = os.pathsep.join([*reversed(extra_path), env["PATH"]])
        script = temp / f"step-{index}.sh"
        script.write_text(expressions.substitute(step["run"]))
        # `defaults.run.shell: bash` runs `bash --noprofile --norc -eo pipefail {0}`.
        result = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=workspace,
                                env=env, capture_output=True, text=True, timeout=900)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"step {step.get('name', index)!r} failed:\n{output[-4000:]}"
        outputs.append(output)
        extra_path = [line for line in files["GITHUB_PATH"].read_text().splitlines() if line]
    return outputs


def test_quantize_workflow_steps_publish(bot_hub, bot_alice, tiny_model, tmp_path, gguf_toolchain, reference_toolchain):
    assert yaml.safe_load((WORKFLOWS / "quantize.yml").read_text())["defaults"]["run"]["shell"] == "bash"
    workflow = yaml.safe_load((WORKFLOWS / "quantize.yml").read_text())
    # PyYAML reads the key `on` as True (YAML 1.1).
    workflow["on"] = workflow.pop(True)
    source = "microsoft/Phi-workflow"
    publish_tiny_model(bot_alice, "phi-3-mini-4k-instruct", repo_id=source, cache=tiny_model)
    token = bot_hub.token_for("bob")
    venv_bin = str(Path(os.sys.executable).parent)
    base_env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGING"))}
    base_env["PATH"] = os.pathsep.join(part for part in base_env["PATH"].split(os.pathsep) if part != venv_bin)
    base_env.pop("VIRTUAL_ENV", None)
    base_env.update({"HF_ENDPOINT": bot_hub.url, "HF_HUB_DISABLE_XET": "1", "HOME": os.environ.get("HOME", "/root")})
    temp = tmp_path / "runner-temp"
    temp.mkdir()

    inputs = {"model": source, "targets": "gguf:Q8_0", "namespace": "hubquant-org", "visibility": "private"}
    outputs = run_steps(workflow, inputs, {"HF_TOKEN": token}, base_env, temp, ROOT)

    assert all(token not in output for output in outputs)
    summary = (temp / "github_step_summary.txt").read_text()
    assert f"## Releases of {source}@main" in summary
    assert "published" in summary
    api = HfApi(endpoint=bot_hub.url, token=token)
    files = api.list_repo_files("hubquant-org/Phi-workflow-GGUF")
    # The source is public, so the release is private because of visibility=private.
    assert api.model_info("hubquant-org/Phi-workflow-GGUF").private is True
    assert HfApi(endpoint=bot_hub.url, token=bot_hub.token_for("carol")).repo_exists("hubquant-org/Phi-workflow-GGUF") is False
    assert "Phi-workflow-Q8_0.gguf" in files
    assert "README.md" in files
    assert shutil.which("hubquant", path=str(temp / "hubquant-venv" / "bin"))


def test_quantize_workflow_needs_targets(bot_hub, tmp_path):
    workflow = yaml.safe_load((WORKFLOWS / "quantize.yml").read_text())
    workflow["on"] = workflow.pop(True)
    steps = workflow["jobs"]["quantize"]["steps"]
    workflow["jobs"]["quantize"]["steps"] = [step for step in steps if step.get("name") == "Check the source and plan the releases"]
    temp = tmp_path / "runner-temp"
    temp.mkdir()
    with pytest.raises(AssertionError, match="set the targets or hardware input"):
        run_steps(workflow, {"model": "microsoft/Phi-workflow"}, {"HF_TOKEN": "unused"}, dict(os.environ), temp, ROOT)


PRESETS_SOURCE = "microsoft/Phi-workflow-presets"


def plan_step_only(workflow: dict) -> dict:
    workflow["on"] = workflow.pop(True)
    steps = workflow["jobs"]["quantize"]["steps"]
    workflow["jobs"]["quantize"]["steps"] = [step for step in steps if step.get("name") == "Check the source and plan the releases"]
    return workflow


def run_plan_step(bot_hub, bot_alice, tiny_model, tmp_path, inputs: dict) -> Path:
    """Run the quantize workflow's plan step with `inputs` on a tiny source; return the runner's temp folder."""
    workflow = plan_step_only(yaml.safe_load((WORKFLOWS / "quantize.yml").read_text()))
    publish_tiny_model(bot_alice, "phi-3-mini-4k-instruct", repo_id=PRESETS_SOURCE, cache=tiny_model)
    env = dict(os.environ, HF_ENDPOINT=bot_hub.url, HF_HUB_DISABLE_XET="1")
    env["PATH"] = os.pathsep.join([str(Path(os.sys.executable).parent), env["PATH"]])
    temp = tmp_path / "runner-temp"
    temp.mkdir()
    run_steps(workflow, {"model": PRESETS_SOURCE, **inputs}, {"HF_TOKEN": bot_hub.token_for("bob")}, env, temp, ROOT)
    return temp


def test_quantize_workflow_hardware_presets(bot_hub, bot_alice, tiny_model, tmp_path):
    """-f hardware=... becomes --for options, and the plan names the backends to set up."""
    temp = run_plan_step(bot_hub, bot_alice, tiny_model, tmp_path,
                         {"hardware": "phone, apple-silicon", "namespace": "hubquant-org"})
    args = (temp / "hubquant-args").read_text().splitlines()
    assert args == ["--for", "phone", "--for", "apple-silicon", "--namespace", "hubquant-org"]
    assert (temp / "backends").read_text().split() == ["gguf", "mlx", "onnx"]
    plan = json.loads((temp / "plan.json").read_text())
    targets = {item["target"] for release in plan["releases"] for item in release["files"]}
    assert {"gguf:Q4_0", "gguf:Q4_K_M", "mlx:4bit", "mlx:8bit"} <= targets
    assert any(target.startswith("onnx:cpu-int4") for target in targets)


def test_quantize_workflow_rejects_unknown_preset(bot_hub, bot_alice, tiny_model, tmp_path):
    with pytest.raises(AssertionError, match="toaster"):
        run_plan_step(bot_hub, bot_alice, tiny_model, tmp_path, {"hardware": "toaster"})
