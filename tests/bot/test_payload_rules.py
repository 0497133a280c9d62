"""Payload parsing, rules and the configuration file."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from hubquant.bot.config import load_config, parse_config
from hubquant.bot.payload import PayloadError, parse_payload
from hubquant.bot.rules import Rule, match_rules
from hubquant.errors import UsageError

from conftest import default_rule

DATA = Path(__file__).parent / "data"
SHA_A = "a" * 40
SHA_B = "b" * 40
SHA_C = "c" * 40


def fixture(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def content_update(repo: str = "microsoft/Phi-5-mini", *, private: bool = False, refs=None, repo_type: str = "model") -> dict:
    """A repo.content update shaped like the captured Hub payload, for another repo."""
    payload = copy.deepcopy(fixture("space_repo_content_update.json"))
    payload["repo"].update({"type": repo_type, "name": repo, "private": private, "headSha": SHA_B})
    payload["updatedRefs"] = refs if refs is not None else [{"ref": "refs/heads/main", "oldSha": SHA_A, "newSha": SHA_B}]
    return payload


def encode(payload: dict) -> bytes:
    return json.dumps(payload).encode()


def test_real_payload_keeps_head_sha():
    event = parse_payload((DATA / "space_repo_content_update.json").read_bytes())
    assert event.head_sha == "5e7f29fffcc579cb52539fddb14a1a4f85f39e44"
    assert event.name == "repo.content.update"
    assert event.repo_type == "space"
    assert event.owner == "Wauplin"
    assert event.webhook_id == "65a14fd933eca76f4639fc84"
    assert event.updated_refs[0].ref == "refs/pr/5"
    assert event.updated_refs[0].old_sha is None


def test_huggingface_hub_model_drops_head_sha():
    # Why the bot parses payloads itself (huggingface_hub 2.4.0).
    from huggingface_hub import WebhookPayload

    model = WebhookPayload.model_validate(fixture("space_repo_content_update.json")) if hasattr(
        WebhookPayload, "model_validate") else WebhookPayload.parse_obj(fixture("space_repo_content_update.json"))
    assert model.repo.head_sha is None


@pytest.mark.parametrize("name", ["model_discussion_create.json", "space_discussion_update.json"])
def test_discussion_payloads_parse(name):
    event = parse_payload((DATA / name).read_bytes())
    assert event.scope == "discussion"
    assert event.head_sha is None


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "invalid JSON"),
        (b"[1, 2]", 422, "JSON object"),
        (encode({"event": {"action": "update", "scope": "repo"}}), 422, "webhook.id"),
        (encode({**content_update(), "webhook": {"id": "abc", "version": 2}}), 422, "version 2"),
        (encode({k: v for k, v in content_update().items() if k != "repo"}), 422, "field repo"),
        (encode({**content_update(), "event": {"scope": "repo.content"}}), 422, "event.action"),
        (encode({**content_update(), "updatedRefs": [{"ref": "refs/heads/main", "newSha": "xyz"}]}), 422, "newSha"),
    ],
)
def test_bad_payloads_rejected(body, status, fragment):
    with pytest.raises(PayloadError) as caught:
        parse_payload(body)
    assert caught.value.status == status
    assert fragment in caught.value.message


def test_webhook_id_found_in_broken_json():
    with pytest.raises(PayloadError) as caught:
        parse_payload(b'{"webhook": {"id": "6390e855e30d9209411de93b", "version": 3}, "repo": ')
    assert caught.value.webhook_id == "6390e855e30d9209411de93b"


RULE = Rule(name="phi", owners=("microsoft",), names=("Phi-*",), targets=("gguf:Q8_0",), namespace="hubquant-org")


@pytest.mark.parametrize(
    ("payload", "expected_sha", "reason"),
    [
        (content_update(), SHA_B, "matched"),
        (content_update("microsoft/phi-5-MINI"), SHA_B, "matched"),
        (content_update("someone/Phi-5-mini"), None, "owner someone"),
        (content_update("microsoft/Orca-2"), None, "name Orca-2"),
        (content_update("microsoft/Phi-5-mini-GGUF"), None, "excluded"),
        (content_update("microsoft/Phi-5-mini-onnx-int4"), None, "excluded"),
        (content_update(private=True), None, "private"),
        (content_update(repo_type="dataset"), None, "repo type dataset"),
        (content_update(refs=[{"ref": "refs/pr/3", "oldSha": None, "newSha": SHA_C}]), None, "not refs/heads/main"),
        (content_update(refs=[{"ref": "refs/heads/main", "oldSha": SHA_A, "newSha": None}]), None, "deleted"),
        (content_update(refs=[{"ref": "refs/tags/v1", "oldSha": None, "newSha": SHA_C},
                              {"ref": "refs/heads/main", "oldSha": SHA_A, "newSha": SHA_C}]), SHA_C, "matched"),
        ({**fixture("model_discussion_create.json"), "repo": {**content_update()["repo"]}}, None, "event discussion.create"),
    ],
)
def test_rule_decisions(payload, expected_sha, reason):
    event = parse_payload(encode(payload))
    spec, why = RULE.check(event)
    assert reason in why
    if expected_sha is None:
        assert spec is None
    else:
        assert spec.sha == expected_sha
        assert spec.targets == ("gguf:Q8_0",)
        assert spec.namespace == "hubquant-org"


def test_repo_create_uses_head_sha():
    payload = content_update()
    payload["event"] = {"action": "create", "scope": "repo"}
    del payload["updatedRefs"]
    spec, _ = RULE.check(parse_payload(encode(payload)))
    assert spec.sha == SHA_B
    assert spec.event == "repo.create"


def test_private_allowed_by_rule():
    rule = Rule(name="private", owners=("microsoft",), allow_private=True, targets=("gguf:Q8_0",))
    spec, _ = rule.check(parse_payload(encode(content_update(private=True))))
    assert spec.private_source is True


def test_same_commit_same_job_id():
    first, _ = match_rules([RULE], parse_payload(encode(content_update())))
    payload = content_update()
    payload["webhook"]["id"] = "another-webhook"
    second, _ = match_rules([RULE], parse_payload(encode(payload)))
    assert first[0].job_id == second[0].job_id
    other = Rule(name="other", owners=("microsoft",), targets=("gguf:Q4_K_M",))
    third, _ = match_rules([other], parse_payload(encode(content_update())))
    assert third[0].job_id != first[0].job_id


def test_config_expands_hardware():
    from hubquant.backends import backend_names
    from hubquant.hardware import targets_for
    from hubquant.targets import parse_targets

    config = parse_config({"rules": [default_rule(targets=None, hardware=["phone"])]})
    targets = config.rules[0].targets
    assert targets
    expected = {str(target) for target in parse_targets(targets_for(["phone"], backends=backend_names()))}
    assert set(targets) == expected
    assert list(targets) == sorted(targets)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({}, "non-empty 'rules'"),
        ({"rules": [default_rule(owner=None)]}, "needs an 'owner'"),
        ({"rules": [default_rule(targets=None)]}, "needs 'targets'"),
        ({"rules": [default_rule(targets=["gguf:NOPE"])]}, "NOPE"),
        ({"rules": [default_rule(events=["repo.delete"])]}, "unknown event"),
        ({"rules": [default_rule(visibility="secret")]}, "visibility"),
        ({"rules": [default_rule(), default_rule()]}, "unique"),
        ({"rules": [default_rule()], "worker": {"max_disk_gb": -1}}, "max_disk_gb"),
        ({"rules": [default_rule()], "queue": {"colour": "red"}}, "queue.colour"),
    ],
)
def test_config_errors(data, fragment):
    with pytest.raises(UsageError) as caught:
        parse_config(data)
    assert fragment in str(caught.value)


def test_example_config_loads():
    example = Path(__file__).parents[2] / "bot" / "bot.example.yaml"
    config = load_config(example)
    assert config.rules[0].owners == ("microsoft",)
    assert config.queue_url.startswith("sqlite:///")
    assert config.worker.concurrent_jobs >= 1
