"""Signature verification with the providers' libraries: valid, forged, expired,
tampered, missing, malformed, rotated."""

from __future__ import annotations

import base64
import json
import secrets
import time

import pytest

from tristage.edges import webhook_verify as wv


def svix_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def stripe_secret() -> str:
    return "whsec_" + secrets.token_hex(16)


BODY = json.dumps({"id": "evt_123", "type": "user.created", "data": {"id": "u1"}}).encode()


@pytest.mark.parametrize("kind", ["clerk", "standard", "stripe"])
def test_a_correct_signature_verifies(kind: str) -> None:
    secret = stripe_secret() if kind == "stripe" else svix_secret()
    headers = wv.sign(kind, secret, "msg_1", int(time.time()), BODY)  # type: ignore[arg-type]
    got = wv.verify(kind, [secret], headers, BODY)  # type: ignore[arg-type]
    assert got.event_type == "user.created"
    assert got.message_id == ("evt_123" if kind == "stripe" else "msg_1")


@pytest.mark.parametrize("kind", ["clerk", "standard", "stripe"])
def test_forged_expired_tampered_and_missing_are_refused(kind: str) -> None:
    make = stripe_secret if kind == "stripe" else svix_secret
    secret, other = make(), make()
    now = int(time.time())

    def check(headers: dict[str, str], body: bytes, status: int, reason: str) -> None:
        with pytest.raises(wv.VerificationError) as exc:
            wv.verify(kind, [secret], headers, body)  # type: ignore[arg-type]
        assert (exc.value.status, exc.value.reason) == (status, reason)
        assert BODY.decode() not in str(exc.value)

    check(wv.sign(kind, other, "m", now, BODY), BODY, 401, "bad_signature")  # type: ignore[arg-type]
    check(wv.sign(kind, secret, "m", now - 600, BODY), BODY, 401, "expired")  # type: ignore[arg-type]
    check(
        wv.sign(kind, secret, "m", now, BODY),  # type: ignore[arg-type]
        BODY.replace(b"u1", b"u2"),
        401,
        "bad_signature",
    )
    full = wv.sign(kind, secret, "m", now, BODY)  # type: ignore[arg-type]
    for name in full:
        partial = {k: v for k, v in full.items() if k != name}
        check(partial, BODY, 400, "missing_header")


def test_clerk_accepts_webhook_prefixed_headers_and_any_header_case() -> None:
    secret = svix_secret()
    std = wv.sign("standard", secret, "msg_9", int(time.time()), BODY)
    upper = {k.upper(): v for k, v in std.items()}
    assert wv.verify("clerk", [secret], upper, BODY).message_id == "msg_9"


def test_rotation_multiple_signatures_and_multiple_secrets() -> None:
    old, new = svix_secret(), svix_secret()
    now = int(time.time())
    a = wv.sign("clerk", old, "msg_r", now, BODY)
    b = wv.sign("clerk", new, "msg_r", now, BODY)
    both = {**a, "svix-signature": f"{a['svix-signature']} {b['svix-signature']}"}
    # the provider signs with both while rotating: either secret verifies
    assert wv.verify("clerk", [new], both, BODY).message_id == "msg_r"
    assert wv.verify("clerk", [old], both, BODY).message_id == "msg_r"
    # our side holds both secrets: a delivery signed with either verifies
    assert wv.split_secrets(f" {old} , {new}\n") == [old, new]
    assert wv.verify("clerk", [old, new], b, BODY).message_id == "msg_r"

    s1, s2 = stripe_secret(), stripe_secret()
    h1 = wv.sign("stripe", s1, "", now, BODY)["stripe-signature"]
    h2 = wv.sign("stripe", s2, "", now, BODY)["stripe-signature"]
    combined = h1 + "," + h2.split(",", 1)[1]
    assert wv.verify("stripe", [s2], {"Stripe-Signature": combined}, BODY).message_id == "evt_123"
    assert wv.verify("stripe", [stripe_secret(), s1], {"stripe-signature": h1}, BODY)


@pytest.mark.parametrize(
    ("kind", "headers"),
    [
        ("clerk", {"svix-id": "m", "svix-timestamp": "yesterday", "svix-signature": "v1,AAAA"}),
        ("clerk", {"svix-id": "m", "svix-timestamp": "NOW", "svix-signature": "v1,AAAA"}),
        ("stripe", {"stripe-signature": "garbage"}),
        ("stripe", {"stripe-signature": "t=1,v0=abc"}),
    ],
)
def test_malformed_headers_are_400(kind: str, headers: dict[str, str]) -> None:
    secret = stripe_secret() if kind == "stripe" else svix_secret()
    with pytest.raises(wv.VerificationError) as exc:
        wv.verify(kind, [secret], headers, BODY)  # type: ignore[arg-type]
    assert exc.value.status == 400


def test_malformed_signature_item_is_400() -> None:
    secret = svix_secret()
    h = wv.sign("clerk", secret, "m", int(time.time()), BODY)
    h["svix-signature"] = "not-a-versioned-signature"
    with pytest.raises(wv.VerificationError) as exc:
        wv.verify("clerk", [secret], h, BODY)
    assert (exc.value.status, exc.value.reason) == (400, "malformed")


def test_non_utf8_body_and_stripe_event_without_id() -> None:
    secret = stripe_secret()
    raw = b"\xff\xfe"
    with pytest.raises(wv.VerificationError) as exc:
        wv.verify("stripe", [secret], {"stripe-signature": "t=1,v1=ab"}, raw)
    assert exc.value.status == 400
    body = b'{"type": "x"}'
    h = wv.sign("stripe", secret, "", int(time.time()), body)
    with pytest.raises(wv.VerificationError) as exc:
        wv.verify("stripe", [secret], h, body)
    assert (exc.value.status, exc.value.reason) == (400, "malformed")


def test_a_secret_that_is_not_base64_is_a_configuration_error() -> None:
    h = wv.sign("clerk", svix_secret(), "m", int(time.time()), BODY)
    with pytest.raises(wv.SecretFormatError):
        wv.verify("clerk", ["whsec_!!!not base64!!!"], h, BODY)


@pytest.mark.parametrize("kind", ["clerk", "standard", "stripe"])
def test_a_timestamp_more_than_five_minutes_ahead_is_refused(kind: str) -> None:
    """Correctly signed but dated an hour in the future: 401, like one an hour old."""
    secret = stripe_secret() if kind == "stripe" else svix_secret()
    ahead = wv.sign(kind, secret, "msg_f", int(time.time()) + 3600, BODY)  # type: ignore[arg-type]
    with pytest.raises(wv.VerificationError) as exc:
        wv.verify(kind, [secret], ahead, BODY)  # type: ignore[arg-type]
    assert (exc.value.status, exc.value.reason) == (401, "expired")
    near = wv.sign(kind, secret, "msg_n", int(time.time()) + 60, BODY)  # type: ignore[arg-type]
    assert wv.verify(kind, [secret], near, BODY).event_type == "user.created"


def test_two_spellings_of_one_header_the_first_wins() -> None:
    secret = svix_secret()
    good = wv.sign("standard", secret, "msg_d", int(time.time()), BODY)
    bad = wv.sign("standard", svix_secret(), "msg_d", int(time.time()), BODY)
    first_good = {**good, "Webhook-Signature": bad["webhook-signature"]}
    assert wv.verify("standard", [secret], first_good, BODY).message_id == "msg_d"
    first_bad = {
        **{k: v for k, v in good.items() if k != "webhook-signature"},
        "Webhook-Signature": bad["webhook-signature"],
        "webhook-signature": good["webhook-signature"],
    }
    with pytest.raises(wv.VerificationError):
        wv.verify("standard", [secret], first_bad, BODY)
