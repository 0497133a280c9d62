"""`HubServer`: the test Hub on a loopback port, served from a background thread."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from hubquant.testhub import pages
from hubquant.testhub.accounts import Account, AccountStore, default_accounts
from hubquant.testhub.app import Config, HubApp
from hubquant.testhub.oauth import OAuthClient, OAuthProvider
from hubquant.testhub.transport import HubHTTPServer, Request, Response
from hubquant.testhub.webhooks import Webhooks

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
DEFAULT_LFS_CHUNK_SIZE = 16 * 1024 * 1024


class HubServer:
    """A local Hugging Face Hub that the real `huggingface_hub` client can talk to.

    Everything (accounts, repos, commits, LFS objects, settings, gated grants)
    lives under `state_dir`, so a new server on the same folder finds it again.
    NOTE: run one server per folder at a time, because the locks that keep
    concurrent commits apart live in this process.

    `accounts=None` adds the accounts of `default_accounts()` that the folder
    does not have yet; a list adds or replaces exactly those accounts.

    A gated repo ("auto" or "manual") serves its files only to its owner, the
    owner's organization and users given `grant_gated_access`. The server has no
    flow for requesting access.

    The server is also the OAuth/OpenID provider a Space signs in with: see
    `register_oauth_app` and `hubquant.testhub.oauth`.

    `page_size` sets the entries per page of paginated listings, and
    `lfs_chunk_size` the part size of multipart LFS uploads (objects larger
    than one part are uploaded in parts). Both can be changed while running.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        accounts: list[Account] | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        lfs_chunk_size: int = DEFAULT_LFS_CHUNK_SIZE,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._host = host
        self._port = port
        self._accounts = AccountStore(self.state_dir / "accounts.json")
        if accounts is None:
            for account in default_accounts():
                if self._accounts.get(account.name) is None:
                    self._accounts.add(account)
        else:
            for account in accounts:
                self._accounts.add(account)
        config = Config(
            base_url="",
            page_size=DEFAULT_PAGE_SIZE,
            lfs_chunk_size=DEFAULT_LFS_CHUNK_SIZE,
        )
        self._app = HubApp(self.state_dir, self._accounts, config)
        # Webhooks wrap the app's handler: they serve /api/settings/webhooks and
        # send events after successful repo changes.
        self._webhooks = Webhooks(self.state_dir, self._app)
        self._oauth = OAuthProvider(
            self.state_dir / "oauth.json", self._accounts, lambda: self._app.config.base_url
        )
        self.page_size = page_size
        self.lfs_chunk_size = lfs_chunk_size
        self._httpd: HubHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> HubServer:
        """Bind the port and serve in a daemon thread. Returns self."""
        if self._httpd is not None:
            raise RuntimeError(f"The test Hub is already running at {self.url}.")
        self._httpd = HubHTTPServer(
            (self._host, self._port), self._handle, self._app.faults
        )
        host, port = self._httpd.server_address[:2]
        self._app.config.base_url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"testhub-{port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("Test Hub started at %s with state in %s", self.url, self.state_dir)
        return self

    def stop(self) -> None:
        """Stop serving and close open connections. Safe to call twice."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        self._webhooks.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
        logger.info("Test Hub at %s stopped", self._app.config.base_url)
        self._httpd = None
        self._thread = None

    def _handle(self, request: Request) -> Response:
        # OAuth paths come first: the token endpoint authenticates clients with
        # Basic credentials, which the Hub API would reject as an invalid token.
        # Then the HTML repo pages, which only browsers request.
        response = self._oauth.handle(request)
        if response is None:
            response = pages.handle(self._app, request, self._oauth.browser_user(request))
        return response if response is not None else self._webhooks.handle(request)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL such as "http://127.0.0.1:54321", for `HfApi(endpoint=...)`."""
        if self._httpd is None:
            raise RuntimeError("The test Hub is not running; call start() first.")
        return self._app.config.base_url

    # -- accounts and access -------------------------------------------------

    def add_account(self, account: Account) -> None:
        """Add or replace a user or organization; it is saved in the state folder."""
        self._accounts.add(account)

    def accounts(self) -> list[Account]:
        """Return all users and organizations, sorted by name."""
        return sorted(self._accounts.all(), key=lambda account: account.name.lower())

    def token_for(self, username: str, write: bool = True) -> str:
        """Return a write (or read) token of `username`, creating one if it has none."""
        return self._accounts.token_for(username, write=write)

    def grant_gated_access(
        self, repo_id: str, username: str, *, repo_type: str = "model"
    ) -> None:
        """Let `username` download files of the gated repo `repo_id`."""
        repo = self._app.store.get(repo_type, repo_id)
        if repo is None:
            raise KeyError(f"No {repo_type} repo {repo_id!r} on the test Hub.")
        if self._accounts.get(username) is None:
            raise KeyError(
                f"No account named {username!r}; add it with add_account first."
            )
        with repo.lock:
            if username.lower() not in (
                name.lower() for name in repo.settings.gated_grants
            ):
                repo.settings.gated_grants.append(username)
                repo.save()

    def register_oauth_app(
        self, name: str, redirect_uris: list[str], scopes: list[str]
    ) -> OAuthClient:
        """Create an OAuth app, as the Hub does for a Space with ``hf_oauth: true``.

        `redirect_uris` are matched without their query, and `scopes` are the
        Space's ``hf_oauth_scopes`` (``openid`` and ``profile`` are added). A Space
        reads the result from ``OAUTH_CLIENT_ID``, ``OAUTH_CLIENT_SECRET`` and
        ``OAUTH_SCOPES``, and the provider from ``OPENID_PROVIDER_URL`` (`url`).
        """
        return self._oauth.register_client(name, redirect_uris, scopes)

    # -- test controls -------------------------------------------------------

    @property
    def webhooks(self) -> Webhooks:
        """Registered webhooks, their delivery log and delivery settings."""
        return self._webhooks

    def inject_fault(
        self,
        path_regex: str,
        *,
        method: str | None = None,
        status: int | None = None,
        retry_after: int | None = None,
        drop_connection: bool = False,
        times: int = 1,
    ) -> None:
        """Fail the next `times` requests whose path (no query) matches `path_regex`.

        The failure is `status` (500 by default), a 429 with a `Retry-After` of
        `retry_after` seconds when only `retry_after` is given, or, with
        `drop_connection`, a socket closed without any response. The request
        body is read first, so the client sees the failure only after sending.
        """
        self._app.faults.add(
            path_regex,
            method=method,
            status=status,
            retry_after=retry_after,
            drop_connection=drop_connection,
            times=times,
        )

    def clear_faults(self) -> None:
        self._app.faults.clear()

    @property
    def requests_log(self) -> list[tuple[str, str, int | None]]:
        """A copy of (method, path, status) per request, newest last.

        The path is as sent, without the query string. The status is None for a
        dropped connection or a client that left in the middle of its request.
        """
        if self._httpd is None:
            return []
        return list(self._httpd.requests_log)

    @property
    def page_size(self) -> int:
        return self._app.config.page_size

    @page_size.setter
    def page_size(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"page_size must be at least 1, got {value}.")
        self._app.config.page_size = value

    @property
    def lfs_chunk_size(self) -> int:
        return self._app.config.lfs_chunk_size

    @lfs_chunk_size.setter
    def lfs_chunk_size(self, value: int) -> None:
        if value < 1024:
            raise ValueError(
                f"lfs_chunk_size must be at least 1024 bytes, got {value}."
            )
        self._app.config.lfs_chunk_size = value
