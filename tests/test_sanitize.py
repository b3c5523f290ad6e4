"""Sanitization plans and deterministic transforms."""

from __future__ import annotations

import json

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
    # amount_cents is a number: numbers need a rule (keep is one) like everything else
    assert bad == {"users.email", "users.bio", "payments.card_number", "payments.amount_cents"}
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
    assert set(bad) == {f"people.{c}" for c in cols[1:]} - {"people.created_at"}
    assert not any("keep" in reason for reason in bad.values())
    kept = {c.column for cs in p.columns.values() for c in cs if c.rule == "keep"}
    assert kept == {"id", "created_at"}


# -- fail closed: types, not names ---------------------------------------------------

import phonenumbers  # noqa: E402
import pytest  # noqa: E402

from tristage.domain import json_paths, leak_scan, pii_values, sanitize  # noqa: E402
from tristage.domain.config import parse_config  # noqa: E402
from tristage.domain.rules import Context  # noqa: E402
from tristage.domain.rules import sanitize as sanitize_rules  # noqa: E402
from tristage.domain.snapshot import JsonValue  # noqa: E402


def typed(name: str, *cols: tuple[str, str], pk: tuple[str, ...] = ("id",),
          fks: tuple[ForeignKey, ...] = ()) -> Table:  # fmt: skip
    return Table(name, tuple(Column(c, k, k) for c, k in cols), pk, fks)


def test_only_keys_of_integer_or_uuid_type_and_textless_types_go_without_a_rule() -> None:
    """The "safe names" of before leaked: a `*_id` holding emails, `state`, `status`,
    `is_*`, `*_amount`. Now the type decides, and booleans and numbers need a rule too."""
    t = typed(
        "people",
        ("id", "uuid"), ("org_id", "integer"), ("referrer_id", "text"), ("state", "text"),
        ("status", "text"), ("is_admin", "boolean"), ("total_amount", "numeric"),
        ("created_at", "timestamptz"), ("seen_on", "date"), ("born_on", "date"),
        ("code", "text"),
        fks=(ForeignKey(("org_id",), "orgs", ("id",)),),
    )  # fmt: skip
    p = plan([t], {})
    bad = {x.column for x in p.problems}
    assert bad == {"referrer_id", "state", "status", "is_admin", "total_amount", "born_on", "code"}
    kept = {c.column: c.source for c in p.columns["people"]}
    assert kept == {"id": "key", "org_id": "key", "created_at": "type timestamptz",
                    "seen_on": "type date"}  # fmt: skip
    # a text primary key is no integer: it needs a rule
    p = plan([typed("hooks", ("svix_id", "text"), pk=("svix_id",))], {})
    assert [x.column for x in p.problems] == ["svix_id"]
    assert all("keep" not in x.reason for x in p.problems)


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        ([f"p{i}@mail.test" for i in range(50)], "email"),
        ([f"+44 7700 900{i:03d}" for i in range(50)], "phone"),
        ([f"Ann Lee{chr(97 + i % 26)}" for i in range(50)], "name"),
        (["4111 1111 1111 1111", "paid"], "card"),
        (["123-45-6789"], "national id"),
        ([f"note: call me at x@y.example, {i}" for i in range(5)], "email"),
        ([4111111111111111, 5500005555555559, 378282246310005], "card"),
    ],
)
def test_keep_is_refused_when_sampled_values_look_personal(values: list[object], kind: str) -> None:
    t = typed("t", ("id", "integer"), ("v", "text"))
    p = plan([t], {"t.v": "keep"})
    assert p.ok and p.to_sniff() == {"t": p.columns["t"]}  # the key too (SQLite)
    p.sniff("t", {"v": values})
    assert not p.ok
    (problem,) = p.problems
    assert kind in problem.reason and "keep" not in problem.reason.split("is kept")[1]
    # forced with a reason: not sniffed, and the reason is recorded
    forced = plan([t], {"t.v": {"keep": True, "reason": "test fixtures, not people"}})
    assert [c.column for c in forced.to_sniff()["t"]] == ["id"]
    assert forced.forced() == {"t.v": "test fixtures, not people"}


def test_keep_passes_values_that_are_not_personal() -> None:
    t = typed("t", ("id", "integer"), ("v", "text"), ("n", "integer"))
    p = plan([t], {"t.v": "keep", "t.n": "keep"})
    p.sniff("t", {"v": ["paid", "open", "2024-05-03T12:30:01+00:00", "EUR", "v1.2.3", None],
                  "n": list(range(1000))})  # fmt: skip
    assert p.ok, p.problems


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("kep", "did you mean 'keep'"),
        ("emial", "did you mean 'email'"),
        ({"keep": True}, "needs a reason"),
        ({"json": {"email": "email"}}, "must start with '$'"),
        ({"json": {"$.email": "kep"}}, "did you mean 'keep'"),
        ({"json": {"$.email": "keep"}}, "fields no path names are kept"),
    ],
)
def test_bad_rules_are_named_with_the_closest(value: object, problem: str) -> None:
    p = plan([typed("t", ("id", "integer"), ("v", "json"))], {"t.v": value})
    assert not p.ok and problem in p.problems[0].reason


def test_check_names_a_typo_in_sanitize() -> None:
    config = parse_config(
        '[project]\nname = "shop"\n[environments.production]\ntier = "production"\n'
        'branches = ["main"]\n[sanitize]\n"users.email" = "email"\n"users.plan" = "kep"\n'
        '"users.meta" = { json = { "$.email" = "emial" } }\n',
        "tristage.toml",
    )
    found = list(sanitize_rules.check(Context(config, {}, 0.0)))
    assert [f.rule for f in found] == ["sanitize.unknown-rule"] * 2
    assert "'users.plan'" in found[0].message and "did you mean 'keep'" in found[0].message
    assert "did you mean 'email'" in found[1].message and found[0].severity == "error"


def test_json_paths_rewrite_named_fields_and_refuse_unnamed_personal_fields() -> None:
    t = typed("t", ("id", "integer"), ("profile", "json"))
    rules = {"t.profile": {"json": {"$.email": "email", "$.address": "address",
                                    "$.contacts[*].phone": "phone", "$..ssn": "null"}}}  # fmt: skip
    p = plan([t], rules)
    doc = {"email": "ann@real.test", "address": {"street": "1 Real Rd", "city": "Paris"},
           "contacts": [{"phone": "+33 6 12 34 56 78", "kind": "home"}],
           "deep": {"x": {"ssn": "123-45-6789"}}, "plan": "pro"}  # fmt: skip
    p.sniff("t", {"profile": [doc]})
    assert p.ok, p.problems
    fn = Transformer(KEY).function(p.columns["t"][1])
    out = fn(JsonValue(doc)).value
    assert out["email"].endswith("@example.invalid") and out["plan"] == "pro"
    assert "Real" not in str(out["address"]) and out["deep"]["x"]["ssn"] is None
    assert phonenumbers.is_valid_number(phonenumbers.parse(out["contacts"][0]["phone"]))
    assert out["contacts"][0]["kind"] == "home"
    # SQLite keeps JSON as text: same result, as text
    assert json.loads(fn(json.dumps(doc))) == out
    # a field no path names that holds an email stops the clone, naming the path
    p2 = plan([t], {"t.profile": {"json": {"$.email": "email"}}})
    p2.sniff("t", {"profile": [{"email": "a@b.test", "backup": f"x{i}@y.test"} for i in range(3)]})
    assert not p2.ok and "$.backup" in p2.problems[0].reason


def test_json_path_parsing() -> None:
    assert json_paths.parse("$.a.b[*].c").steps == (
        ("key", "a"), ("key", "b"), ("any", None), ("key", "c"))  # fmt: skip
    assert json_paths.parse('$["odd key"][0]..x').steps == (
        ("key", "odd key"), ("index", 0), ("deep", "x"))  # fmt: skip
    with pytest.raises(json_paths.PathError):
        json_paths.parse("$.a b")


def test_scrub_replaces_personal_data_inside_free_text_only() -> None:
    t = Transformer(KEY)
    text = ("Call Ann at +1 (415) 555-0132 or ann.lee@real.test; card 4111 1111 1111 1111, "
            "SSN 123-45-6789. Order 2024-05-03 of 3 items, ref 12345.")  # fmt: skip
    out = t.apply("scrub", text)
    for secret in ("555-0132", "ann.lee@real.test", "4111 1111 1111 1111", "123-45-6789"):
        assert secret not in out
    assert "Order 2024-05-03 of 3 items, ref 12345." in out and out.startswith("Call Ann at +49 30")
    # the same email gets the same pseudonym as the email rule: joins still match
    assert t.apply("email", "ann.lee@real.test") in out
    assert not pii_values.kinds([out]).keys() - {"email", "card", "national id"}
    assert t.apply("scrub", "nothing here") == "nothing here"


def test_arrays_are_transformed_element_by_element() -> None:
    t = Transformer(KEY)
    out = t.apply("email", ["a@real.test", None, "b@real.test"])
    assert len(out) == 3 and out[1] is None and all(o.endswith(".invalid") for o in out[::2])
    assert t.apply("redact", ["x", "y"]) == ["[redacted]", "[redacted]"]
    assert t.apply("null", ["x"]) is None


def test_name_and_phone_are_valid_and_unique() -> None:
    t = Transformer(KEY)
    names = {t.apply("name", f"Person {i}") for i in range(200_000)}
    assert len(names) == 200_000
    assert all(pii_values.is_name(n) for n in list(names)[:1000])
    phones = [t.apply("phone", f"+1 415 {i:07d}") for i in range(50_000)]
    assert len(set(phones)) == len(phones)  # a permutation: never two the same
    for p in [*phones[:500], t.apply("phone", "not a number"), t.apply("phone", "+1" + "9" * 14)]:
        assert phonenumbers.is_valid_number(phonenumbers.parse(p)), p


def test_leak_scan_finds_a_production_value_in_any_column_of_the_copy() -> None:
    users = typed("users", ("id", "integer"), ("email", "text"), ("notes", "text"))
    p = plan([users], {"users.email": "email", "users.notes": {"keep": True, "reason": "r"}})
    src = [(1, "ann@real.test", "see ann@real.test"), (2, "bob@real.test", "ok")]
    values = leak_scan.production_values(users.column_names, p.columns["users"], src)
    fn = Transformer(KEY).row_function(users.column_names, p.columns["users"])
    report = leak_scan.ScanReport()
    leak_scan.scan("users", users.column_names, values, [fn(r) for r in src], report)
    assert report.found == ["users.email in users.notes"] and report.rows == 2
    clean = leak_scan.ScanReport()
    leak_scan.scan("users", users.column_names, values, [fn((2, "bob@real.test", "ok"))], clean)
    assert clean.found == [] and clean.values == 2


def test_sanitize_module_still_exports_the_transformer() -> None:
    assert sanitize.Transformer is Transformer
