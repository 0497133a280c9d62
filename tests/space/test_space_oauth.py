"""The test Hub as the OAuth/OpenID provider of a Space, driven by authlib's client.

gradio's sign-in uses authlib, so these tests use the same library: a passing
flow here is the flow a Space runs against huggingface.co.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from joserfc import jwt
from joserfc.jwk import KeySet

from hubquant.testhub import HubServer

CALLBACK = "http://127.0.0.1:7860/login/callback"
SCOPES = ["read-repos", "write-repos", "manage-repos"]


@pytest.fixture(scope="module")
def space_client(hub):
    return hub.register_oauth_app("test space", [CALLBACK], SCOPES)


def _authorize(hub, client, *, username: str | None, decision: str = "authorize", scope: str | None = None,
               redirect_uri: str = CALLBACK + "?_target_url=%2F") -> tuple[OAuth2Client, httpx.Response, str]:
    """Run the browser part of the flow; return the client, the final response and the nonce."""
    session = OAuth2Client(client.client_id, client.client_secret, scope=scope or client.scope_string, redirect_uri=redirect_uri)
    nonce = "n-0S6_WzA2Mj"
    url, state = session.create_authorization_url(f"{hub.url}/oauth/authorize", nonce=nonce)
    browser = httpx.Client()
    page = browser.get(url)
    if page.status_code != 200 or "request" not in page.text:
        return session, page, nonce
    pending = re.search(r'name="request" value="([^"]+)"', page.text).group(1)
    form = {"request": pending, "decision": decision}
    if username is not None:
        form["username"] = username
    response = browser.post(f"{hub.url}/oauth/authorize", data=form)
    return session, response, nonce


def _callback(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 303, response.text
    location = urlparse(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == CALLBACK
    return {name: values[-1] for name, values in parse_qs(location.query).items()}


def test_discovery_document(hub):
    document = httpx.get(f"{hub.url}/.well-known/openid-configuration").json()
    assert document["issuer"] == hub.url
    assert document["authorization_endpoint"] == f"{hub.url}/oauth/authorize"
    assert document["token_endpoint"] == f"{hub.url}/oauth/token"
    assert document["userinfo_endpoint"] == f"{hub.url}/oauth/userinfo"
    assert document["jwks_uri"] == f"{hub.url}/oauth/jwks"
    assert document["id_token_signing_alg_values_supported"] == ["RS256"]


def test_client_scopes_include_openid_profile(space_client):
    assert space_client.scope_string == "openid profile read-repos write-repos manage-repos"


@pytest.mark.parametrize("username", ["alice", "bob"])
def test_code_flow_signs_in_user(hub, space_client, username):
    session, response, nonce = _authorize(hub, space_client, username=username)
    params = _callback(response)
    token = session.fetch_token(f"{hub.url}/oauth/token", code=params["code"], state=params["state"])
    assert token["token_type"] == "bearer"
    assert token["access_token"].startswith("hf_oauth_")
    assert token["scope"] == space_client.scope_string

    keys = KeySet.import_key_set(httpx.get(f"{hub.url}/oauth/jwks").json())
    claims = jwt.decode(token["id_token"], keys).claims
    assert claims["preferred_username"] == username
    assert claims["aud"] == space_client.client_id
    assert claims["iss"] == hub.url
    assert claims["nonce"] == nonce

    userinfo = httpx.get(f"{hub.url}/oauth/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"}).json()
    assert userinfo["preferred_username"] == username
    assert userinfo["sub"] == claims["sub"]
    expected_org = {"alice": "microsoft", "bob": "hubquant-org"}[username]
    assert [org["name"] for org in userinfo["orgs"]] == [expected_org]

    api = HfApi(endpoint=hub.url, token=token["access_token"])
    assert api.whoami()["name"] == username
    repo = api.create_repo(f"{username}/oauth-made-{username}", private=True)
    assert repo.repo_id == f"{username}/oauth-made-{username}"


def test_users_get_distinct_tokens(hub, space_client):
    tokens = []
    for username in ("alice", "bob"):
        session, response, _ = _authorize(hub, space_client, username=username)
        params = _callback(response)
        tokens.append(session.fetch_token(f"{hub.url}/oauth/token", code=params["code"])["access_token"])
    assert tokens[0] != tokens[1]
    names = [HfApi(endpoint=hub.url, token=token).whoami()["name"] for token in tokens]
    assert names == ["alice", "bob"]


def test_deny_redirects_access_denied(hub, space_client):
    _, response, _ = _authorize(hub, space_client, username=None, decision="deny")
    params = _callback(response)
    assert params["error"] == "access_denied"
    assert "state" in params
    assert "code" not in params


def test_unknown_user_shows_form_again(hub, space_client):
    _, response, _ = _authorize(hub, space_client, username="mallory")
    assert response.status_code == 400
    assert "No test Hub user is named" in response.text
    assert 'name="request"' in response.text


def test_wrong_client_secret_rejected(hub, space_client):
    session, response, _ = _authorize(hub, space_client, username="alice")
    params = _callback(response)
    reply = httpx.post(
        f"{hub.url}/oauth/token",
        data={"grant_type": "authorization_code", "code": params["code"], "redirect_uri": session.redirect_uri},
        auth=(space_client.client_id, "not-the-secret"),
    )
    assert reply.status_code == 401
    assert reply.json()["error"] == "invalid_client"


def test_code_works_once(hub, space_client):
    session, response, _ = _authorize(hub, space_client, username="alice")
    params = _callback(response)
    session.fetch_token(f"{hub.url}/oauth/token", code=params["code"])
    reply = httpx.post(
        f"{hub.url}/oauth/token",
        data={"grant_type": "authorization_code", "code": params["code"], "redirect_uri": session.redirect_uri},
        auth=(space_client.client_id, space_client.client_secret),
    )
    assert reply.status_code == 400
    assert reply.json()["error"] == "invalid_grant"


def test_unregistered_redirect_not_followed(hub, space_client):
    _, response, _ = _authorize(hub, space_client, username="alice", redirect_uri="http://127.0.0.1:9/evil")
    assert response.status_code == 400
    assert "is not registered" in response.text


def test_scope_beyond_app_rejected(hub, space_client):
    _, response, _ = _authorize(hub, space_client, username="alice", scope="openid profile inference-api")
    params = _callback(response)
    assert params["error"] == "invalid_scope"


def test_read_only_app_cannot_create_repos(hub):
    client = hub.register_oauth_app("read-only space", [CALLBACK], ["read-repos"])
    session, response, _ = _authorize(hub, client, username="alice")
    params = _callback(response)
    token = session.fetch_token(f"{hub.url}/oauth/token", code=params["code"])["access_token"]
    with pytest.raises(HfHubHTTPError, match="read-only"):
        HfApi(endpoint=hub.url, token=token).create_repo("alice/should-not-exist")


def test_userinfo_rejects_other_tokens(hub):
    reply = httpx.get(f"{hub.url}/oauth/userinfo", headers={"Authorization": f"Bearer {hub.token_for('alice')}"})
    assert reply.status_code == 401


def test_clients_and_key_survive_restart(tmp_path):
    with HubServer(tmp_path / "hub") as first:
        client = first.register_oauth_app("persistent", [CALLBACK], SCOPES)
        kid = httpx.get(f"{first.url}/oauth/jwks").json()["keys"][0]["kid"]
    with HubServer(tmp_path / "hub") as second:
        assert httpx.get(f"{second.url}/oauth/jwks").json()["keys"][0]["kid"] == kid
        session, response, _ = _authorize(second, client, username="carol")
        params = _callback(response)
        token = session.fetch_token(f"{second.url}/oauth/token", code=params["code"])
        assert HfApi(endpoint=second.url, token=token["access_token"]).whoami()["name"] == "carol"


def test_repo_page_private_needs_session(hub, space_client, alice):
    alice.create_repo("alice/page-private", private=True, exist_ok=True)
    assert httpx.get(f"{hub.url}/alice/page-private").status_code == 404
    session = OAuth2Client(space_client.client_id, space_client.client_secret, scope=space_client.scope_string, redirect_uri=CALLBACK)
    url, _ = session.create_authorization_url(f"{hub.url}/oauth/authorize")
    browser = httpx.Client()
    pending = re.search(r'name="request" value="([^"]+)"', browser.get(url).text).group(1)
    browser.post(f"{hub.url}/oauth/authorize", data={"request": pending, "decision": "authorize", "username": "alice"})
    page = browser.get(f"{hub.url}/alice/page-private")
    assert page.status_code == 200
    assert '<p id="visibility">private</p>' in page.text
