"""Sanitization plans and deterministic transforms."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tristage.domain.sanitize import Transformer, looks_like_pii, plan, words
from tristage.domain.snapshot import Column, ForeignKey, Table


def table(
    name: str, *cols: str, pk: tuple[str, ...] = ("id",), fks: tuple[ForeignKey, ...] = ()
) -> Table:
    return Table(name, tuple(Column(c, _kind(c), _kind(c)) for c in cols), pk, fks)


def _kind(column: str) -> str:
    """Integer ids and counts, timestamps, text otherwise (what a schema would say)."""
    if column == "id" or column.endswith(("_id", "_cents", "_count")):
        return "integer"
    return "timestamptz" if column.endswith("_at") else "text"


def test_words_and_pii_detection() -> None:
    assert words("customerEmail") == ["customer", "email"]
    assert words("billing_address_line1") == ["billing", "address", "line"]
    for c in (
        "email",
        "user_email",
        "phoneNumber",
        "first_name",
        "card_number",
        "iban",
        "last_login_ip",
        "api_token",
        "client_secret",
        "password_hash",
        "zip",
    ):
        assert looks_like_pii(c), c
    for c in ("id", "amount_cents", "created_at", "zipper_count", "status", "ship_date"):
        assert not looks_like_pii(c), c


def test_plan_lists_every_unruled_column_and_keeps_keys() -> None:
    users = table("users", "id", "email", "name", "created_at", "bio")
    payments = table(
        "payments",
        "id",
        "user_id",
        "card_number",
        "amount_cents",
        fks=(ForeignKey(("user_id",), "users", ("id",)),),
    )
    p = plan([users, payments], {"users.name": "name", "users.ghost": "keep"})
    bad = {f"{x.table}.{x.column}" for x in p.problems}
    assert bad == {"users.email", "users.bio", "payments.card_number"}
    assert not p.ok and p.unused == ["users.ghost"]
    rules = {(c.table, c.column): (c.rule, c.source) for cols in p.columns.values() for c in cols}
    assert rules[("payments", "user_id")] == ("keep", "key")
    assert rules[("users", "created_at")][0] == "keep"
    assert rules[("users", "name")] == ("name", "sanitize")


def test_plan_rejects_unknown_rules_and_providers() -> None:
    t = table("users", "id", "email", "company")
    p = plan(
        [t],
        {"users.email": "scramble", "users.company": "fake:nonexistent"},
        faker_providers=lambda name: name == "company",
    )
    reasons = " ".join(x.reason for x in p.problems)
    assert "unknown rule 'scramble'" in reasons and "no provider 'nonexistent'" in reasons
    ok = plan(
        [t],
        {"users.email": "email", "users.company": "fake:company"},
        faker_providers=lambda name: name == "company",
    )
    assert ok.ok


KEY = b"k" * 32


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40), st.emails())
def test_transforms_are_deterministic_and_hide_input(value: str, email: str) -> None:
    a, b = Transformer(KEY), Transformer(KEY)
    for rule in ("email", "phone", "name", "address", "hash", "redact", "null"):
        assert a.apply(rule, value) == b.apply(rule, value)
        out = a.apply(rule, email)
        assert out is None or email not in out
    assert Transformer(b"other-key" * 4).apply("email", value) != a.apply("email", value)


def test_unique_inputs_stay_unique_for_email_phone_hash() -> None:
    t = Transformer(KEY)
    values = [f"user{i}@example.com" for i in range(50_000)]
    for rule in ("email", "phone", "hash"):
        assert len({t.apply(rule, v) for v in values}) == len(values)
    assert len({t.apply("hash", i) for i in range(50_000)}) == 50_000


def test_row_function_applies_rules_and_passes_none() -> None:
    t = Transformer(KEY)
    users = table("users", "id", "email", "avatar")
    p = plan([users], {"users.email": "email", "users.avatar": "null"})
    fn = t.row_function(users.column_names, p.columns["users"])
    out = fn([7, "a@b.c", b"png"])
    assert out[0] == 7 and out[1].endswith("@example.invalid") and out[2] is None
    assert fn([8, None, None]) == [8, None, None]


def test_names_of_personal_data_need_a_rule_whatever_safe_pattern_they_match() -> None:
    """`national_id` matches `*_id`, `born_on` `*_on`, `is_pregnant` `is_*`, … : the
    personal-data words win, and the refusal never suggests keeping the values."""
    cols = ("id", "national_id", "tax_id", "born_on", "blood_type", "is_pregnant",
            "salary_amount", "created_at", "amount_cents")  # fmt: skip
    p = plan([table("people", *cols)], {})
    bad = {f"{x.table}.{x.column}": x.reason for x in p.problems}
    assert set(bad) == {f"people.{c}" for c in cols[1:7]}
    assert not any('= "keep"' in reason for reason in bad.values())
    kept = {c.column for cs in p.columns.values() for c in cs if c.rule == "keep"}
    assert kept == {"id", "created_at", "amount_cents"}
