"""The conformance suite every webhook provider passes: the built-ins and one from
outside tristage (`acme_provider`), registered as a plug-in would be."""

from __future__ import annotations

import json
import random
import time

import pytest

import acme_provider
from tristage.edges import webhook_providers as providers
from tristage.edges import webhook_verify as wv
from tristage.edges.webhook_providers import VerificationError, WebhookProvider

NAMES = providers.names()


def test_the_built_ins_and_the_plug_in_are_registered() -> None:
    assert {"clerk", "stripe", "standard", "acme"} <= set(NAMES)
    for name in NAMES:
        assert isinstance(providers.get(name), WebhookProvider)


def test_an_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(providers.UnknownProvider, match=r"use one of .*clerk"):
        providers.get("nope")


def test_a_second_provider_under_a_taken_name_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        providers.register(acme_provider.AcmeProvider())


def _samples(p: WebhookProvider) -> list[tuple[str, bytes]]:
    rng = random.Random(7)
    out = []
    for event_type in (*p.event_types(), "something.generic"):
        msg_id, event = p.sample_event(event_type, time.time(), rng)
        out.append((msg_id, json.dumps(event).encode()))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_every_sample_signs_verifies_and_forwards_verifiable_headers(name: str) -> None:
    p = providers.get(name)
    secret = p.new_secret()
    for event_type, (msg_id, body) in zip(
        (*p.event_types(), "something.generic"), _samples(p), strict=True
    ):
        now = int(time.time())
        got = wv.verify(name, [secret], p.sign(secret, msg_id, now, body), body)
        assert got.message_id == msg_id and got.event_type == event_type
        assert got.timestamp == now
        # what is forwarded verifies again, with the same provider (the app's library)
        assert got.forward and wv.verify(name, [secret], got.forward, body) == got
        # a re-signed late retry: same id, fresh time
        later = p.sign(secret, msg_id, now + 1, body)
        assert wv.verify(name, [secret], later, body).message_id == msg_id


@pytest.mark.parametrize("name", NAMES)
def test_forged_tampered_stale_ahead_and_missing_are_refused(name: str) -> None:
    p = providers.get(name)
    secret, other = p.new_secret(), p.new_secret()
    msg_id, body = _samples(p)[0]
    now = int(time.time())

    def refused(headers: dict[str, str], payload: bytes, status: int, reason: str) -> None:
        with pytest.raises(VerificationError) as exc:
            wv.verify(name, [secret], headers, payload)
        assert (exc.value.status, exc.value.reason) == (status, reason), exc.value.message
        assert payload.decode("utf-8", "replace") not in exc.value.message

    refused(p.sign(other, msg_id, now, body), body, 401, "bad_signature")
    refused(p.sign(secret, msg_id, now, body), body + b" ", 401, "bad_signature")
    refused(p.sign(secret, msg_id, now - 600, body), body, 401, "expired")
    refused(p.sign(secret, msg_id, now + 3600, body), body, 401, "expired")
    full = p.sign(secret, msg_id, now, body)
    for header in full:
        refused({k: v for k, v in full.items() if k != header}, body, 400, "missing_header")


@pytest.mark.parametrize("name", NAMES)
def test_any_of_several_secrets_verifies_and_header_case_does_not_matter(name: str) -> None:
    p = providers.get(name)
    old, new = p.new_secret(), p.new_secret()
    msg_id, body = _samples(p)[0]
    headers = {k.upper(): v for k, v in p.sign(new, msg_id, int(time.time()), body).items()}
    assert wv.verify(name, [old, new], headers, body).message_id == msg_id
