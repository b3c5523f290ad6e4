"""Webhook deliveries, pure: the retry schedule with jitter, the delivery state machine,
ingest URLs, and realistic sample events for `hooks send-test`.

No I/O here: time and randomness are passed in.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from . import aliases

# A provider name (`kind` in tristage.toml): a built-in or a registered one
# (edges/webhook_providers). The sample events below cover the built-ins.
Kind = str

# Jitter applied to every retry delay: the delay is multiplied by a factor drawn
# uniformly from [1 - JITTER, 1 + JITTER], so many failed deliveries do not retry
# in lock-step against an app that is coming back up.
JITTER = 0.2

# Other request headers worth passing on to the app unchanged.
PASSTHROUGH_HEADERS = ("content-type", "user-agent")


class DeliveryStatus(StrEnum):
    pending = "pending"  # stored, not yet attempted (or requeued by a replay)
    failed = "failed"  # at least one attempt failed; a retry is scheduled
    delivered = "delivered"  # the app answered 2xx
    dead = "dead"  # every attempt of the schedule failed: dead-lettered

    @property
    def waiting(self) -> bool:
        return self in (DeliveryStatus.pending, DeliveryStatus.failed)


# ---------------------------------------------------------------------------
# Retry schedule and state machine


def jittered(delay: float, u: float) -> float:
    """`delay` scaled by a jitter factor; `u` is a uniform draw in [0, 1)."""
    if not 0.0 <= u <= 1.0:
        raise ValueError(f"u must be in [0, 1], got {u}")
    return max(0.0, delay * (1.0 - JITTER + 2.0 * JITTER * u))


def retry_delay(schedule: list[float], failures: int, u: float) -> float | None:
    """The wait before the next attempt after `failures` consecutive failed attempts
    (1 = the first attempt failed); None when the schedule is exhausted."""
    if failures < 1:
        raise ValueError("failures counts failed attempts and starts at 1")
    if failures > len(schedule):
        return None
    return jittered(schedule[failures - 1], u)


@dataclass(frozen=True)
class Outcome:
    """The result of one forwarding attempt."""

    status_code: int | None  # None: no HTTP answer (refused, timeout, reset)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class Transition:
    status: DeliveryStatus
    tries: int  # attempts since the delivery was (re)queued
    next_attempt_at: float | None  # None once delivered or dead


def after_attempt(
    tries: int, outcome: Outcome, schedule: list[float], now: float, u: float
) -> Transition:
    """The delivery's next state after an attempt. `tries` counts the attempts made
    since it was queued, before this one."""
    made = tries + 1
    if outcome.ok:
        return Transition(DeliveryStatus.delivered, made, None)
    delay = retry_delay(schedule, made, u)
    if delay is None:
        return Transition(DeliveryStatus.dead, made, None)
    return Transition(DeliveryStatus.failed, made, now + delay)


def requeue(now: float) -> Transition:
    """A replay: the delivery starts over with a full retry schedule."""
    return Transition(DeliveryStatus.pending, 0, now)


def max_attempts(schedule: list[float]) -> int:
    return len(schedule) + 1


# ---------------------------------------------------------------------------
# URLs


def ingest_hosts(project: str, environment: str, production: bool) -> list[str]:
    """The router hosts an environment answers on (production also on the bare host)."""
    return aliases.environment_hosts(project, environment, environment if production else None)


def ingest_path(source: str) -> str:
    return f"/.tristage/webhooks/{source}"


def ingest_urls(
    project: str, environment: str, source: str, production: bool, port: int = 8080
) -> list[str]:
    return [
        aliases.url(host, port) + ingest_path(source)
        for host in ingest_hosts(project, environment, production)
    ]


def forward_url(upstream: str, path: str) -> str:
    return upstream.rstrip("/") + path


# ---------------------------------------------------------------------------
# Sample events (realistic shapes of what the providers send)

CLERK_EVENTS = ("user.created", "user.updated", "user.deleted", "paymentAttempt.updated")
STRIPE_EVENTS = (
    "payment_intent.succeeded",
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
)

_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Linus", "Radia")
_LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Hamilton")
_ALNUM = string.ascii_letters + string.digits


def _rid(rng: random.Random, prefix: str, n: int = 27) -> str:
    return prefix + "".join(rng.choice(_ALNUM) for _ in range(n))


def _email(name: str, rng: random.Random) -> str:
    """A plausible address, distinct per sample (a tag after '+'), so two test events
    never describe the same person by chance."""
    return f"{name.lower()}+{_rid(rng, '', 6).lower()}@example.com"


def message_id(kind: Kind, rng: random.Random) -> str:
    """A provider-style message id (`msg_…` for Svix and Standard Webhooks)."""
    return _rid(rng, "msg_") if kind != "stripe" else _rid(rng, "evt_", 24)


def sample_event(
    kind: Kind, event_type: str, now: float, rng: random.Random
) -> tuple[str, dict[str, Any]]:
    """A realistic sample payload for `event_type`: (message id, JSON body)."""
    if kind == "clerk":
        return message_id(kind, rng), _clerk_event(event_type, now, rng)
    if kind == "stripe":
        event = _stripe_event(event_type, now, rng)
        return str(event["id"]), event
    return message_id(kind, rng), _standard_event(event_type, now, rng)


def _clerk_user(now_ms: int, rng: random.Random) -> dict[str, Any]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    email_id = _rid(rng, "idn_")
    return {
        "backup_code_enabled": False,
        "banned": False,
        "birthday": "",
        "created_at": now_ms - 1000,
        "email_addresses": [
            {
                "email_address": _email(f"{first}.{last}", rng),
                "id": email_id,
                "linked_to": [],
                "object": "email_address",
                "reserved": False,
                "verification": {"attempts": None, "status": "verified", "strategy": "email_code"},
            }
        ],
        "external_accounts": [],
        "external_id": None,
        "first_name": first,
        "has_image": False,
        "id": _rid(rng, "user_"),
        "image_url": "https://img.clerk.com/placeholder",
        "last_name": last,
        "last_sign_in_at": None,
        "locked": False,
        "object": "user",
        "password_enabled": True,
        "phone_numbers": [],
        "primary_email_address_id": email_id,
        "primary_phone_number_id": None,
        "primary_web3_wallet_id": None,
        "private_metadata": {},
        "public_metadata": {},
        "two_factor_enabled": False,
        "unsafe_metadata": {},
        "updated_at": now_ms,
        "username": None,
        "web3_wallets": [],
    }


def _clerk_event(event_type: str, now: float, rng: random.Random) -> dict[str, Any]:
    now_ms = int(now * 1000)
    data: dict[str, Any]
    if event_type in ("user.created", "user.updated"):
        data = _clerk_user(now_ms, rng)
    elif event_type == "user.deleted":
        data = {"deleted": True, "id": _rid(rng, "user_"), "object": "user"}
    elif event_type == "paymentAttempt.updated":
        amount = rng.choice((900, 1900, 4900))
        data = {
            "object": "commerce_payment_attempt",
            "id": _rid(rng, "pay_"),
            "status": "paid",
            "charge_type": "recurring",
            "created_at": now_ms - 2000,
            "updated_at": now_ms,
            "paid_at": now_ms,
            "payer": {
                "user_id": _rid(rng, "user_"),
                "email": _email(rng.choice(_FIRST), rng),
            },
            "totals": {
                "grand_total": {"amount": amount, "currency": "USD", "currency_symbol": "$"},
                "subtotal": {"amount": amount, "currency": "USD", "currency_symbol": "$"},
            },
            "subscription_items": [
                {"plan": {"id": _rid(rng, "cplan_"), "name": "Pro", "slug": "pro"}}
            ],
        }
    else:
        data = {"id": _rid(rng, "obj_"), "object": event_type.split(".", 1)[0]}
    return {
        "data": data,
        "event_attributes": {
            "http_request": {"client_ip": "203.0.113.7", "user_agent": "Mozilla/5.0"}
        },
        "instance_id": _rid(rng, "ins_"),
        "object": "event",
        "timestamp": now_ms,
        "type": event_type,
    }


def _stripe_object(event_type: str, now: int, rng: random.Random) -> dict[str, Any]:
    customer = _rid(rng, "cus_", 14)
    amount = rng.choice((900, 1900, 4900))
    if event_type.startswith("payment_intent."):
        return {
            "id": _rid(rng, "pi_", 24),
            "object": "payment_intent",
            "amount": amount,
            "amount_received": amount,
            "currency": "usd",
            "customer": customer,
            "status": "succeeded",
            "created": now - 5,
            "livemode": False,
        }
    if event_type.startswith("checkout.session."):
        return {
            "id": _rid(rng, "cs_test_", 58),
            "object": "checkout.session",
            "amount_total": amount,
            "currency": "usd",
            "customer": customer,
            "mode": "subscription",
            "payment_status": "paid",
            "status": "complete",
            "subscription": _rid(rng, "sub_", 24),
            "created": now - 30,
            "livemode": False,
        }
    if event_type.startswith("customer.subscription."):
        status = "canceled" if event_type.endswith("deleted") else "active"
        return {
            "id": _rid(rng, "sub_", 24),
            "object": "subscription",
            "customer": customer,
            "status": status,
            "current_period_start": now - 60,
            "current_period_end": now + 30 * 86400,
            "items": {
                "object": "list",
                "data": [{"price": {"id": _rid(rng, "price_", 24), "unit_amount": amount}}],
            },
            "livemode": False,
        }
    if event_type.startswith("invoice."):
        return {
            "id": _rid(rng, "in_", 24),
            "object": "invoice",
            "amount_paid": amount,
            "currency": "usd",
            "customer": customer,
            "status": "paid",
            "created": now - 10,
            "livemode": False,
        }
    return {"id": _rid(rng, "obj_", 24), "object": event_type.split(".", 1)[0]}


def _stripe_event(event_type: str, now: float, rng: random.Random) -> dict[str, Any]:
    ts = int(now)
    return {
        "id": _rid(rng, "evt_", 24),
        "object": "event",
        "api_version": "2024-06-20",
        "created": ts,
        "data": {"object": _stripe_object(event_type, ts, rng)},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": _rid(rng, "req_", 14), "idempotency_key": None},
        "type": event_type,
    }


def _standard_event(event_type: str, now: float, rng: random.Random) -> dict[str, Any]:
    import datetime as dt

    stamp = dt.datetime.fromtimestamp(now, tz=dt.UTC).isoformat().replace("+00:00", "Z")
    return {
        "type": event_type,
        "timestamp": stamp,
        "data": {"id": _rid(rng, "obj_", 16), "sample": True},
    }


def event_types(kind: Kind) -> tuple[str, ...]:
    """Event types with a tailored sample (any other type gets a generic one)."""
    if kind == "clerk":
        return CLERK_EVENTS
    if kind == "stripe":
        return STRIPE_EVENTS
    return ()
