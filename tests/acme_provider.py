"""A webhook provider from outside tristage, registered the way a plug-in registers:
HMAC-SHA256 (hex) over `id.timestamp.body`, in `x-acme-id/-timestamp/-signature`."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import secrets as pysecrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

from tristage.edges import webhook_providers as providers
from tristage.edges.webhook_providers import VerificationError, Verified


class AcmeProvider:
    name = "acme"

    def verify(self, secrets: Sequence[str], headers: Mapping[str, str], body: bytes) -> Verified:
        values = {}
        for name in ("id", "timestamp", "signature"):
            value = headers.get(f"x-acme-{name}")
            if not value:
                raise VerificationError(400, "missing_header", f"missing header x-acme-{name}")
            values[name] = value
        if not values["timestamp"].isdigit():
            raise VerificationError(400, "malformed", "x-acme-timestamp is not a unix time")
        ts = int(values["timestamp"])
        if abs(time.time() - ts) > providers.TOLERANCE_SECONDS:
            raise VerificationError(401, "expired", "the timestamp is too far from now")
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise VerificationError(400, "malformed", "the body is not UTF-8") from None
        for secret in secrets:
            want = self._mac(secret, values["id"], ts, body)
            if hmac.compare_digest(want, values["signature"]):
                data: Any = json.loads(body)
                forward = {f"x-acme-{k}": v for k, v in values.items()}
                return Verified(values["id"], data.get("event"), forward, ts)
        raise VerificationError(401, "bad_signature", "no signature matches the secret")

    @staticmethod
    def _mac(secret: str, message_id: str, ts: int, body: bytes) -> str:
        signed = f"{message_id}.{ts}.".encode() + body
        return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()

    def sign(self, secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        return {
            "x-acme-id": message_id,
            "x-acme-timestamp": str(timestamp),
            "x-acme-signature": self._mac(secret, message_id, timestamp, body),
        }

    def new_secret(self) -> str:
        return "acme_" + pysecrets.token_hex(16)

    def event_types(self) -> tuple[str, ...]:
        return ("order.shipped",)

    def sample_event(
        self, event_type: str, now: float, rng: random.Random
    ) -> tuple[str, dict[str, Any]]:
        msg_id = f"acme_{rng.getrandbits(64):016x}"
        return msg_id, {"event": event_type, "at": int(now), "order": {"id": rng.randint(1, 9999)}}


PROVIDER = providers.register(AcmeProvider(), replace=True)
