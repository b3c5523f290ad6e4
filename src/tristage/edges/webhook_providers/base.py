"""What a webhook provider is to the gateway: one object that verifies a delivery,
names the headers to forward, re-signs late retries and builds sample events.

Verification failures carry an HTTP status and a short reason; they never carry
the body.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

TOLERANCE_SECONDS = 300  # a signature timestamp this far from now, either way, is refused


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
    """A delivery that verified: its message id (the de-duplication key), event type,
    signature time, and the signature headers to forward, under the names the app's
    library reads."""

    message_id: str
    event_type: str | None
    forward: dict[str, str] = field(default_factory=dict)
    timestamp: int | None = None


@runtime_checkable
class WebhookProvider(Protocol):
    """One provider (`kind` in tristage.toml). `headers` given to `verify` have
    lower-case names, the first copy of a repeated header kept."""

    name: str

    def verify(self, secrets: Sequence[str], headers: Mapping[str, str], body: bytes) -> Verified:
        """Check the signature with any of `secrets`; raise VerificationError (or
        SecretFormatError for a secret that cannot be used)."""
        ...

    def sign(self, secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """The signature headers the provider would send (send-test, late retries)."""
        ...

    def new_secret(self) -> str:
        """A fresh signing secret in the provider's format (tests, local setups)."""
        ...

    def event_types(self) -> tuple[str, ...]:
        """Event types with a tailored sample."""
        ...

    def sample_event(
        self, event_type: str, now: float, rng: random.Random
    ) -> tuple[str, dict[str, Any]]:
        """A realistic sample: (message id, JSON body)."""
        ...
