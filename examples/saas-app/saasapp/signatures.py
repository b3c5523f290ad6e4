"""Svix / Standard Webhooks signature verification (what Clerk signs its webhooks with).

The signed content is ``{id}.{timestamp}.{raw body}``; the key is the base64 part of the
``whsec_...`` secret; the ``svix-signature`` header holds one or more space-separated
``v1,<base64 HMAC-SHA256>`` entries (several during a secret rotation). A delivery is
accepted when any ``v1`` entry matches (compared in constant time) and its timestamp is
within five minutes of now, both ways, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

TOLERANCE_SECONDS = 5 * 60
PREFIX = "whsec_"


class SignatureError(ValueError):
    """The delivery is not authentic (or not fresh); the message says why, never a secret."""


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; ValueError when it is not one."""
    text = secret.strip()
    if not text.startswith(PREFIX):
        raise ValueError("a Svix signing secret starts with 'whsec_' (copy it from the dashboard)")
    try:
        key = base64.b64decode(text[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part after 'whsec_' is not base64") from None
    if len(key) < 16:
        raise ValueError("the signing key is shorter than 16 bytes")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of a delivery."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _header(headers: Mapping[str, str], name: str) -> str:
    lowered = {k.lower(): v for k, v in headers.items()}
    return (lowered.get(f"svix-{name}") or lowered.get(f"webhook-{name}") or "").strip()


def verify(
    key: bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> str:
    """Check a delivery; returns its message id (``svix-id``) or raises SignatureError."""
    msg_id = _header(headers, "id")
    stamp = _header(headers, "timestamp")
    signatures = _header(headers, "signature")
    missing = [
        n for n, v in (("id", msg_id), ("timestamp", stamp), ("signature", signatures)) if not v
    ]
    if missing:
        raise SignatureError("missing header(s): " + ", ".join(f"svix-{n}" for n in missing))
    try:
        timestamp = int(stamp)
    except ValueError:
        raise SignatureError("svix-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if timestamp < current - tolerance:
        raise SignatureError("timestamp too old (more than 5 minutes)")
    if timestamp > current + tolerance:
        raise SignatureError("timestamp too far in the future (more than 5 minutes)")
    expected = sign(key, msg_id, timestamp, body).encode()
    matched = False
    for entry in signatures.split():
        version, _, _ = entry.partition(",")
        if version != "v1":
            continue
        # check every entry: the time taken does not depend on which one matched
        matched |= hmac.compare_digest(expected, entry.encode())
    if not matched:
        raise SignatureError("no matching v1 signature")
    return msg_id
