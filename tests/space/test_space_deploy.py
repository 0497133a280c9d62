"""The deployable Space: its Dockerfile, README header and the documented command.

No Docker engine runs where the tests run, so the Dockerfile is checked against
the README's set-up commands, and the documented command is run for real.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import subprocess
import sys
from http.cookies import SimpleCookie

import httpx
import pytest
import yaml

from space_helpers import REPO_ROOT, free_port, wait_for_http

SPACE = REPO_ROOT / "space"


def readme_space_commands() -> list[str]:
    """Return the commands of the bash block in the README's "Run the Space" section."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Run the Space", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def dockerfile_setup() -> tuple[list[str], list[str]]:
    """Return the RUN commands after the set-up comment, and the CMD words."""
    text = (SPACE / "Dockerfile").read_text()
    setup = text.split('# Set-up: the commands of the README\'s "Run the Space" section', 1)[1]
    runs = re.findall(r"^RUN (.+)$", setup, re.M)
    command = yaml.safe_load(re.search(r"^CMD (.+)$", text, re.M).group(1))
    return runs, command


def test_dockerfile_runs_readme_setup():
    commands = readme_space_commands()
    runs, _ = dockerfile_setup()
    assert runs == commands[:-1]


def test_dockerfile_cmd_is_readme_launch():
    commands = readme_space_commands()
    _, command = dockerfile_setup()
    launch = shlex.split(commands[-1])
    assert launch[:2] == command
    assert launch[2:] == ["--local-hub", "hub-state"]


def test_space_header_enables_oauth():
    from importlib import util

    text = (SPACE / "README.md").read_text()
    header = yaml.safe_load(text.split("---", 2)[1])
    spec = util.spec_from_file_location("space_app", SPACE / "app.py")
    entry = util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    assert header["sdk"] == "docker"
    assert header["app_port"] == 7860
    assert header["hf_oauth"] is True
    assert header["hf_oauth_scopes"] == entry.OAUTH_SCOPES


def test_requirements_name_space_extra():
    import tomllib

    lines = [line for line in (SPACE / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert lines == ["-e .[space]"]
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "gradio[oauth]==6.31.0" in extras["space"]


@pytest.mark.slow
def test_documented_command_signs_in(tmp_path):
    """The README's launch command serves the Space, and a new user signs in over HTTP."""
    launch = shlex.split(readme_space_commands()[-1])
    assert launch[:2] == [".venv/bin/python", "space/app.py"]
    port = free_port()
    arguments = [sys.executable, "space/app.py", "--local-hub", str(tmp_path / "hub-state"), "--host", "127.0.0.1", "--port", str(port)]
    log_path = tmp_path / "space.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(arguments, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url, process, log_path, timeout=180.0)
        hub_url = re.search(r"Local test Hub: (\S+);", log_path.read_text()).group(1)
        with httpx.Client(follow_redirects=False, timeout=30) as client:
            # gradio's session cookie is Secure, which httpx keeps off plain http,
            # so the test carries it by hand as a browser on loopback does.
            authorize = client.get(f"{url}/login/huggingface")
            assert authorize.status_code in (302, 307)
            assert authorize.headers["Location"].startswith(f"{hub_url}/oauth/authorize?")
            consent = client.get(authorize.headers["Location"])
            pending = re.search(r'name="request" value="([^"]+)"', consent.text).group(1)
            decision = client.post(f"{hub_url}/oauth/authorize", data={"request": pending, "decision": "authorize", "username": "bob"})
            callback = client.get(decision.headers["Location"], headers={"Cookie": f"session={_session(authorize)}"})
        assert callback.status_code in (302, 307), callback.text[:500]
        assert "/login/huggingface" not in callback.headers["Location"]
        session = _decode_session(_session(callback))
        assert session["oauth_info"]["userinfo"]["preferred_username"] == "bob"
        assert session["oauth_info"]["access_token"].startswith("hf_oauth_")
        assert httpx.get(f"{hub_url}/api/models/microsoft/Phi-3-mini-4k-instruct").status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


def _session(response: httpx.Response) -> str:
    cookies = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        cookies.load(header)
    return cookies["session"].value


def _decode_session(value: str) -> dict:
    """Decode the payload of starlette's signed session cookie (base64 JSON before the first dot)."""
    payload = value.split(".", 1)[0]
    return json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))
