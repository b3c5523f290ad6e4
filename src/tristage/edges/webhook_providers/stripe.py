"""Stripe: `stripe-signature: t=…,v1=…`, verified and signed with `stripe.WebhookSignature`.
The message id is the event id. Stripe's library checks only that the timestamp is not
too old; a timestamp more than the tolerance ahead is refused here too."""

from __future__ import annotations

import json
import random
import secrets as pysecrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ...domain import webhooks as dom
from ...domain.numbers import ascii_int
from . import register
from .base import TOLERANCE_SECONDS, VerificationError, Verified


class StripeProvider:
    name = "stripe"

    def verify(self, secrets: Sequence[str], headers: Mapping[str, str], body: bytes) -> Verified:
        from stripe import SignatureVerificationError, WebhookSignature

        header = headers.get("stripe-signature")
        if not header:
            raise VerificationError(400, "missing_header", "missing header stripe-signature")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise VerificationError(400, "malformed", "the body is not UTF-8") from None
        timestamp = _not_ahead(header)
        first: VerificationError | None = None
        for secret in secrets:
            try:
                WebhookSignature.verify_header(text, header, secret, TOLERANCE_SECONDS)
            except SignatureVerificationError as exc:
                err = _error(str(exc.user_message or exc))
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
            raise VerificationError(
                400, "malformed", "the body is not a JSON Stripe event"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"]:
            raise VerificationError(400, "malformed", "the Stripe event has no 'id'")
        event_type = data.get("type")
        return Verified(
            data["id"],
            event_type if isinstance(event_type, str) else None,
            {"stripe-signature": header},
            timestamp,
        )

    def sign(self, secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        from stripe import WebhookSignature

        header = WebhookSignature.generate_signature_header(body.decode("utf-8"), secret, timestamp)
        return {"stripe-signature": header}

    def new_secret(self) -> str:
        return "whsec_" + pysecrets.token_hex(16)

    def event_types(self) -> tuple[str, ...]:
        return dom.event_types("stripe")

    def sample_event(
        self, event_type: str, now: float, rng: random.Random
    ) -> tuple[str, dict[str, Any]]:
        return dom.sample_event("stripe", event_type, now, rng)


def _not_ahead(header: str) -> int | None:
    """The header's `t=`; a delivery dated beyond the tolerance in the future is refused
    (a replay window either way, as for Standard Webhooks)."""
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and ascii_int(value) is not None:
            if int(value) > time.time() + TOLERANCE_SECONDS:
                raise VerificationError(
                    401, "expired", "the signature timestamp is more than 5 minutes away from now"
                )
            return int(value)
    return None


def _error(message: str) -> VerificationError:
    if "Timestamp outside" in message:
        return VerificationError(
            401, "expired", "the signature timestamp is more than 5 minutes away from now"
        )
    if "Unable to extract" in message or "expected scheme" in message:
        return VerificationError(
            400, "malformed", "the stripe-signature header is not 't=...,v1=...'"
        )
    return VerificationError(401, "bad_signature", "no signature matches the secret")


PROVIDER = register(StripeProvider())
