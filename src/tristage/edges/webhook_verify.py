"""Webhook signature verification and signing, with the providers' own libraries.

- Clerk (signed by Svix) and Standard Webhooks: `standardwebhooks` (the library the
  `svix` package delegates to; Svix's `svix-*` headers are read as the `webhook-*` ones).
- Stripe: `stripe.WebhookSignature`.

Both compare signatures in constant time, accept several signatures in one header
(the provider signs with the old and the new secret while rotating) and refuse a
timestamp more than five minutes away from now, old or ahead (Stripe's library
checks only the past; the future is checked here). A secret variable may also hold
several secrets separated by spaces or commas (old and new, during a rotation on our side).
"""

from __future__ import annotations

import binascii
import datetime as dt
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ..domain.webhooks import Kind

TOLERANCE_SECONDS = 300


class VerificationError(Exception):
    """A request that is not a valid, fresh, signed delivery. Never carries the body."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status  # 400 malformed or missing, 401 signature or timestamp
        self.reason = reason  # a short counter key: missing_header, malformed, ...
        self.message = message


class SecretFormatError(Exception):
    """The configured secret cannot be used (not a platform problem of the request)."""


@dataclass(frozen=True)
class Verified:
    message_id: str
    event_type: str | None
    # the signature headers that verified, under the names the app's library reads
    # (Clerk's SDK: `svix-*`, whatever branding came in)
    forward: dict[str, str] = field(default_factory=dict)


def split_secrets(value: str) -> list[str]:
    """`"whsec_old whsec_new"` -> both secrets (any of them verifies)."""
    return [s for s in re.split(r"[\s,]+", value.strip()) if s]


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names folded to lower case; of two spellings of one name the first wins."""
    out: dict[str, str] = {}
    for k, v in headers.items():
        out.setdefault(k.lower(), v)
    return out


def verify(kind: Kind, secrets: Sequence[str], headers: Mapping[str, str], body: bytes) -> Verified:
    """Check the delivery's signature with any of `secrets`; raise `VerificationError`."""
    if not secrets:
        raise ValueError("no secret to verify with")
    h = _lower(headers)
    if kind == "stripe":
        return _verify_stripe(secrets, h, body)
    return _verify_svix(kind, secrets, h, body)


# -- Svix / Standard Webhooks -------------------------------------------------


@lru_cache(maxsize=64)
def _webhook(secret: str) -> Webhook:
    return Webhook(secret)


def _verify_svix(kind: Kind, secrets: Sequence[str], h: dict[str, str], body: bytes) -> Verified:
    names = ("id", "timestamp", "signature")
    prefixes = ("svix-", "webhook-") if kind == "clerk" else ("webhook-",)
    values: dict[str, str] = {}
    for name in names:
        for prefix in prefixes:
            if h.get(prefix + name):
                values[name] = h[prefix + name]
                break
        else:
            raise VerificationError(400, "missing_header", f"missing header {prefixes[0]}{name}")
    if not values["timestamp"].isdigit():
        raise VerificationError(400, "malformed", "the timestamp header is not a unix time")
    std = {
        "webhook-id": values["id"],
        "webhook-timestamp": values["timestamp"],
        "webhook-signature": values["signature"],
    }
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationError(400, "malformed", "the body is not UTF-8") from None
    first: VerificationError | None = None
    for secret in secrets:
        try:
            wh = _webhook(secret)
        except Exception as exc:
            # a secret that is not base64 (whsec_...) is a configuration problem
            raise SecretFormatError(f"the signing secret is not a valid {kind} secret") from exc
        try:
            wh.verify(text, std, json_parse=False)
        except WebhookVerificationError as exc:
            err = _svix_error(str(exc))
            if err.reason == "expired":
                raise err from None
            first = first or err
            continue
        except (ValueError, binascii.Error):
            raise VerificationError(
                400, "malformed", "the signature header is not 'v1,<base64>' items"
            ) from None
        prefix = "svix-" if kind == "clerk" else "webhook-"
        forward = {prefix + name: values[name] for name in names}
        return Verified(values["id"], _event_type(text), forward)
    assert first is not None
    raise first


def _svix_error(message: str) -> VerificationError:
    if "too old" in message or "too new" in message:
        return VerificationError(
            401, "expired", "the signature timestamp is more than 5 minutes away from now"
        )
    if "Missing" in message:
        return VerificationError(400, "missing_header", "missing signature headers")
    if "Invalid" in message:
        return VerificationError(400, "malformed", "the timestamp header is not a unix time")
    return VerificationError(401, "bad_signature", "no signature matches the secret")


def _event_type(text: str) -> str | None:
    try:
        data: Any = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("type"), str):
        return str(data["type"])
    return None


# -- Stripe ---------------------------------------------------------------------


def _verify_stripe(secrets: Sequence[str], h: dict[str, str], body: bytes) -> Verified:
    from stripe import SignatureVerificationError, WebhookSignature

    header = h.get("stripe-signature")
    if not header:
        raise VerificationError(400, "missing_header", "missing header stripe-signature")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationError(400, "malformed", "the body is not UTF-8") from None
    _stripe_not_ahead(header)
    first: VerificationError | None = None
    for secret in secrets:
        try:
            WebhookSignature.verify_header(text, header, secret, TOLERANCE_SECONDS)
        except SignatureVerificationError as exc:
            err = _stripe_error(str(exc.user_message or exc))
            if err.reason != "bad_signature":
                raise err from None
            first = first or err
            continue
        break
    else:
        assert first is not None
        raise first
    try:
        data: Any = json.loads(text)
    except ValueError:
        raise VerificationError(400, "malformed", "the body is not a JSON Stripe event") from None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"]:
        raise VerificationError(400, "malformed", "the Stripe event has no 'id'")
    event_type = data.get("type")
    return Verified(
        data["id"],
        event_type if isinstance(event_type, str) else None,
        {"stripe-signature": header},
    )


def _stripe_not_ahead(header: str) -> None:
    """Stripe's library checks only the past; a delivery dated beyond the tolerance in
    the future is refused too (a replay window either way, as for Standard Webhooks)."""
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit() and int(value) > time.time() + TOLERANCE_SECONDS:
            raise VerificationError(
                401, "expired", "the signature timestamp is more than 5 minutes away from now"
            )


def _stripe_error(message: str) -> VerificationError:
    if "Timestamp outside" in message:
        return VerificationError(
            401, "expired", "the signature timestamp is more than 5 minutes away from now"
        )
    if "Unable to extract" in message or "expected scheme" in message:
        return VerificationError(
            400, "malformed", "the stripe-signature header is not 't=...,v1=...'"
        )
    return VerificationError(401, "bad_signature", "no signature matches the secret")


# -- signing (send-test, and re-signing late retries) ----------------------------


def sign(kind: Kind, secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The signature headers a provider would send for `body`."""
    text = body.decode("utf-8")
    if kind == "stripe":
        from stripe import WebhookSignature

        header = WebhookSignature.generate_signature_header(text, secret, timestamp)
        return {"stripe-signature": header}
    signature = _webhook(secret).sign(
        message_id, dt.datetime.fromtimestamp(timestamp, tz=dt.UTC), text
    )
    prefix = "svix-" if kind == "clerk" else "webhook-"
    return {
        f"{prefix}id": message_id,
        f"{prefix}timestamp": str(timestamp),
        f"{prefix}signature": signature,
    }
