"""The HTTP side of authentication: the bearer header and the dashboard's CSRF tokens.

Tokens, roles and sessions (and their storage) are the Python API's
(`Tristage.tokens`); this module only reads them off requests. The CSRF token of a
session is derived from the session id (HMAC), so it needs no storage and reveals
nothing about the cookie.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import Request

from ..errors import Unauthorized


def bearer(request: Request) -> str:
    """The token of an `Authorization: Bearer ...` header, or Unauthorized."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized(
            "this endpoint needs an API token",
            "send 'Authorization: Bearer tst_...' (create one with 'tristage token create')",
        )
    return value.strip()


def csrf_token(sid: str) -> str:
    """The CSRF token of a session (or of a pre-login cookie)."""
    return hmac.new(sid.encode("ascii"), b"tristage-csrf", hashlib.sha256).hexdigest()


def csrf_ok(sid: str, presented: str) -> bool:
    if not sid or not presented or not sid.isascii() or not presented.isascii():
        return False
    return hmac.compare_digest(csrf_token(sid), presented)
