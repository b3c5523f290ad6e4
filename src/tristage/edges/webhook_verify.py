"""Webhook signature verification and signing, by the source's provider.

Each provider (`edges/webhook_providers/`: `clerk` and `standard` with
`standardwebhooks`, `stripe` with `stripe.WebhookSignature`) compares signatures in
constant time, accepts several signatures in one header (the provider signs with the
old and the new secret while rotating) and refuses a timestamp more than five minutes
away from now, old or ahead. A secret variable may also hold several secrets
separated by spaces or commas (old and new, during a rotation on our side).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from . import webhook_providers as providers
from .webhook_providers import (
    TOLERANCE_SECONDS,
    SecretFormatError,
    UnknownProvider,
    VerificationError,
    Verified,
)

__all__ = [
    "TOLERANCE_SECONDS",
    "SecretFormatError",
    "UnknownProvider",
    "VerificationError",
    "Verified",
    "lower_headers",
    "sign",
    "split_secrets",
    "verify",
]


def split_secrets(value: str) -> list[str]:
    """`"whsec_old whsec_new"` -> both secrets (any of them verifies)."""
    return [s for s in re.split(r"[\s,]+", value.strip()) if s]


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names folded to lower case; of two spellings of one name the first wins."""
    out: dict[str, str] = {}
    for k, v in headers.items():
        out.setdefault(k.lower(), v)
    return out


def verify(kind: str, secrets: Sequence[str], headers: Mapping[str, str], body: bytes) -> Verified:
    """Check the delivery's signature with any of `secrets`; raise `VerificationError`."""
    if not secrets:
        raise ValueError("no secret to verify with")
    return providers.get(kind).verify(secrets, lower_headers(headers), body)


def sign(kind: str, secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The signature headers a provider would send for `body` (send-test, re-signing)."""
    return providers.get(kind).sign(secret, message_id, timestamp, body)
