"""The Space's settings from environment variables, and the namespaces a
signed-in user may publish to (read from the local Hub's whoami)."""

from __future__ import annotations

import gradio as gr
import pytest

from hubquant.errors import UsageError
from hubquant.space.config import SpaceConfig
from hubquant.space.identity import UserDirectory
from hubquant.space.ui import SpaceApp


def test_defaults_without_variables():
    config = SpaceConfig.from_env({})
    assert config.endpoint == "https://huggingface.co"
    assert (config.max_running_jobs, config.max_jobs_per_user, config.max_queued_jobs) == (1, 1, 10)


def test_every_variable_read_and_converted(tmp_path):
    config = SpaceConfig.from_env({
        "HF_ENDPOINT": "http://127.0.0.1:9999/",
        "HUBQUANT_SPACE_MAX_RUNNING_JOBS": "2",
        "HUBQUANT_SPACE_MAX_JOBS_PER_USER": "3",
        "HUBQUANT_SPACE_MAX_QUEUED_JOBS": "4",
        "HUBQUANT_SPACE_MAX_SOURCE_GB": "1.5",
        "HUBQUANT_SPACE_JOB_TIMEOUT_MINUTES": "30",
        "HUBQUANT_SPACE_STATE_DIR": str(tmp_path / "state"),
        "HUBQUANT_SPACE_WORK_DIR": str(tmp_path / "work"),
        "HUBQUANT_SPACE_THREADS": "0",
    })
    assert config.endpoint == "http://127.0.0.1:9999"
    assert (config.max_running_jobs, config.max_jobs_per_user, config.max_queued_jobs) == (2, 3, 4)
    assert config.max_source_bytes == 1_500_000_000
    assert config.job_timeout_s == 1800
    assert config.state_dir == tmp_path / "state"
    assert config.work_dir == tmp_path / "work"
    assert config.threads == 0


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("HF_ENDPOINT", "huggingface.co", "invalid HF_ENDPOINT 'huggingface.co': give an http\\(s\\) URL"),
        ("HUBQUANT_SPACE_MAX_RUNNING_JOBS", "two", "invalid HUBQUANT_SPACE_MAX_RUNNING_JOBS 'two': expected a number"),
        ("HUBQUANT_SPACE_MAX_SOURCE_GB", "0", "invalid HUBQUANT_SPACE_MAX_SOURCE_GB '0': expected a positive number"),
        ("HUBQUANT_SPACE_THREADS", "-1", "invalid HUBQUANT_SPACE_THREADS '-1': expected 0 \\(all cores\\)"),
    ],
)
def test_invalid_variable_named(name, value, message):
    with pytest.raises(UsageError, match=message):
        SpaceConfig.from_env({name: value})


def test_blank_variable_keeps_default():
    assert SpaceConfig.from_env({"HUBQUANT_SPACE_MAX_QUEUED_JOBS": "  "}).max_queued_jobs == 10


def test_users_publish_to_their_organisations(hub):
    users = UserDirectory(hub.url)
    assert users.user_for(hub.token_for("bob")).namespaces == ("bob", "hubquant-org")
    assert users.user_for(hub.token_for("alice")).namespaces == ("alice", "microsoft")
    assert users.user_for(hub.token_for("carol")).namespaces == ("carol",)
    with pytest.raises(UsageError, match="rejected your sign-in token"):
        users.user_for("hf_not_a_token")


def signed_in(hub, username: str) -> gr.OAuthToken:
    """The token object gradio hands an event of a signed-in session."""
    return gr.OAuthToken(token=hub.token_for(username), scope="openid profile read-repos write-repos", expires_at=0)


def test_run_rejects_others_namespace(hub, tmp_path):
    app = SpaceApp(SpaceConfig(endpoint=hub.url, state_dir=tmp_path / "state", work_dir=tmp_path))
    try:
        message, _ = app.on_run("alice/phi3-private-tiny", ["gguf:Q8_0"], "", [], "microsoft", "", False, 50,
                                signed_in(hub, "bob"))
        assert message == "**Not started:** you cannot publish under 'microsoft'; choose one of bob, hubquant-org."
        assert app.manager.jobs_for("bob") == []
        message, _ = app.on_run("alice/phi3-private-tiny", ["gguf:Q8_0"], "gguf:Q9", [], "bob", "", False, 50,
                                signed_in(hub, "bob"))
        assert message.startswith("**Not started:**")
        assert "Q9" in message
        assert app.manager.jobs_for("bob") == []
    finally:
        app.manager.close()
