"""Protected previews: who may see a host that requires sign-in (pure functions).

A protected host (`[environments.NAME] protect = "password"` or `"token"`) answers a
visitor without a valid access cookie with a small sign-in page. Signing in (the
environment's password, or any tristage API token) sets a cookie scoped to that host
(no `Domain`, so no other host shares it), `HttpOnly`, `SameSite=Lax`, `Secure` over
HTTPS, valid for `COOKIE_TTL`. Its value is signed with the platform's access key
(HMAC-SHA256 over the host, the environment, the expiry and a fingerprint of what it
was signed in with, so a changed password signs everyone out). Webhook ingest paths
stay open, so providers still reach them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

COOKIE_NAME = "__tristage_access"
COOKIE_TTL = 7 * 24 * 3600  # seconds
PBKDF2_ROUNDS = 200_000
PASSWORD_VARIABLE = "TRISTAGE_ACCESS_PASSWORD"
EXEMPT_PREFIXES = ("/.tristage/webhooks/", "/.tristage/git", "/.tristage/sign-in")
SIGN_IN_PATH = "/.tristage/sign-in"


@dataclass(frozen=True)
class Access:
    """How a host is protected: `kind` is "password" or "token"; `password_hash` is
    `pbkdf2$ROUNDS$SALT$HASH` (hex) for a password (None when none is set yet: no one
    can sign in with a password)."""

    kind: str
    password_hash: str | None = None

    @property
    def fingerprint(self) -> str:
        """Changes when the password does (signs existing cookies out)."""
        return hashlib.sha256((self.password_hash or self.kind).encode()).hexdigest()[:16]


def hash_password(password: str, salt: bytes | None = None, rounds: int = PBKDF2_ROUNDS) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, rounds)
    return f"pbkdf2${rounds}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str | None) -> bool:
    """Constant-time check of `password` against `hash_password`'s output."""
    if not stored:
        return False
    try:
        scheme, rounds, salt, digest = stored.split("$")
        if scheme != "pbkdf2":
            return False
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(rounds))
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


def exempt(path: str) -> bool:
    """Paths a protected host serves without sign-in (webhook ingest, the sign-in page)."""
    return path.startswith(EXEMPT_PREFIXES)


def _mac(key: bytes, host: str, environment: str, expiry: int, fingerprint: str) -> str:
    msg = f"v1|{host}|{environment}|{expiry}|{fingerprint}".encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def make_cookie(
    key: bytes, host: str, environment: str, access: Access, now: float, https: bool
) -> str:
    """The `Set-Cookie` header value for a visitor who just signed in to `host`."""
    expiry = int(now) + COOKIE_TTL
    value = f"v1.{expiry}.{_mac(key, host, environment, expiry, access.fingerprint)}"
    secure = "; Secure" if https else ""
    return f"{COOKIE_NAME}={value}; Max-Age={COOKIE_TTL}; Path=/; HttpOnly; SameSite=Lax{secure}"


def cookie_value(cookie_header: str) -> str | None:
    """Our cookie's value in a `Cookie` header, if there."""
    for part in cookie_header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE_NAME:
            return value
    return None


def check_cookie(
    key: bytes, value: str | None, host: str, environment: str, access: Access, now: float
) -> bool:
    if not value:
        return False
    try:
        version, expiry_text, mac = value.split(".")
        expiry = int(expiry_text)
    except ValueError:
        return False
    if version != "v1" or expiry < now:
        return False
    expected = _mac(key, host, environment, expiry, access.fingerprint)
    return hmac.compare_digest(expected, mac)


def safe_next(target: str) -> str:
    """Where to go after signing in: a path on the same host, never another site."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="robots" content="noindex"><title>Sign in</title>
<style>body{{font-family:system-ui,sans-serif;max-width:24rem;margin:4rem auto;padding:0 1rem}}
input{{width:100%;padding:.5rem;margin:.25rem 0 1rem;box-sizing:border-box}}
button{{padding:.5rem 1rem}}.e{{color:#b00}}</style></head>
<body><h1>Sign in</h1><p><code>{host}</code> is a protected preview.</p>{message}
<form method="post" action="{action}"><input type="hidden" name="next" value="{next}">
<label for="secret">{label}</label>
<input id="secret" name="secret" type="password" autocomplete="current-password" autofocus required>
<button type="submit">Sign in</button></form><hr><p>tristage</p></body></html>
"""


def sign_in_page(host: str, next_path: str, kind: str, error: str | None = None) -> bytes:
    """The sign-in page of a protected host (`error`: why the last attempt failed)."""
    from html import escape

    label = "Password or tristage API token" if kind == "password" else "tristage API token"
    message = f'<p class="e">{escape(error)}</p>' if error else ""
    return _PAGE.format(
        host=escape(host),
        message=message,
        action=SIGN_IN_PATH,
        next=escape(safe_next(next_path), quote=True),
        label=label,
    ).encode()
