"""The pure webhook domain: retry schedule with jitter, state machine, URLs, samples."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tristage.domain import webhooks as dom

SVIX_LIKE = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]


@given(
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
    st.floats(min_value=0, max_value=1, allow_nan=False),
)
def test_jitter_stays_within_twenty_percent(delay: float, u: float) -> None:
    got = dom.jittered(delay, u)
    assert delay * (1 - dom.JITTER) - 1e-9 <= got <= delay * (1 + dom.JITTER) + 1e-9


def test_jitter_refuses_a_draw_outside_unit_interval() -> None:
    with pytest.raises(ValueError):
        dom.jittered(5.0, 1.5)


def test_retry_delay_follows_the_schedule_then_stops() -> None:
    assert dom.retry_delay(SVIX_LIKE, 1, 0.5) == pytest.approx(5.0)
    assert dom.retry_delay(SVIX_LIKE, 2, 0.5) == pytest.approx(300.0)
    assert dom.retry_delay(SVIX_LIKE, 7, 0.5) == pytest.approx(36000.0)
    assert dom.retry_delay(SVIX_LIKE, 8, 0.5) is None
    with pytest.raises(ValueError):
        dom.retry_delay(SVIX_LIKE, 0, 0.5)


def test_state_machine_success_failure_and_dead_letter() -> None:
    ok = dom.after_attempt(0, dom.Outcome(204), [1.0], 100.0, 0.5)
    assert ok == dom.Transition(dom.DeliveryStatus.delivered, 1, None)

    failed = dom.after_attempt(0, dom.Outcome(500, "HTTP 500"), [1.0, 2.0], 100.0, 0.5)
    assert failed.status is dom.DeliveryStatus.failed
    assert failed.tries == 1 and failed.next_attempt_at == pytest.approx(101.0)

    refused = dom.after_attempt(1, dom.Outcome(None, "refused"), [1.0, 2.0], 100.0, 0.5)
    assert refused.status is dom.DeliveryStatus.failed
    assert refused.next_attempt_at == pytest.approx(102.0)

    dead = dom.after_attempt(2, dom.Outcome(None, "refused"), [1.0, 2.0], 100.0, 0.5)
    assert dead == dom.Transition(dom.DeliveryStatus.dead, 3, None)
    assert dom.max_attempts([1.0, 2.0]) == 3


@given(st.lists(st.integers(min_value=100, max_value=599), min_size=1, max_size=12))
def test_any_sequence_of_answers_ends_delivered_or_dead_within_the_schedule(
    codes: list[int],
) -> None:
    schedule = [1.0, 2.0, 4.0]
    tries, now = 0, 0.0
    status = dom.DeliveryStatus.pending
    for code in codes:
        tr = dom.after_attempt(tries, dom.Outcome(code), schedule, now, 0.3)
        tries, status = tr.tries, tr.status
        if not status.waiting:
            break
        assert tr.next_attempt_at is not None and tr.next_attempt_at > now
        now = tr.next_attempt_at
    assert tries <= dom.max_attempts(schedule)
    made = codes[: dom.max_attempts(schedule)]
    first_ok = next((i for i, c in enumerate(made) if 200 <= c < 300), None)
    gone = next((i for i, c in enumerate(made) if c == dom.GONE), None)
    if gone is not None and (first_ok is None or gone < first_ok):
        assert status is dom.DeliveryStatus.dead and tries == gone + 1  # 410: no retry
    elif first_ok is not None:
        assert status is dom.DeliveryStatus.delivered
    elif len(codes) >= dom.max_attempts(schedule):
        assert status is dom.DeliveryStatus.dead


def test_requeue_starts_over() -> None:
    tr = dom.requeue(50.0)
    assert tr == dom.Transition(dom.DeliveryStatus.pending, 0, 50.0)


def test_ingest_urls_per_environment_and_production_bare_host() -> None:
    assert dom.ingest_urls("shop", "preview", "clerk", production=False) == [
        "http://preview.shop.localhost:8080/.tristage/webhooks/clerk"
    ]
    assert dom.ingest_urls("shop", "production", "stripe", production=True, port=9000) == [
        "http://production.shop.localhost:9000/.tristage/webhooks/stripe",
        "http://shop.localhost:9000/.tristage/webhooks/stripe",
    ]
    assert dom.forward_url("http://127.0.0.1:5000/", "/clerk") == "http://127.0.0.1:5000/clerk"


@pytest.mark.parametrize("event_type", dom.CLERK_EVENTS)
def test_clerk_samples_have_the_shape_clerk_sends(event_type: str) -> None:
    msg_id, event = dom.sample_event("clerk", event_type, 1_700_000_000.0, random.Random(1))
    assert msg_id.startswith("msg_")
    assert event["type"] == event_type and event["object"] == "event"
    assert event["timestamp"] == 1_700_000_000_000
    data = event["data"]
    if event_type == "user.deleted":
        assert data["deleted"] is True and data["id"].startswith("user_")
    elif event_type.startswith("user."):
        assert data["object"] == "user"
        assert data["email_addresses"][0]["id"] == data["primary_email_address_id"]
    else:
        assert data["object"] == "commerce_payment_attempt"
    json.dumps(event)  # serializable


def test_sample_users_are_distinct_people() -> None:
    """Two test `user.created` events (say, one per environment) never share an address."""
    rng = random.Random(7)
    emails = [
        dom.sample_event("clerk", "user.created", 1_700_000_000.0, rng)[1]["data"][
            "email_addresses"
        ][0]["email_address"]
        for _ in range(300)
    ]
    assert len(set(emails)) == len(emails)
    assert all(e == e.lower() and e.endswith("@example.com") and "+" in e for e in emails)


@pytest.mark.parametrize("event_type", [*dom.STRIPE_EVENTS, "customer.created"])
def test_stripe_samples_are_events_with_ids(event_type: str) -> None:
    msg_id, event = dom.sample_event("stripe", event_type, 1_700_000_000.0, random.Random(2))
    assert msg_id == event["id"] and msg_id.startswith("evt_")
    assert event["object"] == "event" and event["type"] == event_type
    assert "object" in event["data"]["object"]


def test_standard_sample_and_distinct_ids() -> None:
    rng = random.Random(3)
    a = dom.sample_event("standard", "invoice.paid", 0.0, rng)
    b = dom.sample_event("standard", "invoice.paid", 0.0, rng)
    assert a[0] != b[0]
    assert a[1]["type"] == "invoice.paid" and a[1]["timestamp"] == "1970-01-01T00:00:00Z"


# The fields of Clerk's documented `paymentAttempt.updated` event.
CLERK_PAYMENT_ATTEMPT = {
    "billing_date", "charge_type", "created_at", "failed_at", "failed_reason",
    "gateway_external_id", "id", "instance_id", "paid_at", "payee", "payer", "payment_id",
    "payment_source", "statement_id", "status", "subscription_items", "totals", "updated_at",
}  # fmt: skip
CLERK_SUBSCRIPTION_ITEM = {
    "amount", "canceled_at", "credit", "id", "lifetime_paid", "next_payment_amount",
    "next_payment_date", "past_due_at", "period_end", "period_start", "plan", "plan_id",
    "plan_period", "proration_date", "status",
}  # fmt: skip
CLERK_PLAN = {
    "amount", "annual_monthly_amount", "currency", "description", "has_base_fee", "id",
    "instance_id", "interval", "is_default", "is_prorated", "is_recurring", "name", "period",
    "product_id", "publicly_visible", "slug",
}  # fmt: skip


def test_clerk_payment_attempt_sample_carries_every_documented_field() -> None:
    _, event = dom.sample_event("clerk", "paymentAttempt.updated", 1.7e9, random.Random(4))
    data = event["data"]
    assert set(data) >= CLERK_PAYMENT_ATTEMPT
    assert {"gateway_external_id", "gateway_status", "gateway_type", "id"} <= set(data["payee"])
    assert {"email", "first_name", "last_name", "user_id", "id"} <= set(data["payer"])
    assert {"card_type", "gateway", "last4", "payment_method", "status"} <= set(
        data["payment_source"]
    )
    assert {"grand_total", "subtotal", "tax_total"} <= set(data["totals"])
    item = data["subscription_items"][0]
    assert set(item) >= CLERK_SUBSCRIPTION_ITEM and set(item["plan"]) >= CLERK_PLAN
    assert item["plan_id"] == item["plan"]["id"]


def _fields(cls: type) -> set[str]:
    return {k for k in cls.__annotations__ if k[0].islower()}


@pytest.mark.parametrize("event_type", dom.STRIPE_EVENTS)
def test_stripe_samples_carry_every_field_and_parse_with_the_stripe_library(
    event_type: str,
) -> None:
    import stripe
    from stripe.checkout import Session

    classes = {
        "payment_intent": stripe.PaymentIntent,
        "checkout": Session,
        "customer": stripe.Subscription,
        "invoice": stripe.Invoice,
    }
    _, event = dom.sample_event("stripe", event_type, 1.7e9, random.Random(5))
    parsed = stripe.Event.construct_from(json.loads(json.dumps(event)), "sk_test_x")
    assert parsed.type == event_type and _fields(stripe.Event) <= set(event)
    obj = parsed.data.object
    cls = classes[event_type.split(".", 1)[0]]
    assert isinstance(obj, cls), type(obj)
    missing = _fields(cls) - set(event["data"]["object"]) - {"deleted"}
    assert not missing, sorted(missing)
    if cls is stripe.Subscription:
        item = obj["items"]["data"][0]
        assert isinstance(item, stripe.SubscriptionItem)
        assert isinstance(item.price, stripe.Price)
        raw = event["data"]["object"]["items"]["data"][0]
        assert not _fields(stripe.SubscriptionItem) - set(raw) - {"deleted"}
        assert not _fields(stripe.Price) - set(raw["price"]) - {"deleted"}


# ---------------------------------------------------------------------------
# Delivery signals, filters, destinations, times


def test_retry_after_in_seconds_or_an_http_date_capped() -> None:
    now = 1_700_000_000.0
    assert dom.parse_retry_after("2", now) == 2.0
    assert dom.parse_retry_after(" 120 ", now) == 120.0
    assert dom.parse_retry_after("999999", now) == dom.RETRY_AFTER_CAP
    from email.utils import formatdate

    assert dom.parse_retry_after(formatdate(now + 30, usegmt=True), now) == 30.0
    assert dom.parse_retry_after(formatdate(now - 30, usegmt=True), now) == 0.0
    for junk in (None, "", "soon", "-5", "1.5e3"):
        assert dom.parse_retry_after(junk, now) is None


def test_410_is_dead_at_once_429_backs_off_harder_and_retry_after_is_a_floor() -> None:
    schedule = [1.0, 2.0, 3.0]
    gone = dom.after_attempt(0, dom.Outcome(410, "HTTP 410"), schedule, 0.0, 0.5)
    assert gone.status == dom.DeliveryStatus.dead and gone.tries == 1
    plain = dom.after_attempt(0, dom.Outcome(500), schedule, 0.0, 0.5)
    limited = dom.after_attempt(0, dom.Outcome(429), schedule, 0.0, 0.5)
    assert plain.next_attempt_at == 1.0 and limited.next_attempt_at == 4.0
    told = dom.after_attempt(0, dom.Outcome(429, retry_after=2.0), [0.05], 10.0, 0.5)
    assert told.next_attempt_at == 12.0
    short = dom.after_attempt(0, dom.Outcome(503, retry_after=0.1), schedule, 0.0, 0.5)
    assert short.next_attempt_at == 1.0  # never sooner than the schedule
    last = dom.after_attempt(3, dom.Outcome(429, retry_after=5.0), schedule, 0.0, 0.5)
    assert last.status == dom.DeliveryStatus.dead  # the schedule still ends


def test_event_filters_match_names_and_globs() -> None:
    patterns = ["user.*", "paymentAttempt.updated"]
    assert dom.event_selected(patterns, "user.created")
    assert dom.event_selected(patterns, "paymentAttempt.updated")
    assert not dom.event_selected(patterns, "paymentAttempt.created")
    assert not dom.event_selected(patterns, "session.created")
    assert not dom.event_selected(patterns, None)
    assert dom.event_selected([], None) and dom.event_selected([], "anything")


def test_a_delivery_is_delivered_when_every_destination_is() -> None:
    T, S = dom.Transition, dom.DeliveryStatus
    done, dead = T(S.delivered, 1, None), T(S.dead, 8, None)
    waiting = T(S.failed, 2, 50.0)
    assert dom.combine([done, done]).status == S.delivered
    both = dom.combine([done, waiting, T(S.failed, 1, 20.0)])
    assert both.status == S.failed and both.next_attempt_at == 20.0 and both.tries == 2
    assert dom.combine([done, dead]).status == S.dead
    assert dom.combine([T(S.pending, 0, 5.0)]).status == S.pending


def test_rates_and_times_on_the_command_line() -> None:
    from tristage.domain.config import parse_rate

    assert parse_rate("10/s") == 10.0 and parse_rate("600/m") == 10.0
    assert parse_rate("36/h") == 0.01
    for bad in ("10", "x/s", "0/s", "5/day"):
        with pytest.raises(ValueError, match="not a rate"):
            parse_rate(bad)
    now = 1_700_000_000.0
    assert dom.parse_when("2h", now) == now - 7200
    assert dom.parse_when("30m", now) == now - 1800
    assert dom.parse_when("2023-11-14T22:13:20Z", now) == now
    assert dom.parse_when("1700000000", now) == now
    with pytest.raises(ValueError, match="not a time"):
        dom.parse_when("yesterday", now)


def test_bad_routing_and_limit_keys_are_one_clear_error_each() -> None:
    from tristage.domain.config import parse_config
    from tristage.errors import ConfigError

    base = (
        '[project]\nname = "shop"\n[environments.production]\ntier = "production"\n'
        '[environments.production.webhooks.clerk]\nkind = "clerk"\nsecret_var = "S"\n'
    )
    good = parse_config(base + 'events = ["user.*"]\nrate = "10/s"\nmax_in_flight = 4\n')
    src = good.environments["production"].webhooks["clerk"]
    assert [d.label for d in src.routes()] == ["app"] and src.routes()[0].path == "/webhooks"
    assert good.environments["production"].webhook_retain_days == 30.0
    cases = {
        'rate = "fast"': "not a rate",
        'events = ["user created"]': "not an event type",
        'destinations = [{ path = "/a", url = "http://x/b" }]': "exactly one of",
        'destinations = [{ url = "ftp://x/b" }]': "http:// or https://",
        'destinations = [{ path = "/a" }, { path = "/b" }]': "distinct `name`",
        "max_in_flight = 0": "greater than or equal to 1",
    }
    for line, message in cases.items():
        with pytest.raises(ConfigError, match=r"environments\.production\.webhooks\.clerk") as err:
            parse_config(base + line + "\n")
        assert message in str(err.value), (line, str(err.value))


# The fields of Clerk's user object as its `user.created` / `user.updated` webhooks carry
# it (the documented example payload plus the Backend API's User object).
CLERK_USER = {
    "backup_code_enabled", "banned", "birthday", "create_organization_enabled",
    "create_organizations_limit", "created_at", "delete_self_enabled", "email_addresses",
    "enterprise_accounts", "external_accounts", "external_id", "first_name", "gender",
    "has_image", "id", "image_url", "last_active_at", "last_name", "last_sign_in_at",
    "legal_accepted_at", "locked", "lockout_expires_in_seconds", "mfa_disabled_at",
    "mfa_enabled_at", "object", "passkeys", "password_enabled", "password_last_updated_at",
    "phone_numbers", "primary_email_address_id", "primary_phone_number_id",
    "primary_web3_wallet_id", "private_metadata", "profile_image_url", "public_metadata",
    "saml_accounts", "totp_enabled", "two_factor_enabled", "unsafe_metadata", "updated_at",
    "username", "verification_attempts_remaining", "web3_wallets",
}  # fmt: skip
CLERK_EMAIL = {
    "created_at", "email_address", "id", "linked_to", "matches_sso_connection", "object",
    "reserved", "updated_at", "verification",
}  # fmt: skip
CLERK_ENVELOPE = {"data", "event_attributes", "instance_id", "object", "timestamp", "type"}


@pytest.mark.parametrize("event_type", ["user.created", "user.updated", "user.deleted"])
def test_clerk_user_samples_carry_every_documented_field(event_type: str) -> None:
    _, event = dom.sample_event("clerk", event_type, 1.7e9, random.Random(6))
    assert set(event) == CLERK_ENVELOPE
    assert set(event["event_attributes"]["http_request"]) == {"client_ip", "user_agent"}
    data = event["data"]
    if event_type == "user.deleted":
        assert data == {"deleted": True, "id": data["id"], "object": "user"}
        return
    assert set(data) >= CLERK_USER, sorted(CLERK_USER - set(data))
    email = data["email_addresses"][0]
    assert set(email) >= CLERK_EMAIL
    assert {"attempts", "expire_at", "status", "strategy"} <= set(email["verification"])


def test_retry_after_and_times_take_ascii_digits_only() -> None:
    assert dom.parse_retry_after("²", 0.0) is None
    assert dom.parse_retry_after("٣", 0.0) is None
    for bad in ("²h", "+5m", "1_0d"):
        with pytest.raises(ValueError, match="not a time"):
            dom.parse_when(bad, 0.0)
    assert dom.parse_when("1.5h", 7200.0) == 1800.0
