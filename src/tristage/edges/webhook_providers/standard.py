"""Standard Webhooks (`webhook-id/-timestamp/-signature`), verified and signed with the
`standardwebhooks` library. `SvixScheme` also serves Clerk, which signs through Svix."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import random
import secrets as pysecrets
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ...domain import webhooks as dom
from ...domain.numbers import ascii_int
from . import register
from .base import SecretFormatError, VerificationError, Verified

NAMES = ("id", "timestamp", "signature")


@lru_cache(maxsize=64)
def _webhook(secret: str) -> Webhook:
    return Webhook(secret)


class SvixScheme:
    """Svix-style signing: `accept` are the header prefixes read (first match wins),
    `forward` the prefix the app's library reads."""

    def __init__(self, name: str, accept: tuple[str, ...], forward: str) -> None:
        self.name = name
        self.accept = accept
        self.forward = forward

    def verify(self, secrets: Sequence[str], headers: Mapping[str, str], body: bytes) -> Verified:
        values: dict[str, str] = {}
        for name in NAMES:
            for prefix in self.accept:
                if headers.get(prefix + name):
                    values[name] = headers[prefix + name]
                    break
            else:
                raise VerificationError(
                    400, "missing_header", f"missing header {self.accept[0]}{name}"
                )
        if ascii_int(values["timestamp"]) is None:
            raise VerificationError(400, "malformed", "the timestamp header is not a unix time")
        std = {f"webhook-{name}": values[name] for name in NAMES}
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
                raise SecretFormatError(
                    f"the signing secret is not a valid {self.name} secret"
                ) from exc
            try:
                wh.verify(text, std, json_parse=False)
            except WebhookVerificationError as exc:
                err = _error(str(exc))
                if err.reason == "expired":
                    raise err from None
                first = first or err
                continue
            except (ValueError, binascii.Error):
                raise VerificationError(
                    400, "malformed", "the signature header is not 'v1,<base64>' items"
                ) from None
            forward = {self.forward + name: values[name] for name in NAMES}
            return Verified(values["id"], _event_type(text), forward, int(values["timestamp"]))
        assert first is not None
        raise first

    def sign(self, secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        signature = _webhook(secret).sign(
            message_id, dt.datetime.fromtimestamp(timestamp, tz=dt.UTC), body.decode("utf-8")
        )
        return {
            f"{self.forward}id": message_id,
            f"{self.forward}timestamp": str(timestamp),
            f"{self.forward}signature": signature,
        }

    def new_secret(self) -> str:
        return "whsec_" + base64.b64encode(pysecrets.token_bytes(24)).decode()

    def event_types(self) -> tuple[str, ...]:
        return dom.event_types(self.name)

    def sample_event(
        self, event_type: str, now: float, rng: random.Random
    ) -> tuple[str, dict[str, Any]]:
        return dom.sample_event(self.name, event_type, now, rng)


def _error(message: str) -> VerificationError:
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


PROVIDER = register(SvixScheme("standard", accept=("webhook-",), forward="webhook-"))
