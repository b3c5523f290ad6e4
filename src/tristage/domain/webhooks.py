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
from .numbers import ascii_int

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
    dead = "dead"  # every attempt of the schedule failed, or the endpoint is gone (410)
    filtered = "filtered"  # stored, not forwarded: its event type is not in `events`

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


# Delivery signals from the app's answer.
RETRY_AFTER_CAP = 3600.0  # seconds: a longer Retry-After waits this long
RATE_LIMITED_FACTOR = 4.0  # a 429 without Retry-After waits this many times the schedule's delay
RATE_LIMITED_MIN = 1.0  # ... and at least this many seconds
GONE = 410  # the endpoint says it is gone: dead-lettered at once, with an alert


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` value (delta-seconds or an HTTP date),
    capped at RETRY_AFTER_CAP; None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    seconds = ascii_int(text)
    if seconds is not None:
        return min(float(seconds), RETRY_AFTER_CAP)
    from email.utils import parsedate_to_datetime

    try:
        at = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if at.tzinfo is None:
        return None  # an HTTP date is always GMT; a zone-less one is not one
    return min(max(0.0, at.timestamp() - now), RETRY_AFTER_CAP)


@dataclass(frozen=True)
class Outcome:
    """The result of one forwarding attempt."""

    status_code: int | None  # None: no HTTP answer (refused, timeout, reset)
    error: str | None = None
    retry_after: float | None = None  # seconds, from the answer's Retry-After (capped)

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        return self.status_code == GONE


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
    if outcome.gone:
        return Transition(DeliveryStatus.dead, made, None)
    delay = retry_delay(schedule, made, u)
    if delay is None:
        return Transition(DeliveryStatus.dead, made, None)
    if outcome.status_code == 429 and outcome.retry_after is None:
        delay = max(delay * RATE_LIMITED_FACTOR, RATE_LIMITED_MIN)
    if outcome.retry_after is not None:
        delay = max(delay, outcome.retry_after)
    return Transition(DeliveryStatus.failed, made, now + delay)


def event_selected(patterns: list[str], event_type: str | None) -> bool:
    """Whether a source with `events = patterns` forwards `event_type` (globs match
    case-sensitively; an empty list forwards everything; a delivery without an event
    type passes only an empty list)."""
    if not patterns:
        return True
    if event_type is None:
        return False
    from fnmatch import fnmatchcase

    return any(fnmatchcase(event_type, p) for p in patterns)


def combine(states: list[Transition]) -> Transition:
    """A delivery's state from its destinations': delivered when every one is, waiting
    while one waits (due at the earliest), else dead."""
    waiting = [t for t in states if t.status.waiting]
    tries = max((t.tries for t in states), default=0)
    if waiting:
        due = min(
            (t.next_attempt_at for t in waiting if t.next_attempt_at is not None), default=None
        )
        status = (
            DeliveryStatus.pending
            if all(t.status == DeliveryStatus.pending for t in waiting) and tries == 0
            else DeliveryStatus.failed
        )
        return Transition(status, tries, due)
    if all(t.status == DeliveryStatus.delivered for t in states):
        return Transition(DeliveryStatus.delivered, tries, None)
    return Transition(DeliveryStatus.dead, tries, None)


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
    created = now_ms - 1000
    return {
        "backup_code_enabled": False,
        "banned": False,
        "birthday": "",
        "create_organization_enabled": True,
        "create_organizations_limit": None,
        "created_at": created,
        "delete_self_enabled": True,
        "email_addresses": [
            {
                "created_at": created,
                "email_address": _email(f"{first}.{last}", rng),
                "id": email_id,
                "linked_to": [],
                "matches_sso_connection": False,
                "object": "email_address",
                "reserved": False,
                "updated_at": now_ms,
                "verification": {
                    "attempts": 1,
                    "expire_at": created + 600_000,
                    "status": "verified",
                    "strategy": "email_code",
                },
            }
        ],
        "enterprise_accounts": [],
        "external_accounts": [],
        "external_id": None,
        "first_name": first,
        "gender": "",
        "has_image": False,
        "id": _rid(rng, "user_"),
        "image_url": "https://img.clerk.com/placeholder",
        "last_active_at": now_ms,
        "last_name": last,
        "last_sign_in_at": None,
        "legal_accepted_at": None,
        "locked": False,
        "lockout_expires_in_seconds": None,
        "mfa_disabled_at": None,
        "mfa_enabled_at": None,
        "object": "user",
        "passkeys": [],
        "password_enabled": True,
        "password_last_updated_at": created,
        "phone_numbers": [],
        "primary_email_address_id": email_id,
        "primary_phone_number_id": None,
        "primary_web3_wallet_id": None,
        "private_metadata": {},
        "profile_image_url": "https://www.gravatar.com/avatar?d=mp",
        "public_metadata": {},
        "saml_accounts": [],
        "totp_enabled": False,
        "two_factor_enabled": False,
        "unsafe_metadata": {},
        "updated_at": now_ms,
        "username": None,
        "verification_attempts_remaining": 100,
        "web3_wallets": [],
    }


def _money(amount: int) -> dict[str, Any]:
    return {
        "amount": amount,
        "amount_formatted": f"{amount / 100:.2f}",
        "currency": "USD",
        "currency_symbol": "$",
    }


def _clerk_payment_attempt(now_ms: int, rng: random.Random) -> dict[str, Any]:
    """Clerk Billing's payment attempt, every documented field present."""
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    amount = rng.choice((900, 1900, 4900))
    tax = amount // 10
    instance = _rid(rng, "ins_")
    plan_id = _rid(rng, "cplan_")
    day_ms = 86_400_000
    return {
        "billing_date": now_ms,
        "charge_type": "recurring",
        "created_at": now_ms - 2000,
        "failed_at": None,
        "failed_reason": None,
        "gateway_external_id": _rid(rng, "pi_", 24),
        "id": _rid(rng, "cpayattempt_"),
        "instance_id": instance,
        "object": "commerce_payment_attempt",
        "paid_at": now_ms,
        "payee": {
            "gateway_external_id": _rid(rng, "acct_", 16),
            "gateway_status": "active",
            "gateway_type": "stripe",
            "id": _rid(rng, "cpayee_"),
        },
        "payer": {
            "email": _email(f"{first}.{last}", rng),
            "first_name": first,
            "id": _rid(rng, "cpayer_"),
            "image_url": "https://img.clerk.com/placeholder",
            "last_name": last,
            "organization_id": None,
            "organization_name": None,
            "user_id": _rid(rng, "user_"),
        },
        "payment_id": _rid(rng, "cpay_"),
        "payment_source": {
            "card_type": "visa",
            "gateway": "stripe",
            "gateway_external_account_id": _rid(rng, "acct_", 16),
            "gateway_external_id": _rid(rng, "pm_", 24),
            "id": _rid(rng, "cps_"),
            "last4": "4242",
            "payment_method": "card",
            "status": "active",
        },
        "statement_id": _rid(rng, "cstmt_"),
        "status": "paid",
        "subscription_items": [
            {
                "amount": _money(amount),
                "canceled_at": None,
                "credit": {
                    "amount": _money(0),
                    "cycle_days_remaining": 0,
                    "cycle_days_total": 30,
                    "cycle_remaining_percent": 0.0,
                },
                "id": _rid(rng, "csubi_"),
                "lifetime_paid": amount,
                "next_payment_amount": amount,
                "next_payment_date": now_ms + 30 * day_ms,
                "past_due_at": None,
                "period_end": now_ms + 30 * day_ms,
                "period_start": now_ms,
                "plan": {
                    "amount": amount,
                    "annual_monthly_amount": amount * 10 // 12,
                    "currency": "USD",
                    "description": "Everything in Free, and more",
                    "has_base_fee": True,
                    "id": plan_id,
                    "instance_id": instance,
                    "interval": 1,
                    "is_default": False,
                    "is_prorated": True,
                    "is_recurring": True,
                    "name": "Pro",
                    "period": "month",
                    "product_id": _rid(rng, "cprod_"),
                    "publicly_visible": True,
                    "slug": "pro",
                },
                "plan_id": plan_id,
                "plan_period": "month",
                "proration_date": None,
                "status": "active",
            }
        ],
        "totals": {
            "grand_total": _money(amount + tax),
            "subtotal": _money(amount),
            "tax_total": _money(tax),
        },
        "updated_at": now_ms,
    }


def _clerk_event(event_type: str, now: float, rng: random.Random) -> dict[str, Any]:
    now_ms = int(now * 1000)
    data: dict[str, Any]
    if event_type in ("user.created", "user.updated"):
        data = _clerk_user(now_ms, rng)
    elif event_type == "user.deleted":
        data = {"deleted": True, "id": _rid(rng, "user_"), "object": "user"}
    elif event_type == "paymentAttempt.updated":
        data = _clerk_payment_attempt(now_ms, rng)
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


# The fields of each object at STRIPE_API_VERSION (the stripe library's own API
# version); a sample sets every one, most to the value an ordinary test-mode event
# carries (null, empty list, empty map) and the meaningful ones below.
STRIPE_API_VERSION = "2026-10-28.endive"
_STRIPE_FIELDS: dict[str, str] = {
    "payment_intent": "allowed_payment_method_types amount amount_capturable amount_details"
    " amount_received application application_fee_amount automatic_payment_methods"
    " canceled_at cancellation_reason capture_method client_secret confirmation_method"
    " created currency customer customer_account description excluded_payment_method_types"
    " hooks id last_payment_error latest_charge livemode managed_payments metadata"
    " next_action object on_behalf_of payment_details payment_method"
    " payment_method_configuration_details payment_method_options payment_method_types"
    " payment_record presentment_details processing receipt_email review setup_future_usage"
    " shipping source statement_descriptor statement_descriptor_suffix status transfer_data"
    " transfer_group",
    "checkout.session": "adaptive_pricing after_expiration allow_promotion_codes"
    " allowed_payment_method_types amount_subtotal amount_total automatic_tax"
    " billing_address_collection branding_settings cancel_url client_reference_id"
    " client_secret collected_information consent consent_collection created currency"
    " currency_conversion custom_fields custom_text customer customer_account"
    " customer_creation customer_details customer_email discounts"
    " excluded_payment_method_types expires_at id integration_identifier invoice"
    " invoice_creation line_items livemode locale managed_payments metadata mode"
    " name_collection object optional_items origin_context payment_intent payment_link"
    " payment_method_collection payment_method_configuration_details payment_method_options"
    " payment_method_types payment_status permissions phone_number_collection"
    " presentment_details recovered_from redirect_on_completion return_url"
    " saved_payment_method_options setup_intent shipping_address_collection shipping_cost"
    " shipping_options status submit_type subscription success_url tax_id_collection"
    " total_details ui_mode url wallet_options",
    "subscription": "application application_fee_percent automatic_tax billing_cycle_anchor"
    " billing_cycle_anchor_config billing_mode billing_schedules billing_thresholds"
    " cancel_at cancel_at_period_end canceled_at cancellation_details collection_method"
    " created currency customer customer_account days_until_due default_payment_method"
    " default_source default_tax_rates description discounts ended_at id invoice_settings"
    " items latest_invoice livemode managed_payments metadata"
    " next_pending_invoice_item_invoice object on_behalf_of pause_collection"
    " payment_settings pending_invoice_item_interval pending_setup_intent pending_update"
    " presentment_details schedule start_date status status_details test_clock"
    " transfer_data trial_end trial_settings trial_start",
    "subscription_item": "billed_until billing_thresholds created current_period_end"
    " current_period_start current_trial discounts id metadata object plan price quantity"
    " subscription tax_rates",
    "price": "active billing_scheme created currency currency_options custom_unit_amount id"
    " livemode lookup_key metadata nickname object product recurring tax_behavior tiers"
    " tiers_mode transform_quantity type unit_amount unit_amount_decimal",
    "invoice": "account_country account_name account_tax_ids amount_due amount_overpaid"
    " amount_paid amount_paid_off_stripe amount_remaining amount_shipping application"
    " attempt_count attempted auto_advance automatic_tax automatically_finalizes_at"
    " billing_reason collection_method confirmation_secret created currency custom_fields"
    " customer customer_account customer_address customer_email customer_name"
    " customer_phone customer_shipping customer_tax_exempt customer_tax_ids"
    " default_payment_method default_source default_tax_rates description discounts"
    " due_date effective_at ending_balance footer from_invoice hosted_invoice_url id"
    " invoice_pdf issuer last_finalization_error latest_revision lines livemode metadata"
    " next_payment_attempt number object on_behalf_of parent payment_settings payments"
    " period_end period_start post_payment_credit_notes_amount"
    " pre_payment_credit_notes_amount receipt_number rendering shipping_cost"
    " shipping_details starting_balance statement_descriptor status status_details"
    " status_transitions subtotal subtotal_excluding_tax test_clock threshold_reason total"
    " total_discount_amounts total_excluding_tax total_pretax_credit_amounts total_taxes"
    " webhooks_delivered_at",
}
_EMPTY_LISTS = frozenset(
    [
        "custom_fields",
        "default_tax_rates",
        "discounts",
        "payment_method_types",
        "shipping_options",
        "total_discount_amounts",
        "total_pretax_credit_amounts",
        "total_taxes",
        "tax_rates",
        "billing_schedules",
    ]
)


def _stripe_base(kind: str, **values: Any) -> dict[str, Any]:
    """Every field of a Stripe `kind` object: null, [] or {} unless given."""
    out: dict[str, Any] = {}
    for name in _STRIPE_FIELDS[kind].split():
        out[name] = [] if name in _EMPTY_LISTS else {} if name == "metadata" else None
    out.update(object=kind, livemode=False, **values)
    return out


def _stripe_list(url: str, data: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": False, "total_count": len(data), "url": url}


def _address(rng: random.Random) -> dict[str, Any]:
    return {
        "city": "Springfield",
        "country": "US",
        "line1": f"{rng.randint(1, 999)} Main Street",
        "line2": None,
        "postal_code": f"{rng.randint(10000, 99999)}",
        "state": "IL",
    }


def _stripe_price(now: int, amount: int, rng: random.Random) -> dict[str, Any]:
    return _stripe_base(
        "price",
        id=_rid(rng, "price_", 24),
        active=True,
        billing_scheme="per_unit",
        created=now - 86400,
        currency="usd",
        nickname="Pro monthly",
        product=_rid(rng, "prod_", 14),
        recurring={
            "interval": "month",
            "interval_count": 1,
            "meter": None,
            "trial_period_days": None,
            "usage_type": "licensed",
        },
        tax_behavior="exclusive",
        type="recurring",
        unit_amount=amount,
        unit_amount_decimal=str(amount),
    )


def _stripe_object(event_type: str, now: int, rng: random.Random) -> dict[str, Any]:
    customer = _rid(rng, "cus_", 14)
    amount = rng.choice((900, 1900, 4900))
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    email = _email(f"{first}.{last}", rng)
    card = {"card": {"installments": None, "mandate_options": None, "network": None,
                     "request_three_d_secure": "automatic"}}  # fmt: skip
    if event_type.startswith("payment_intent."):
        pi = _rid(rng, "pi_", 24)
        return _stripe_base(
            "payment_intent",
            id=pi,
            amount=amount,
            amount_capturable=0,
            amount_details={"tip": {}},
            amount_received=amount,
            automatic_payment_methods={"allow_redirects": "always", "enabled": True},
            capture_method="automatic_async",
            client_secret=f"{pi}_secret_{_rid(rng, '', 25)}",
            confirmation_method="automatic",
            created=now - 5,
            currency="usd",
            customer=customer,
            description="Subscription creation",
            latest_charge=_rid(rng, "ch_", 24),
            payment_method=_rid(rng, "pm_", 24),
            payment_method_options=card,
            payment_method_types=["card"],
            receipt_email=email,
            status="succeeded",
        )
    if event_type.startswith("checkout.session."):
        return _stripe_base(
            "checkout.session",
            id=_rid(rng, "cs_test_", 58),
            amount_subtotal=amount,
            amount_total=amount,
            automatic_tax={"enabled": False, "liability": None, "provider": None, "status": None},
            billing_address_collection="auto",
            cancel_url="https://example.com/pricing",
            created=now - 30,
            currency="usd",
            custom_text={
                "after_submit": None,
                "shipping_address": None,
                "submit": None,
                "terms_of_service_acceptance": None,
            },
            customer=customer,
            customer_creation="always",
            customer_details={
                "address": _address(rng),
                "business_name": None,
                "email": email,
                "individual_name": None,
                "name": f"{first} {last}",
                "phone": None,
                "tax_exempt": "none",
                "tax_ids": [],
            },
            expires_at=now + 86400,
            invoice=_rid(rng, "in_", 24),
            invoice_creation=None,
            locale="auto",
            mode="subscription",
            payment_method_collection="always",
            payment_method_options={"card": {"request_three_d_secure": "automatic"}},
            payment_method_types=["card"],
            payment_status="paid",
            phone_number_collection={"enabled": False},
            status="complete",
            subscription=_rid(rng, "sub_", 24),
            success_url="https://example.com/welcome?session_id={CHECKOUT_SESSION_ID}",
            total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            ui_mode="hosted",
        )
    if event_type.startswith("customer.subscription."):
        sub = _rid(rng, "sub_", 24)
        deleted = event_type.endswith("deleted")
        item = _stripe_base(
            "subscription_item",
            id=_rid(rng, "si_", 14),
            created=now - 60,
            current_period_start=now - 60,
            current_period_end=now + 30 * 86400,
            price=_stripe_price(now, amount, rng),
            quantity=1,
            subscription=sub,
        )
        del item["livemode"]  # a subscription item has none
        return _stripe_base(
            "subscription",
            id=sub,
            automatic_tax={"disabled_reason": None, "enabled": False, "liability": None},
            billing_cycle_anchor=now - 60,
            billing_mode={"flexible": None, "type": "classic"},
            cancel_at_period_end=False,
            canceled_at=now if deleted else None,
            cancellation_details={
                "comment": None,
                "feedback": None,
                "reason": "cancellation_requested" if deleted else None,
            },
            collection_method="charge_automatically",
            created=now - 60,
            currency="usd",
            customer=customer,
            default_payment_method=_rid(rng, "pm_", 24),
            ended_at=now if deleted else None,
            invoice_settings={"account_tax_ids": None, "issuer": {"type": "self"}},
            items=_stripe_list(f"/v1/subscription_items?subscription={sub}", [item]),
            latest_invoice=_rid(rng, "in_", 24),
            payment_settings={
                "payment_method_options": None,
                "payment_method_types": None,
                "save_default_payment_method": "off",
            },
            start_date=now - 60,
            status="canceled" if deleted else "active",
            trial_settings={"end_behavior": {"missing_payment_method": "create_invoice"}},
        )
    if event_type.startswith("invoice."):
        inv = _rid(rng, "in_", 24)
        line = {
            "id": _rid(rng, "il_", 24),
            "object": "line_item",
            "amount": amount,
            "currency": "usd",
            "description": f"1 x Pro (at ${amount / 100:.2f} / month)",
            "discount_amounts": [],
            "discountable": True,
            "discounts": [],
            "invoice": inv,
            "livemode": False,
            "metadata": {},
            "period": {"end": now + 30 * 86400, "start": now},
            "pricing": {
                "price_details": {
                    "price": _rid(rng, "price_", 24),
                    "product": _rid(rng, "prod_", 14),
                },
                "type": "price_details",
                "unit_amount_decimal": str(amount),
            },
            "quantity": 1,
        }
        return _stripe_base(
            "invoice",
            id=inv,
            account_country="US",
            account_name="Example Shop",
            amount_due=amount,
            amount_overpaid=0,
            amount_paid=amount,
            amount_paid_off_stripe=0,
            amount_remaining=0,
            amount_shipping=0,
            attempt_count=1,
            attempted=True,
            auto_advance=False,
            automatic_tax={
                "disabled_reason": None,
                "enabled": False,
                "liability": None,
                "provider": None,
                "status": None,
            },
            billing_reason="subscription_create",
            collection_method="charge_automatically",
            created=now - 10,
            currency="usd",
            customer=customer,
            customer_address=_address(rng),
            customer_email=email,
            customer_name=f"{first} {last}",
            customer_tax_exempt="none",
            customer_tax_ids=[],
            effective_at=now - 10,
            ending_balance=0,
            hosted_invoice_url=f"https://invoice.stripe.com/i/acct_test/{_rid(rng, 'test_', 40)}",
            invoice_pdf=f"https://pay.stripe.com/invoice/acct_test/{_rid(rng, 'test_', 40)}/pdf",
            issuer={"type": "self"},
            lines=_stripe_list(f"/v1/invoices/{inv}/lines", [line]),
            number=f"{_rid(rng, '', 8).upper()}-0001",
            period_end=now,
            period_start=now,
            post_payment_credit_notes_amount=0,
            pre_payment_credit_notes_amount=0,
            starting_balance=0,
            status="paid",
            status_transitions={
                "finalized_at": now - 10,
                "marked_uncollectible_at": None,
                "paid_at": now - 5,
                "voided_at": None,
            },
            subtotal=amount,
            subtotal_excluding_tax=amount,
            total=amount,
            total_excluding_tax=amount,
            webhooks_delivered_at=now - 10,
        )
    return {"id": _rid(rng, "obj_", 24), "object": event_type.split(".", 1)[0]}


def _stripe_event(event_type: str, now: float, rng: random.Random) -> dict[str, Any]:
    ts = int(now)
    data: dict[str, Any] = {"object": _stripe_object(event_type, ts, rng)}
    if event_type.endswith(".updated"):
        data["previous_attributes"] = {"metadata": {}}
    return {
        "id": _rid(rng, "evt_", 24),
        "object": "event",
        "account": None,
        "api_version": STRIPE_API_VERSION,
        "context": None,
        "created": ts,
        "data": data,
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


# ---------------------------------------------------------------------------
# Times on the command line (`hooks replay --since/--until`)


def _decimal(text: str) -> bool:
    """ASCII digits with at most one '.' (`1.5`, `30`)."""
    whole, _, frac = text.partition(".")
    return ascii_int(whole) is not None and (not frac or ascii_int(frac) is not None)


_AGO_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_when(text: str, now: float) -> float:
    """A point in time: `30m`, `2h`, `7d` (that long ago), an ISO date or date-time
    (`2026-11-30`, `2026-11-30T14:00`, with or without a zone; none: local time) or a
    Unix timestamp."""
    import datetime as dt

    value = text.strip()
    if len(value) > 1 and value[-1] in _AGO_UNITS and _decimal(value[:-1]):
        return now - float(value[:-1]) * _AGO_UNITS[value[-1]]
    if _decimal(value) and len(value) >= 9:
        return float(value)
    try:
        at = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use a duration ago (30m, 2h, 7d), an ISO date or "
            "date-time (2026-11-30, 2026-11-30T14:00Z) or a Unix timestamp"
        ) from None
    if at.tzinfo is None:
        at = at.astimezone()  # local time
    return at.timestamp()
