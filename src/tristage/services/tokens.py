"""API tokens with roles, and the sessions opened with them (the `api_tokens` and
`api_sessions` tables: this module holds all of their SQL).

A token is `tst_<id>_<secret>`: `id` (12 hex characters) finds the row, `secret`
(32 random bytes, URL-safe base64) is checked against its stored sha256 with a
constant-time comparison. The token is shown once, at creation; the store keeps
only the hash. Roles are ordered: `viewer` reads, `deployer` also deploys,
promotes, rolls back, redeploys, backs up and replays webhooks, `admin` also
manages variables, tokens and restores.

A session is a random value whose sha256 is stored with the token it was opened
with; revoking the token ends its sessions. (The dashboard keeps it in a cookie;
the cookie, its CSRF token and the HTTP parts are in `http/`.)

A sign-in link (`tristage open`) carries a one-time code for the local owner: whoever
can run the CLI on the platform home. It opens a session of the admin token
`local-owner` (created on first use; its secret is never shown, revoking it ends the
owner's sessions) once, within `LINK_TTL` seconds; only the code's sha256 is stored
(`api_signin_links`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ..errors import Conflict, Forbidden, NotFound, Unauthorized, UsageError

if TYPE_CHECKING:
    from ..api import Tristage

TOKEN_PREFIX = "tst_"
ID_HEX = 12
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}\Z")
TOKEN_RE = re.compile(r"^tst_([0-9a-f]{12})_([A-Za-z0-9_-]{43})\Z")
SESSION_TTL = 12 * 3600.0
TOUCH_EVERY = 60.0  # last_used_at is written at most once a minute per token
LINK_TTL = 300.0  # a sign-in link is valid for five minutes, once
OWNER_TOKEN = "local-owner"


class Role(StrEnum):
    viewer = "viewer"
    deployer = "deployer"
    admin = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_RANK = {Role.viewer: 0, Role.deployer: 1, Role.admin: 2}


@dataclass(frozen=True)
class TokenInfo:
    id: str
    name: str
    role: Role
    created_at: float
    created_by: str
    last_used_at: float | None

    @property
    def actor(self) -> str:
        """How the audit log names what this token does."""
        return f"token:{self.name}"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role.value,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "last_used_at": self.last_used_at,
        }


@dataclass(frozen=True)
class NewToken:
    info: TokenInfo
    token: str  # the only time the secret exists outside the caller's hands


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise UsageError(f"unknown role {value!r}", "use viewer, deployer or admin") from None


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise UsageError(
            f"{name!r} is not a token name",
            "use 1-63 lowercase letters, digits, '.', '_' or '-' (e.g. ci-deployer)",
        )
    return name


def require(info: TokenInfo, needed: Role) -> None:
    """Forbidden unless the token's role allows what needs `needed`."""
    if not info.role.allows(needed):
        raise Forbidden(
            f"token {info.name!r} has role {info.role.value}; this needs {needed.value}",
            "ask an admin for a token with that role",
        )


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _info(row: dict[str, Any]) -> TokenInfo:
    return TokenInfo(
        id=row["id"],
        name=row["name"],
        role=Role(row["role"]),
        created_at=row["created_at"],
        created_by=row["created_by"],
        last_used_at=row["last_used_at"],
    )


class TokenService:
    """Token and session storage over the platform's state store."""

    def __init__(self, api: Tristage) -> None:
        self.api = api

    # -- tokens ------------------------------------------------------------
    def create(self, name: str, role: Role | str) -> NewToken:
        check_name(name)
        role = role if isinstance(role, Role) else parse_role(role)
        store = self.api.store
        token_id = secrets.token_hex(ID_HEX // 2)
        secret = secrets.token_urlsafe(32)
        now = time.time()
        with store.transaction():
            if store.query_one("SELECT 1 FROM api_tokens WHERE name=?", (name,)):
                raise Conflict(
                    f"a token named {name!r} already exists",
                    f"revoke it first ('tristage token revoke {name}') or pick another name",
                )
            store.execute(
                "INSERT INTO api_tokens (id, name, role, secret_sha256, created_at, created_by)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (token_id, name, role.value, _sha256(secret), now, self.api.actor),
            )
            self.api.audit.record("token.create", target=name, details={"role": role.value})
        info = TokenInfo(token_id, name, role, now, self.api.actor, None)
        return NewToken(info, f"{TOKEN_PREFIX}{token_id}_{secret}")

    def list(self) -> list[TokenInfo]:
        return [_info(r) for r in self.api.store.query("SELECT * FROM api_tokens ORDER BY name")]

    def get(self, name: str) -> TokenInfo:
        row = self.api.store.query_one("SELECT * FROM api_tokens WHERE name=?", (name,))
        if row is None:
            raise NotFound(f"no token named {name!r}", "list them with 'tristage token ls'")
        return _info(row)

    def revoke(self, name: str) -> TokenInfo:
        store = self.api.store
        with store.transaction():
            info = self.get(name)
            store.execute("DELETE FROM api_sessions WHERE token_id=?", (info.id,))
            store.execute("DELETE FROM api_signin_links WHERE token_id=?", (info.id,))
            store.execute("DELETE FROM api_tokens WHERE id=?", (info.id,))
            self.api.audit.record("token.revoke", target=name, details={"role": info.role.value})
        return info

    def authenticate(self, token: str) -> TokenInfo:
        """The active token `token` is, or Unauthorized (never says which part was wrong)."""
        m = TOKEN_RE.match(token.strip())
        if m is None:
            raise Unauthorized("not a tristage API token", "tokens look like tst_<id>_<secret>")
        row = self.api.store.query_one("SELECT * FROM api_tokens WHERE id=?", (m.group(1),))
        expected = row["secret_sha256"] if row is not None else _sha256("no such token")
        ok = hmac.compare_digest(expected, _sha256(m.group(2)))
        if row is None or not ok:
            raise Unauthorized(
                "unknown or revoked token", "create one with 'tristage token create'"
            )
        info = _info(row)
        self._touch(info)
        return info

    def _touch(self, info: TokenInfo) -> None:
        now = time.time()
        if info.last_used_at is None or now - info.last_used_at > TOUCH_EVERY:
            self.api.store.execute(
                "UPDATE api_tokens SET last_used_at=? WHERE id=?", (now, info.id)
            )

    # -- sign-in links ----------------------------------------------------------
    def owner(self) -> TokenInfo:
        """The local owner's admin token (created, with a secret nobody sees, if missing)."""
        row = self.api.store.query_one("SELECT * FROM api_tokens WHERE name=?", (OWNER_TOKEN,))
        if row is None:
            return self.create(OWNER_TOKEN, Role.admin).info
        info = _info(row)
        if info.role != Role.admin:
            raise Conflict(
                f"the token {OWNER_TOKEN!r} has role {info.role.value}, not admin",
                f"revoke it ('tristage token revoke {OWNER_TOKEN}'); 'tristage open' then "
                "creates the owner's admin token again",
            )
        return info

    def sign_in_link(self, ttl: float = LINK_TTL) -> str:
        """A one-time code that opens one session of the local owner within `ttl` seconds."""
        info = self.owner()
        code = secrets.token_urlsafe(32)
        now = time.time()
        store = self.api.store
        with store.transaction():
            store.execute("DELETE FROM api_signin_links WHERE expires_at < ?", (now - ttl,))
            store.execute(
                "INSERT INTO api_signin_links (code_sha256, token_id, created_at, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (_sha256(code), info.id, now, now + ttl),
            )
            self.api.audit.record("token.sign_in_link", target=info.name,
                                  details={"valid_seconds": ttl})  # fmt: skip
        return code

    def redeem_link(self, code: str) -> TokenInfo:
        """The token a sign-in link's code signs in as, spending the code; Unauthorized if
        it is unknown, used or expired (one message for all three)."""
        refused = Unauthorized(
            "this sign-in link is used, expired or unknown",
            "run 'tristage open' again for a new link (each works once, for a few minutes)",
        )
        if not code or len(code) > 128 or not code.isascii():
            raise refused
        now = time.time()
        store = self.api.store
        with store.transaction():
            spent = store.execute(
                "UPDATE api_signin_links SET used_at=? WHERE code_sha256=? AND used_at IS NULL"
                " AND expires_at >= ?",
                (now, _sha256(code), now),
            )
            if spent != 1:
                raise refused
            row = store.query_one(
                "SELECT t.* FROM api_signin_links l JOIN api_tokens t ON t.id = l.token_id"
                " WHERE l.code_sha256=?",
                (_sha256(code),),
            )
            if row is None:
                raise refused
            info = _info(row)
            self.api.audit.record("token.sign_in", target=info.name, details={"via": "link"})
        return info

    # -- sessions ------------------------------------------------------------
    def open_session(self, info: TokenInfo, ttl: float = SESSION_TTL) -> str:
        """A new session of the token `info`: its id, which only the caller holds."""
        sid = secrets.token_urlsafe(32)
        now = time.time()
        store = self.api.store
        with store.transaction():
            store.execute("DELETE FROM api_sessions WHERE expires_at < ?", (now,))
            store.execute(
                "INSERT INTO api_sessions (id_sha256, token_id, created_at, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (_sha256(sid), info.id, now, now + ttl),
            )
        return sid

    def session(self, sid: str) -> TokenInfo:
        """The token of the live session `sid`, or Unauthorized."""
        if not sid or len(sid) > 128 or not sid.isascii():
            raise Unauthorized("no dashboard session", "sign in with an API token")
        row = self.api.store.query_one(
            "SELECT t.* , s.expires_at FROM api_sessions s JOIN api_tokens t"
            " ON t.id = s.token_id WHERE s.id_sha256=?",
            (_sha256(sid),),
        )
        if row is None or row["expires_at"] < time.time():
            raise Unauthorized("the dashboard session ended", "sign in again")
        info = _info(row)
        self._touch(info)
        return info

    def close_session(self, sid: str) -> None:
        if sid and sid.isascii():
            self.api.store.execute("DELETE FROM api_sessions WHERE id_sha256=?", (_sha256(sid),))
