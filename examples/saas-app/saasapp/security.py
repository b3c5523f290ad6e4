"""Signed session cookies (SESSION_SECRET) and CSRF tokens bound to them (CSRF_SECRET).

A session cookie is ``<payload>.<mac>``: the payload is base64url JSON with a random
session id and its issue time, the mac an HMAC-SHA256 of the payload under SESSION_SECRET.
A form's CSRF token is HMAC-SHA256(CSRF_SECRET, "csrf:" + session id): another session's
token, a made-up one, or a token without its cookie is refused. Comparisons are constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

COOKIE_NAME = "saas_session"
SESSION_MAX_AGE = 7 * 24 * 3600
MIN_SECRET_LENGTH = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: str, message: str) -> str:
    return _b64(hmac.new(key.encode(), message.encode(), hashlib.sha256).digest())


@dataclass(frozen=True)
class Session:
    sid: str
    issued_at: int


class Sessions:
    def __init__(self, session_secret: str, csrf_secret: str) -> None:
        self._session_key = session_secret
        self._csrf_key = csrf_secret

    def new(self) -> tuple[Session, str]:
        """A fresh session and its cookie value."""
        session = Session(secrets.token_urlsafe(18), int(time.time()))
        payload = _b64(json.dumps({"sid": session.sid, "iat": session.issued_at}).encode())
        return session, f"{payload}.{_mac(self._session_key, payload)}"

    def load(self, cookie_value: str | None, *, now: float | None = None) -> Session | None:
        """The session of a cookie value, or None when absent, forged or expired."""
        if not cookie_value or cookie_value.count(".") != 1:
            return None
        payload, mac = cookie_value.split(".")
        if not hmac.compare_digest(_mac(self._session_key, payload).encode(), mac.encode()):
            return None
        try:
            data = json.loads(_unb64(payload))
            sid, iat = str(data["sid"]), int(data["iat"])
        except (ValueError, KeyError, TypeError):
            return None
        current = time.time() if now is None else now
        if not 0 <= current - iat <= SESSION_MAX_AGE:
            return None
        return Session(sid, iat)

    def csrf_token(self, session: Session) -> str:
        return _mac(self._csrf_key, "csrf:" + session.sid)

    def check_csrf(self, session: Session | None, token: str | None) -> bool:
        if session is None or not token:
            return False
        return hmac.compare_digest(self.csrf_token(session).encode(), token.encode())
