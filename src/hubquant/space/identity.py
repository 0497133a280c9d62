"""The Hub account behind an OAuth token, and the namespaces it may publish to."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from hubquant.errors import TransientError, UsageError

# How long a token's account is remembered before the Hub is asked again.
CACHE_SECONDS = 300.0
# Organisation roles that may create repos (the Hub's "read" role may not).
WRITE_ROLES = ("admin", "write", "contributor")


@dataclass(frozen=True)
class HubUser:
    """A signed-in user and the namespaces the Space may publish releases to."""

    name: str
    namespaces: tuple[str, ...]


class UserDirectory:
    """Resolves tokens to users with ``whoami``, keyed by the token's SHA-256 only."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, HubUser]] = {}

    def user_for(self, token: str) -> HubUser:
        """Return the account of `token`; raise UsageError when the Hub rejects it."""
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and now - cached[0] < CACHE_SECONDS:
                return cached[1]
        try:
            info = HfApi(endpoint=self.endpoint, token=token).whoami()
        except HfHubHTTPError as error:
            status = error.response.status_code if error.response is not None else None
            if status == 401:
                raise UsageError("the Hub rejected your sign-in token; sign out and sign in again") from None
            raise TransientError(f"the Hub's whoami request failed ({error}); try again in a moment") from None
        orgs = [org["name"] for org in info.get("orgs", []) if org.get("roleInOrg", "write") in WRITE_ROLES]
        user = HubUser(name=info["name"], namespaces=(info["name"], *orgs))
        with self._lock:
            self._cache[key] = (now, user)
        return user
