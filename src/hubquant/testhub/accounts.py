"""Users, organizations and access tokens of the local test Hub."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hubquant.testhub.fsutil import write_json_atomic

AccountKind = Literal["user", "org"]
TokenRole = Literal["write", "read"]

# Same character set the Hub allows in a namespace.
_ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,94}[A-Za-z0-9])?$")


@dataclass
class Account:
    """A user or an organization.

    Users own tokens. Organizations own no tokens and list their members; every
    member may write to the organization's repos.
    """

    name: str
    kind: AccountKind = "user"
    members: list[str] = field(default_factory=list)
    tokens: dict[str, TokenRole] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _ACCOUNT_NAME.match(self.name):
            raise ValueError(
                f"Invalid account name {self.name!r}: use letters, digits and inner"
                " dashes, at most 96 characters."
            )
        if self.kind not in ("user", "org"):
            raise ValueError(
                f"Invalid account kind {self.kind!r}: expected 'user' or 'org'."
            )
        if self.kind == "org" and self.tokens:
            raise ValueError(
                f"Organization {self.name!r} cannot own tokens; give them to a member."
            )
        if self.kind == "user" and self.members:
            raise ValueError(
                f"User {self.name!r} cannot have members; only organizations do."
            )
        for token, role in self.tokens.items():
            if role not in ("write", "read"):
                raise ValueError(
                    f"Invalid role {role!r} for a token of {self.name!r}:"
                    " expected 'write' or 'read'."
                )
            if not token:
                raise ValueError(f"Empty token for {self.name!r}.")

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "members": list(self.members),
            "tokens": dict(self.tokens),
        }

    @classmethod
    def from_json(cls, data: dict) -> Account:
        return cls(
            name=data["name"],
            kind=data.get("kind", "user"),
            members=list(data.get("members", [])),
            tokens=dict(data.get("tokens", {})),
        )


def default_accounts() -> list[Account]:
    """Return the fixed test accounts documented in `hubquant.testhub`."""
    users = [
        Account(name, tokens={f"hf_{name}_write": "write", f"hf_{name}_read": "read"})
        for name in ("alice", "bob", "carol")
    ]
    orgs = [
        Account("microsoft", kind="org", members=["alice"]),
        Account("hubquant-org", kind="org", members=["bob"]),
    ]
    return users + orgs


def load_accounts_file(path: Path) -> list[Account]:
    """Read a JSON list of accounts (the format `Account.to_json` writes)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(
            f"Invalid accounts file {path}: expected a JSON list of accounts."
        )
    return [Account.from_json(item) for item in data]


@dataclass(frozen=True)
class Identity:
    """The account behind a request's token, and what the token may do."""

    user: str
    role: TokenRole
    token: str

    @property
    def can_write(self) -> bool:
        return self.role == "write"


class AccountStore:
    """Accounts kept in `accounts.json` under the state folder.

    Thread-safe. Every change is written to disk before the call returns.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._accounts: dict[str, Account] = {}
        if path.exists():
            for account in load_accounts_file(path):
                self._accounts[account.name.lower()] = account

    def add(self, account: Account) -> None:
        """Add or replace an account (matched by case-insensitive name)."""
        with self._lock:
            for token in account.tokens:
                owner = self._token_owner(token)
                if owner is not None and owner.name.lower() != account.name.lower():
                    raise ValueError(
                        f"Token {token!r} already belongs to {owner.name!r}."
                    )
            self._accounts[account.name.lower()] = account
            self._save()

    def get(self, name: str) -> Account | None:
        with self._lock:
            return self._accounts.get(name.lower())

    def all(self) -> list[Account]:
        with self._lock:
            return list(self._accounts.values())

    def identify(self, token: str) -> Identity | None:
        """Return who owns `token`, or None when no account has it."""
        with self._lock:
            owner = self._token_owner(token)
            if owner is None:
                return None
            return Identity(user=owner.name, role=owner.tokens[token], token=token)

    def orgs_of(self, username: str) -> list[Account]:
        with self._lock:
            return [
                account
                for account in self._accounts.values()
                if account.kind == "org"
                and username.lower() in (member.lower() for member in account.members)
            ]

    def can_write_namespace(self, username: str, namespace: str) -> bool:
        """Return True when `username` may create or change repos under `namespace`."""
        if username.lower() == namespace.lower():
            return True
        return any(
            org.name.lower() == namespace.lower() for org in self.orgs_of(username)
        )

    def token_for(self, username: str, *, write: bool = True) -> str:
        """Return a token of `username` with the given role, creating one if needed."""
        role: TokenRole = "write" if write else "read"
        with self._lock:
            account = self._accounts.get(username.lower())
            if account is None:
                raise KeyError(
                    f"No account named {username!r}; add it with add_account first."
                )
            if account.kind != "user":
                raise ValueError(
                    f"{username!r} is an organization; tokens belong to users."
                )
            for token, token_role in account.tokens.items():
                if token_role == role:
                    return token
            token = f"hf_{account.name.lower()}_{role}"
            suffix = 1
            while self._token_owner(token) is not None:
                suffix += 1
                token = f"hf_{account.name.lower()}_{role}{suffix}"
            account.tokens[token] = role
            self._save()
            return token

    def _token_owner(self, token: str) -> Account | None:
        for account in self._accounts.values():
            if token in account.tokens:
                return account
        return None

    def _save(self) -> None:
        data = [account.to_json() for account in self._accounts.values()]
        write_json_atomic(self._path, data)
