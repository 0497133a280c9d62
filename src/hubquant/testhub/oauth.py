"""The test Hub as the OAuth 2.0 / OpenID Connect provider that a Space signs in with.

The paths are those of huggingface.co: ``/.well-known/openid-configuration``,
``/oauth/authorize``, ``/oauth/token``, ``/oauth/userinfo`` and ``/oauth/jwks``.
A Space's OAuth client (``OAUTH_CLIENT_ID``, ``OAUTH_CLIENT_SECRET``,
``OAUTH_SCOPES``) comes from `HubServer.register_oauth_app`, and
``OPENID_PROVIDER_URL`` is the server's URL.

The test Hub has no browser login, so its consent page has a field for the
test user who signs in, and buttons to authorize or deny the app. ID tokens are RS256 JWTs
signed with a key kept in the state folder, as gradio's client (authlib)
verifies them against ``/oauth/jwks``.

NOTE: test Hub tokens are read or write tokens, so OAuth scopes are approximated:
``write-repos``, ``manage-repos`` or ``contribute-repos`` give a write token,
other scope sets a read token. Every token can read the user's private repos and
those of the user's organizations (the real Hub needs ``read-repos`` and lets
the user pick organizations on the consent page). Tokens keep working on the Hub
API after ``expires_in``, and only ``/oauth/userinfo`` checks the expiry.

The signing key needs ``joserfc`` (installed with ``hubquant[space]``, which
pulls in authlib), imported only when a key or token is made.
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
import secrets
import string
import threading
import time
from dataclasses import asdict, dataclass, field
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlparse

from hubquant.testhub.errors import HubError
from hubquant.testhub.fsutil import write_json_atomic
from hubquant.testhub.naming import stable_id
from hubquant.testhub.transport import Response

if TYPE_CHECKING:
    from collections.abc import Callable

    from hubquant.testhub.accounts import AccountStore
    from hubquant.testhub.transport import Request

logger = logging.getLogger(__name__)

# Scopes listed in the Hub's OAuth documentation (huggingface/hub-docs, docs/hub/oauth.md,
# with the additions of its pull request 2014).
SUPPORTED_SCOPES = (
    "openid",
    "profile",
    "email",
    "read-billing",
    "read-repos",
    "contribute-repos",
    "write-repos",
    "manage-repos",
    "inference-api",
    "write-discussions",
    "jobs",
    "webhooks",
)
# Spaces always get these two, whatever hf_oauth_scopes lists.
ALWAYS_GRANTED = ("openid", "profile")
WRITE_SCOPES = frozenset({"contribute-repos", "write-repos", "manage-repos"})
# The Hub's default lifetime of a Space's OAuth token is 8 hours.
TOKEN_LIFETIME_S = 8 * 60 * 60
CODE_LIFETIME_S = 10 * 60
PENDING_LIFETIME_S = 30 * 60
# Cookie of a browser signed in to the test Hub through the consent page.
SESSION_COOKIE = "testhub_session"
_TOKEN_ALPHABET = string.ascii_letters + string.digits


@dataclass
class OAuthClient:
    """An OAuth app, such as the one the Hub creates for a Space with ``hf_oauth: true``."""

    client_id: str
    client_secret: str
    name: str
    redirect_uris: list[str]
    scopes: list[str]

    @property
    def scope_string(self) -> str:
        """The value a Space finds in ``OAUTH_SCOPES``."""
        return " ".join(self.scopes)

    def allows_redirect(self, uri: str) -> bool:
        """Return True when `uri` matches a registered URI, ignoring its query.

        gradio adds ``?_target_url=...`` to its callback URL, and the Hub accepts
        that for a Space's ``https://{SPACE_HOST}/login/callback``.
        """
        parsed = urlparse(uri)
        if parsed.fragment:
            return False
        for registered in self.redirect_uris:
            allowed = urlparse(registered)
            if (parsed.scheme, parsed.netloc, parsed.path) == (allowed.scheme, allowed.netloc, allowed.path):
                return True
        return False


@dataclass
class _Grant:
    """The user, client and scopes of one consent, carried by its code and then its token."""

    client_id: str
    username: str
    scopes: list[str]
    redirect_uri: str
    nonce: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    expires_at: float = 0.0


@dataclass
class _Pending:
    """An authorization request waiting for the user's decision on the consent page."""

    client_id: str
    redirect_uri: str
    scopes: list[str]
    state: str | None
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    created_at: float = field(default_factory=time.time)


class OAuthProvider:
    """Serves the OAuth and OpenID endpoints; clients and issued tokens persist in `path`."""

    def __init__(self, path: Path, accounts: AccountStore, base_url: Callable[[], str]) -> None:
        self._path = path
        self._accounts = accounts
        self._base_url = base_url
        self._lock = threading.Lock()
        self._clients: dict[str, OAuthClient] = {}
        self._tokens: dict[str, _Grant] = {}
        self._codes: dict[str, _Grant] = {}
        self._pending: dict[str, _Pending] = {}
        # Browser session id -> username; kept in memory only.
        self._sessions: dict[str, str] = {}
        self._private_jwk: dict | None = None
        if path.exists():
            self._load()

    # -- registration --------------------------------------------------------

    def register_client(self, name: str, redirect_uris: list[str], scopes: list[str]) -> OAuthClient:
        """Create an OAuth app; ``openid`` and ``profile`` are always added to `scopes`."""
        unknown = sorted(set(scopes) - set(SUPPORTED_SCOPES))
        if unknown:
            raise ValueError(f"Unknown OAuth scope {unknown[0]!r}; supported: {', '.join(SUPPORTED_SCOPES)}.")
        if not redirect_uris:
            raise ValueError("An OAuth app needs at least one redirect URI.")
        for uri in redirect_uris:
            if urlparse(uri).scheme not in ("http", "https"):
                raise ValueError(f"Invalid redirect URI {uri!r}: use an http or https URL.")
        merged = list(ALWAYS_GRANTED) + [scope for scope in scopes if scope not in ALWAYS_GRANTED]
        client = OAuthClient(
            client_id=secrets.token_hex(16),
            client_secret=_random_token("oauth_app_", 32),
            name=name,
            redirect_uris=list(redirect_uris),
            scopes=merged,
        )
        with self._lock:
            self._clients[client.client_id] = client
            self._save()
        logger.info("Registered OAuth app %r (client id %s)", name, client.client_id)
        return client

    # -- routing ---------------------------------------------------------------

    def handle(self, request: Request) -> Response | None:
        """Return the response for an OAuth path, or None for any other path."""
        path, method = request.path, request.method
        if path == "/.well-known/openid-configuration" and method in ("GET", "HEAD"):
            return Response.json(self._discovery())
        if path == "/oauth/jwks" and method in ("GET", "HEAD"):
            return Response.json({"keys": [self._public_jwk()]})
        if path == "/oauth/authorize" and method == "GET":
            return self._authorize_page(request)
        if path == "/oauth/authorize" and method == "POST":
            return self._authorize_decision(request)
        if path == "/oauth/token" and method == "POST":
            return self._token(request)
        if path == "/oauth/userinfo" and method in ("GET", "POST"):
            return self._userinfo(request)
        if path.startswith("/oauth/"):
            raise HubError(404, f"No test Hub endpoint for {method} {path}.")
        return None

    def browser_user(self, request: Request) -> str | None:
        """Return the user whose test Hub session cookie `request` carries, if any."""
        cookies = SimpleCookie()
        try:
            cookies.load(request.headers.get("Cookie") or "")
        except CookieError:
            return None
        morsel = cookies.get(SESSION_COOKIE)
        with self._lock:
            return self._sessions.get(morsel.value) if morsel is not None else None

    # -- discovery and keys ------------------------------------------------------

    def _discovery(self) -> dict:
        base = self._base_url()
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/oauth/authorize",
            "token_endpoint": f"{base}/oauth/token",
            "userinfo_endpoint": f"{base}/oauth/userinfo",
            "jwks_uri": f"{base}/oauth/jwks",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": list(SUPPORTED_SCOPES),
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": [
                "sub", "name", "preferred_username", "profile", "picture", "email",
                "email_verified", "iss", "aud", "exp", "iat", "auth_time", "nonce",
            ],
        }  # fmt: skip

    def _signing_key(self):
        try:
            from joserfc.jwk import RSAKey
        except ImportError as error:
            raise HubError(
                500,
                "The test Hub's OpenID provider needs joserfc to sign ID tokens; "
                "install it with: pip install 'hubquant[space]'",
            ) from error
        with self._lock:
            if self._private_jwk is None:
                key = RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(8), "use": "sig", "alg": "RS256"})
                self._private_jwk = key.as_dict(private=True)
                self._save()
            return RSAKey.import_key(self._private_jwk)

    def _public_jwk(self) -> dict:
        public = self._signing_key().as_dict(private=False)
        return {**public, "use": "sig", "alg": "RS256"}

    # -- authorize -----------------------------------------------------------------

    def _authorize_page(self, request: Request) -> Response:
        client = self._clients.get(request.param("client_id") or "")
        if client is None:
            return _html_page("Unknown application", "<p>No OAuth app has this client_id on the test Hub.</p>", 400)
        redirect_uri = request.param("redirect_uri") or ""
        if not client.allows_redirect(redirect_uri):
            body = f"<p>The redirect URI {html.escape(redirect_uri)!s} is not registered for {html.escape(client.name)}.</p>"
            return _html_page("Invalid redirect URI", body, 400)
        state = request.param("state")
        if request.param("response_type") != "code":
            return _redirect(redirect_uri, {"error": "unsupported_response_type", "state": state})
        requested = (request.param("scope") or "openid profile").split()
        not_allowed = [scope for scope in requested if scope not in client.scopes]
        if not_allowed:
            description = f"scope {not_allowed[0]} is not granted to this app"
            return _redirect(redirect_uri, {"error": "invalid_scope", "error_description": description, "state": state})
        method = request.param("code_challenge_method")
        if request.param("code_challenge") and method not in (None, "S256"):
            return _redirect(redirect_uri, {"error": "invalid_request", "error_description": "only S256 PKCE is supported", "state": state})

        pending_id = secrets.token_urlsafe(24)
        with self._lock:
            self._drop_expired()
            self._pending[pending_id] = _Pending(
                client_id=client.client_id,
                redirect_uri=redirect_uri,
                scopes=requested,
                state=state,
                nonce=request.param("nonce"),
                code_challenge=request.param("code_challenge"),
                code_challenge_method=method,
            )
        return _html_page(f"Authorize {client.name}", _consent_form(client, requested, pending_id, self._user_names()))

    def _authorize_decision(self, request: Request) -> Response:
        form = request.body.form()
        pending_id = (form.get("request") or [""])[-1]
        with self._lock:
            pending = self._pending.pop(pending_id, None)
        if pending is None or time.time() - pending.created_at > PENDING_LIFETIME_S:
            logger.info("OAuth consent for an unknown or expired request")
            return _html_page("Request expired", "<p>This sign-in request is unknown or expired; start the sign-in again.</p>", 400)

        if (form.get("decision") or [""])[-1] != "authorize":
            logger.info("OAuth consent denied for client %s", pending.client_id)
            return _redirect(
                pending.redirect_uri,
                {"error": "access_denied", "error_description": "The user denied the request", "state": pending.state},
            )

        username = (form.get("username") or [""])[-1].strip()
        account = self._accounts.get(username)
        if account is None or account.kind != "user":
            logger.info("OAuth consent names unknown user %r", username)
            client = self._clients[pending.client_id]
            with self._lock:
                self._pending[pending_id] = pending
            message = f'<p class="error">No test Hub user is named {html.escape(username)!r}.</p>'
            return _html_page(
                f"Authorize {client.name}",
                message + _consent_form(client, pending.scopes, pending_id, self._user_names()),
                400,
            )

        code = secrets.token_urlsafe(32)
        grant = _Grant(
            client_id=pending.client_id,
            username=account.name,
            scopes=pending.scopes,
            redirect_uri=pending.redirect_uri,
            nonce=pending.nonce,
            code_challenge=pending.code_challenge,
            code_challenge_method=pending.code_challenge_method,
            expires_at=time.time() + CODE_LIFETIME_S,
        )
        session = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[code] = grant
            self._sessions[session] = account.name
        logger.info("OAuth consent: %s authorized client %s", account.name, pending.client_id)
        response = _redirect(pending.redirect_uri, {"code": code, "state": pending.state})
        # Signing in on the consent page also signs the browser in to the test Hub.
        response.headers["Set-Cookie"] = f"{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Lax"
        return response

    # -- token -----------------------------------------------------------------------

    def _token(self, request: Request) -> Response:
        form = {name: values[-1] for name, values in request.body.form().items()}
        client = self._authenticate_client(request, form)
        if form.get("grant_type") != "authorization_code":
            return _oauth_error("unsupported_grant_type", "only grant_type=authorization_code is supported")
        with self._lock:
            grant = self._codes.pop(form.get("code", ""), None)
        if grant is None or grant.expires_at < time.time() or grant.client_id != client.client_id:
            return _oauth_error("invalid_grant", "the code is invalid, expired, already used or issued to another client")
        if form.get("redirect_uri") != grant.redirect_uri:
            return _oauth_error("invalid_grant", "redirect_uri differs from the one of the authorization request")
        if grant.code_challenge and not _pkce_matches(form.get("code_verifier"), grant.code_challenge):
            return _oauth_error("invalid_grant", "code_verifier does not match the code_challenge")

        access_token = _random_token("hf_oauth_", 34)
        issued = _Grant(
            client_id=client.client_id,
            username=grant.username,
            scopes=grant.scopes,
            redirect_uri=grant.redirect_uri,
            expires_at=time.time() + TOKEN_LIFETIME_S,
        )
        self._add_hub_token(grant.username, access_token, grant.scopes)
        with self._lock:
            self._tokens[access_token] = issued
            self._save()
        body = {
            "access_token": access_token,
            "token_type": "bearer",
            "expires_in": TOKEN_LIFETIME_S,
            "scope": " ".join(grant.scopes),
        }
        if "openid" in grant.scopes:
            body["id_token"] = self._id_token(client, grant)
        logger.info("OAuth token issued to %s for client %s", grant.username, client.client_id)
        return Response.json(body, headers={"Cache-Control": "no-store"})

    def _authenticate_client(self, request: Request, form: dict[str, str]) -> OAuthClient:
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        header = request.headers.get("Authorization") or ""
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip()).decode()
            except (ValueError, UnicodeDecodeError):
                decoded = ""
            client_id, _, client_secret = decoded.partition(":")
        client = self._clients.get(client_id or "")
        if client is None or not secrets.compare_digest(client.client_secret, client_secret or ""):
            raise HubError(
                401,
                "Invalid client credentials",
                headers={"WWW-Authenticate": 'Basic realm="oauth"'},
                body={"error": "invalid_client", "error_description": "unknown client_id or wrong client_secret"},
            )
        return client

    def _add_hub_token(self, username: str, token: str, scopes: list[str]) -> None:
        account = self._accounts.get(username)
        if account is None:
            raise HubError(400, f"The account {username!r} no longer exists.")
        account.tokens[token] = "write" if WRITE_SCOPES & set(scopes) else "read"
        self._accounts.add(account)

    def _id_token(self, client: OAuthClient, grant: _Grant) -> str:
        from joserfc import jwt

        key = self._signing_key()
        now = int(time.time())
        claims = {
            "iss": self._base_url(),
            "aud": client.client_id,
            "iat": now,
            "auth_time": now,
            "exp": now + TOKEN_LIFETIME_S,
            **self._profile_claims(grant.username, grant.scopes),
        }
        if grant.nonce:
            claims["nonce"] = grant.nonce
        return jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "JWT"}, claims, key)

    # -- userinfo ----------------------------------------------------------------------

    def _userinfo(self, request: Request) -> Response:
        scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
        with self._lock:
            grant = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if grant is None or grant.expires_at < time.time():
            raise HubError(
                401,
                "Invalid or expired OAuth access token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                body={"error": "invalid_token"},
            )
        claims = self._profile_claims(grant.username, grant.scopes)
        claims["isPro"] = False
        claims["orgs"] = [
            {
                "sub": stable_id("org", org.name),
                "name": org.name,
                "preferred_username": org.name,
                "picture": "",
                "isEnterprise": False,
            }
            for org in self._accounts.orgs_of(grant.username)
        ]
        return Response.json(claims)

    def _profile_claims(self, username: str, scopes: list[str]) -> dict:
        claims = {
            "sub": stable_id("user", username),
            "name": username,
            "preferred_username": username,
            "profile": f"{self._base_url()}/{username}",
            "picture": "",
        }
        if "email" in scopes:
            claims["email"] = f"{username}@users.noreply.test"
            claims["email_verified"] = True
        return claims

    # -- state ---------------------------------------------------------------------------

    def _user_names(self) -> list[str]:
        return sorted(account.name for account in self._accounts.all() if account.kind == "user")

    def _drop_expired(self) -> None:
        now = time.time()
        for pending_id in [key for key, item in self._pending.items() if now - item.created_at > PENDING_LIFETIME_S]:
            del self._pending[pending_id]
        for code in [key for key, grant in self._codes.items() if grant.expires_at < now]:
            del self._codes[code]

    def _load(self) -> None:
        import json

        data = json.loads(self._path.read_text(encoding="utf-8"))
        self._clients = {item["client_id"]: OAuthClient(**item) for item in data.get("clients", [])}
        self._tokens = {token: _Grant(**grant) for token, grant in data.get("tokens", {}).items()}
        self._private_jwk = data.get("signing_key")

    def _save(self) -> None:
        data = {
            "clients": [asdict(client) for client in self._clients.values()],
            "tokens": {token: asdict(grant) for token, grant in self._tokens.items()},
            "signing_key": self._private_jwk,
        }
        write_json_atomic(self._path, data)


def _random_token(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(length))


def _pkce_matches(verifier: str | None, challenge: str) -> bool:
    if not verifier:
        return False
    digest = hashlib.sha256(verifier.encode()).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return secrets.compare_digest(expected, challenge)


def _redirect(uri: str, params: dict[str, str | None]) -> Response:
    query = urlencode({name: value for name, value in params.items() if value is not None})
    separator = "&" if urlparse(uri).query else "?"
    # 303 makes the browser follow a POSTed form with a GET.
    return Response(303, {"Location": f"{uri}{separator}{query}", "Cache-Control": "no-store"})


def _oauth_error(error: str, description: str, status: int = 400) -> Response:
    return Response.json({"error": error, "error_description": description}, status, {"Cache-Control": "no-store"})


def _consent_form(client: OAuthClient, scopes: list[str], pending_id: str, users: list[str]) -> str:
    scope_items = "".join(f"<li><code>{html.escape(scope)}</code></li>" for scope in scopes)
    options = "".join(f'<option value="{html.escape(name)}"></option>' for name in users)
    return f"""
<p><strong>{html.escape(client.name)}</strong> asks to access your test Hub account with these scopes:</p>
<ul>{scope_items}</ul>
<form method="post" action="/oauth/authorize">
  <input type="hidden" name="request" value="{html.escape(pending_id)}">
  <label for="username">Sign in as (test Hub user)</label>
  <input id="username" name="username" list="users" autocomplete="off" required>
  <datalist id="users">{options}</datalist>
  <div class="buttons">
    <button type="submit" name="decision" value="authorize">Authorize</button>
    <button type="submit" name="decision" value="deny" formnovalidate>Deny</button>
  </div>
</form>
"""


def _html_page(title: str, body: str, status: int = 200) -> Response:
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} - test Hub</title>
<style>
body {{ font-family: sans-serif; max-width: 32rem; margin: 3rem auto; color: #1f2937; }}
label {{ display: block; margin: 1rem 0 0.3rem; }}
input {{ font-size: 1rem; padding: 0.4rem; width: 100%; box-sizing: border-box; }}
.buttons {{ margin-top: 1rem; display: flex; gap: 0.5rem; }}
button {{ font-size: 1rem; padding: 0.4rem 1rem; }}
.error {{ color: #b91c1c; }}
</style></head>
<body><h1>{html.escape(title)}</h1>{body}</body></html>"""
    return Response(status, {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}, page.encode())
