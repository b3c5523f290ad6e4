"""Clerk webhook events applied to the database: users and payment attempts.

Parsing (payload -> row values) is pure; `apply_event` writes in one transaction together
with the delivery's `svix-id`, so a redelivered event changes nothing. Events carry Clerk's
`updated_at`; an older event never overwrites newer data, whatever the delivery order.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from .database import Connection, utcnow

HANDLED = ("user.created", "user.updated", "user.deleted", "paymentAttempt.updated")


class EventError(ValueError):
    """The payload is signed but not a usable event (answered 422, not retried usefully)."""


@dataclass(frozen=True)
class UserValues:
    clerk_id: str
    email: str | None
    first_name: str | None
    last_name: str | None
    phone: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class PaymentValues:
    clerk_payment_id: str
    payer_clerk_id: str
    payer_email: str | None
    payer_first_name: str | None
    payer_last_name: str | None
    amount_cents: int
    currency: str
    status: str
    card_last4: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True)
class Outcome:
    result: str  # applied | duplicate | ignored | stale
    detail: str = ""


def _ms(value: Any, fallback: dt.datetime) -> dt.datetime:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    return fallback


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _primary(items: Any, primary_id: Any, field: str) -> str | None:
    if not isinstance(items, list):
        return None
    chosen = None
    for item in items:
        if not isinstance(item, dict):
            continue
        if chosen is None or item.get("id") == primary_id:
            chosen = item
            if item.get("id") == primary_id:
                break
    return _str(chosen.get(field)) if chosen else None


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _data(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    if not isinstance(data, dict):
        raise EventError("the event has no 'data' object")
    return data


def event_time(event: dict[str, Any], fallback: dt.datetime) -> dt.datetime:
    return _ms(event.get("timestamp"), fallback)


def parse_user(event: dict[str, Any], now: dt.datetime) -> UserValues:
    data = _data(event)
    clerk_id = _str(data.get("id"))
    if clerk_id is None:
        raise EventError("data.id (the Clerk user id) is missing")
    created = _ms(data.get("created_at"), event_time(event, now))
    return UserValues(
        clerk_id=clerk_id,
        email=_primary(
            data.get("email_addresses"), data.get("primary_email_address_id"), "email_address"
        ),
        first_name=_str(data.get("first_name")),
        last_name=_str(data.get("last_name")),
        phone=_primary(
            data.get("phone_numbers"), data.get("primary_phone_number_id"), "phone_number"
        ),
        created_at=created,
        updated_at=_ms(data.get("updated_at"), created),
    )


def parse_payment(event: dict[str, Any], now: dt.datetime) -> PaymentValues | None:
    """None when the payer is not a user (an organization): nothing to record."""
    data = _data(event)
    payment_id = _str(data.get("id"))
    if payment_id is None:
        raise EventError("data.id (the Clerk payment attempt id) is missing")
    payer = _obj(data.get("payer"))
    payer_id = _str(payer.get("user_id"))
    if payer_id is None:
        return None
    grand = _obj(_obj(data.get("totals")).get("grand_total"))
    amount = grand.get("amount", 0)
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
        raise EventError("data.totals.grand_total.amount must be a non-negative integer (cents)")
    last4 = _str(_obj(data.get("payment_source")).get("last4"))
    created = _ms(data.get("created_at"), event_time(event, now))
    return PaymentValues(
        clerk_payment_id=payment_id,
        payer_clerk_id=payer_id,
        payer_email=_str(payer.get("email")),
        payer_first_name=_str(payer.get("first_name")),
        payer_last_name=_str(payer.get("last_name")),
        amount_cents=amount,
        currency=(_str(grand.get("currency")) or "USD").upper()[:8],
        status=(_str(data.get("status")) or "pending")[:32],
        card_last4=last4[-4:] if last4 else None,
        created_at=created,
        updated_at=_ms(data.get("updated_at"), created),
    )


# -- writing ------------------------------------------------------------------

_UPSERT_USER = """
INSERT INTO users (clerk_id, email, first_name, last_name, phone, created_at, updated_at, deleted)
VALUES (?, ?, ?, ?, ?, ?, ?, FALSE)
ON CONFLICT (clerk_id) DO UPDATE SET
    email = excluded.email, first_name = excluded.first_name, last_name = excluded.last_name,
    phone = excluded.phone, updated_at = excluded.updated_at
WHERE users.updated_at <= excluded.updated_at AND users.deleted = FALSE
"""

_UPSERT_PAYMENT = """
INSERT INTO payment_attempts
    (user_id, clerk_payment_id, amount_cents, currency, status, card_last4, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (clerk_payment_id) DO UPDATE SET
    amount_cents = excluded.amount_cents, currency = excluded.currency,
    status = excluded.status, card_last4 = excluded.card_last4, updated_at = excluded.updated_at
WHERE payment_attempts.updated_at <= excluded.updated_at
"""


def _upsert_user(conn: Connection, user: UserValues) -> Outcome:
    changed = conn.execute(
        _UPSERT_USER,
        (
            user.clerk_id,
            user.email,
            user.first_name,
            user.last_name,
            user.phone,
            user.created_at,
            user.updated_at,
        ),
    )
    if changed:
        return Outcome("applied", user.clerk_id)
    return Outcome("stale", f"{user.clerk_id}: newer data or deleted already")


def _delete_user(conn: Connection, event: dict[str, Any], now: dt.datetime) -> Outcome:
    data = _data(event)
    clerk_id = _str(data.get("id"))
    if clerk_id is None:
        raise EventError("data.id (the Clerk user id) is missing")
    when = event_time(event, now)
    changed = conn.execute(
        "UPDATE users SET deleted = TRUE, updated_at = ? WHERE clerk_id = ? AND deleted = FALSE",
        (when, clerk_id),
    )
    if changed:
        return Outcome("applied", clerk_id)
    # unknown user: keep a tombstone so a late user.created does not bring it back
    inserted = conn.execute(
        "INSERT INTO users (clerk_id, created_at, updated_at, deleted) VALUES (?, ?, ?, TRUE) "
        "ON CONFLICT (clerk_id) DO NOTHING",
        (clerk_id, when, when),
    )
    return Outcome("applied" if inserted else "stale", clerk_id)


def _record_payment(conn: Connection, payment: PaymentValues) -> Outcome:
    row = conn.one("SELECT id FROM users WHERE clerk_id = ?", (payment.payer_clerk_id,))
    if row is None:
        # the payment arrived before user.created: create the user from the payer
        conn.execute(
            "INSERT INTO users (clerk_id, email, first_name, last_name, created_at, updated_at,"
            " deleted) VALUES (?, ?, ?, ?, ?, ?, FALSE) ON CONFLICT (clerk_id) DO NOTHING",
            (
                payment.payer_clerk_id,
                payment.payer_email,
                payment.payer_first_name,
                payment.payer_last_name,
                payment.created_at,
                dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
            ),
        )
        row = conn.one("SELECT id FROM users WHERE clerk_id = ?", (payment.payer_clerk_id,))
        assert row is not None
    changed = conn.execute(
        _UPSERT_PAYMENT,
        (
            row["id"],
            payment.clerk_payment_id,
            payment.amount_cents,
            payment.currency,
            payment.status,
            payment.card_last4,
            payment.created_at,
            payment.updated_at,
        ),
    )
    if changed:
        return Outcome("applied", payment.clerk_payment_id)
    return Outcome("stale", f"{payment.clerk_payment_id}: newer data already")


def apply_event(conn: Connection, svix_id: str, event: dict[str, Any]) -> Outcome:
    """Apply one verified event exactly once (keyed by its svix-id)."""
    kind = event.get("type")
    if not isinstance(kind, str):
        raise EventError("the event has no 'type'")
    now = utcnow()
    with conn.transaction():
        fresh = conn.execute(
            "INSERT INTO webhook_events (svix_id, event_type, received_at) VALUES (?, ?, ?) "
            "ON CONFLICT (svix_id) DO NOTHING",
            (svix_id, kind[:100], now),
        )
        if not fresh:
            return Outcome("duplicate", svix_id)
        if kind in ("user.created", "user.updated"):
            return _upsert_user(conn, parse_user(event, now))
        if kind == "user.deleted":
            return _delete_user(conn, event, now)
        if kind == "paymentAttempt.updated":
            payment = parse_payment(event, now)
            if payment is None:
                return Outcome("ignored", "payer is not a user")
            return _record_payment(conn, payment)
        return Outcome("ignored", f"event type {kind!r} is not handled")
