"""Sanitization plans for clones from production, and the deterministic transforms. Pure.

Every column gets a rule, from ``[sanitize]`` (``"table.column" = "email"``) or from a
default by its name (identifiers, timestamps, flags, amounts: ``keep``). Columns that
look like personal data (email, phone, name, address, card, iban, ip, token, secret…)
have no default: without a rule they stop the clone, and so does any other column no
rule or default covers (such as a column added since the rules were written).
Primary and foreign keys are kept unless their name looks like personal data.

Transforms are keyed hashes under the project's salt: the same input gives the same
output in every table and every clone, so joins and foreign keys stay consistent and
distinct inputs stay distinct (80-bit digests for email, phone and hash).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .snapshot import JsonValue, Table

RULES = ("email", "name", "phone", "address", "null", "hash", "keep", "redact")
RULE_HELP = "rules: " + " ".join(RULES) + " fake:<faker provider>"

# Words in a column name that mark it as personal or secret data.
PII_WORDS = frozenset(
    {
        "email",
        "emails",
        "mail",
        "phone",
        "phones",
        "mobile",
        "tel",
        "telephone",
        "fax",
        "name",
        "names",
        "firstname",
        "lastname",
        "fullname",
        "surname",
        "username",
        "nickname",
        "address",
        "addr",
        "street",
        "city",
        "zip",
        "zipcode",
        "postcode",
        "postal",
        "card",
        "cc",
        "pan",
        "cvv",
        "cvc",
        "iban",
        "bic",
        "swift",
        "ip",
        "token",
        "tokens",
        "secret",
        "password",
        "passwd",
        "pwd",
        "ssn",
        "dob",
        "birth",
        "birthday",
        "birthdate",
        "passport",
        "license",
        "latitude",
        "longitude",
        "lat",
        "lng",
        "apikey",
        "key",
        "salt",
        "national",
        "nationalid",
        "tax",
        "taxid",
        "born",
        "blood",
        "pregnant",
        "pregnancy",
        "salary",
        "wage",
        "income",
        "religion",
        "diagnosis",
    }
)

# Names that are safe to keep by default (matched on the whole name, lowercase).
SAFE_DEFAULTS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (p, re.compile(p))
    for p in (
        r"^_?id$",
        r"^.+_id$",
        r"^[a-z]+id$",  # userid / userId
        r"^_creationtime$",
        r"^(created|updated|deleted|inserted|modified)(_at|_on)?$",
        r"^.+_(at|on|date)$",
        r"^(status|state|type|kind|role|plan|tier|currency|locale|timezone|version)$",
        r"^(amount|price|total|quantity|qty|count|position|sort_order|priority|score)$",
        r"^.+_(amount|count|total|cents|status|type|kind)$",
        r"^(is|has|can)_.+$",
        r"^(active|enabled|verified|deleted|archived|paid)$",
    )
)


def words(column: str) -> list[str]:
    """The words of a column name: snake_case, camelCase, kebab-case, digits."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", column)
    return [w.lower() for w in re.split(r"[^A-Za-z]+|\s+", spaced) if w]


def looks_like_pii(column: str) -> bool:
    ws = words(column)
    joined = "".join(ws)
    return any(w in PII_WORDS for w in ws) or joined in PII_WORDS


def safe_default(column: str) -> str | None:
    """The default pattern that lets `column` be kept, if any."""
    name = column.lower()
    for label, pattern in SAFE_DEFAULTS:
        if pattern.match(name):
            return label
    return None


def check_rule(rule: str, faker_providers: Callable[[str], bool] | None = None) -> str | None:
    """None if `rule` is valid, else the reason."""
    if rule in RULES:
        return None
    if rule.startswith("fake:"):
        provider = rule[5:]
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", provider):
            return f"{rule!r}: the provider must be a Faker method name such as fake:company"
        if faker_providers is not None and not faker_providers(provider):
            return f"{rule!r}: Faker has no provider {provider!r}"
        return None
    return f"unknown rule {rule!r} ({RULE_HELP})"


@dataclass(frozen=True)
class ColumnRule:
    table: str
    column: str
    rule: str
    source: str  # "sanitize" (from [sanitize]), "default <pattern>", "key"


@dataclass(frozen=True)
class Problem:
    table: str
    column: str
    reason: str

    def __str__(self) -> str:
        return f"{self.table}.{self.column}: {self.reason}"


@dataclass
class Plan:
    columns: dict[str, list[ColumnRule]] = field(default_factory=dict)  # table -> rules
    problems: list[Problem] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # rules that name no column

    @property
    def ok(self) -> bool:
        return not self.problems

    def transformed(self) -> dict[str, list[str]]:
        """table -> the columns whose values change."""
        return {t: [c.column for c in cols if c.rule != "keep"] for t, cols in self.columns.items()}


def plan(
    tables: Sequence[Table],
    rules: Mapping[str, str],
    faker_providers: Callable[[str], bool] | None = None,
) -> Plan:
    """Assign a rule to every column; list every column that has none."""
    out = Plan()
    used: set[str] = set()
    for table in tables:
        keys = set(table.primary_key)
        for fk in table.foreign_keys:
            keys.update(fk.columns)
        cols: list[ColumnRule] = []
        for col in table.columns:
            ref = f"{table.name}.{col.name}"
            rule = rules.get(ref)
            if rule is not None:
                used.add(ref)
                bad = check_rule(rule, faker_providers)
                if bad:
                    out.problems.append(Problem(table.name, col.name, bad))
                    continue
                cols.append(ColumnRule(table.name, col.name, rule, "sanitize"))
                continue
            if looks_like_pii(col.name):
                out.problems.append(
                    Problem(
                        table.name,
                        col.name,
                        f'looks like personal data; add `"{ref}" = "<rule>"` to [sanitize] '
                        f"({RULE_HELP})",
                    )
                )
                continue
            if col.name in keys:
                cols.append(ColumnRule(table.name, col.name, "keep", "key"))
                continue
            default = safe_default(col.name)
            if default is not None:
                cols.append(ColumnRule(table.name, col.name, "keep", f"default {default}"))
                continue
            out.problems.append(
                Problem(
                    table.name,
                    col.name,
                    f'has no rule (new column?); add `"{ref}" = "<rule>"` to [sanitize] '
                    f"({RULE_HELP})",
                )
            )
        out.columns[table.name] = cols
    out.unused = sorted(set(rules) - used)
    return out


# ---------------------------------------------------------------------------
# Deterministic keyed transforms

_FIRST = [
    "Alex",
    "Sam",
    "Jordan",
    "Taylor",
    "Morgan",
    "Casey",
    "Riley",
    "Jamie",
    "Avery",
    "Quinn",
    "Robin",
    "Charlie",
    "Drew",
    "Emery",
    "Finley",
    "Harper",
    "Jesse",
    "Kai",
    "Logan",
    "Micah",
    "Noel",
    "Parker",
    "Reese",
    "Rowan",
    "Sage",
    "Skyler",
    "Tatum",
    "Blair",
]
_LAST = [
    "Smith",
    "Garcia",
    "Chen",
    "Müller",
    "Rossi",
    "Dubois",
    "Silva",
    "Kowalski",
    "Nakamura",
    "Okafor",
    "Larsen",
    "Novak",
    "Jensen",
    "Moreau",
    "Costa",
    "Horvat",
    "Ivanova",
    "Haddad",
    "Kaplan",
    "Lindqvist",
    "Murphy",
    "Nguyen",
    "Patel",
    "Quispe",
]
_STREETS = [
    "Oak",
    "Maple",
    "Cedar",
    "Elm",
    "Pine",
    "Birch",
    "Willow",
    "Ash",
    "Linden",
    "Hazel",
    "Alder",
    "Rowan",
]
_CITIES = [
    "Springfield",
    "Riverton",
    "Lakeside",
    "Fairview",
    "Greenville",
    "Milton",
    "Ashford",
    "Brookhaven",
]


def _key_bytes(v: Any) -> bytes:
    if isinstance(v, str):
        return b"s" + v.encode("utf-8")
    if isinstance(v, bytes | bytearray | memoryview):
        return b"b" + bytes(v)
    if isinstance(v, bool):
        return b"o" + str(v).encode()
    if isinstance(v, int):
        return b"i" + str(v).encode()
    if isinstance(v, JsonValue):
        return b"j" + v.dumps().encode("utf-8")
    return b"o" + str(v).encode("utf-8")


CACHE_ENTRIES = 1 << 14  # per rule; values repeat across rows and tables (emails, names)


def _keep(v: Any) -> Any:
    return v


def _null(v: Any) -> Any:
    return None


def _redact(v: Any) -> Any:
    return None if v is None else "[redacted]"


def _email(d: bytes, v: Any) -> Any:
    return f"user-{d[:10].hex()}@example.invalid"


def _hash(d: bytes, v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool):
        return int.from_bytes(d[:7], "big")
    if isinstance(v, bytes | bytearray | memoryview):
        return d
    return d.hex()


def _phone(d: bytes, v: Any) -> Any:
    n = int.from_bytes(d[:10], "big") % 10**14
    return f"+1 555 {n:014d}"


def _name(d: bytes, v: Any) -> Any:
    n = int.from_bytes(d[:8], "big")
    return f"{_FIRST[n % len(_FIRST)]} {_LAST[(n // 97) % len(_LAST)]}"


def _address(d: bytes, v: Any) -> Any:
    n = int.from_bytes(d[:8], "big")
    return (
        f"{n % 9000 + 100} {_STREETS[(n // 9000) % len(_STREETS)]} Street, "
        f"{_CITIES[(n // 997) % len(_CITIES)]}"
    )


_SHAPES: dict[str, Callable[[bytes, Any], Any]] = {
    "email": _email,
    "hash": _hash,
    "phone": _phone,
    "name": _name,
    "address": _address,
}


class Transformer:
    """Applies rules to values under a project key (deterministic, keyed).

    The keyed hash is HMAC-SHA256 of the value's typed bytes; its inner and outer
    states are computed once, so each value costs two SHA-256 continuations.
    """

    def __init__(self, key: bytes, faker_seeded: Callable[[int, str], Any] | None = None) -> None:
        self.key = key
        self._faker = faker_seeded
        block = hashlib.sha256().block_size
        k = hashlib.sha256(key).digest() if len(key) > block else key
        k = k.ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in k))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in k))
        self._functions: dict[str, Callable[[Any], Any]] = {}

    def digest(self, v: Any) -> bytes:
        """HMAC-SHA256(key, typed bytes of v)."""
        i = self._inner.copy()
        i.update(_key_bytes(v))
        o = self._outer.copy()
        o.update(i.digest())
        return o.digest()

    def _shape(self, rule: str) -> Callable[[bytes, Any], Any]:
        shape = _SHAPES.get(rule)
        if shape is not None:
            return shape
        if rule.startswith("fake:"):
            faker, provider = self._faker, rule[5:]
            if faker is None:
                raise ValueError("fake:<provider> rules need a Faker")

            def fake(d: bytes, v: Any) -> Any:
                out = faker(int.from_bytes(d[:8], "big"), provider)
                return out if isinstance(out, str | int | float) else str(out)

            return fake
        raise ValueError(f"unknown rule {rule!r}")

    def apply(self, rule: str, v: Any) -> Any:
        if v is None or rule == "keep":
            return v
        if rule == "null":
            return None
        if rule == "redact":
            return "[redacted]"
        return self._shape(rule)(self.digest(v), v)

    def rule_function(self, rule: str) -> Callable[[Any], Any]:
        """`apply` for one rule, remembering recent results (bounded memory)."""
        fn = self._functions.get(rule)
        if fn is not None:
            return fn
        if rule == "keep":
            fn = _keep
        elif rule == "null":
            fn = _null
        elif rule == "redact":
            fn = _redact
        else:
            fn = self._cached(rule, self._shape(rule))  # an unknown rule fails here
        self._functions[rule] = fn
        return fn

    def _cached(self, rule: str, shape: Callable[[bytes, Any], Any]) -> Callable[[Any], Any]:
        inner, outer = self._inner, self._outer
        digest = self.digest
        cache: dict[Any, Any] = {}  # str values by themselves, others by (type, value)
        miss = cache

        def run(v: Any) -> Any:
            if v is None:
                return None
            key: Any
            if v.__class__ is str:
                key = v
                out = cache.get(key, miss)
                if out is not miss:
                    return out
                i = inner.copy()
                i.update(b"s" + v.encode("utf-8"))
                o = outer.copy()
                o.update(i.digest())
                out = shape(o.digest(), v)
            else:
                try:
                    key = (v.__class__, v)
                    out = cache.get(key, miss)
                except TypeError:  # unhashable (a list from an array column)
                    return shape(digest(v), v)
                if out is not miss:
                    return out
                out = shape(digest(v), v)
            if len(cache) >= CACHE_ENTRIES:
                cache.clear()
            cache[key] = out
            return out

        return run

    def row_function(
        self, column_names: Sequence[str], rules: Sequence[ColumnRule]
    ) -> Callable[[Sequence[Any]], list[Any]]:
        """A function that sanitizes one row (values in `column_names` order)."""
        by_col = {r.column: r.rule for r in rules}
        active = [
            (i, self.rule_function(by_col[c]))
            for i, c in enumerate(column_names)
            if by_col.get(c, "keep") != "keep"
        ]

        def run(row: Sequence[Any]) -> list[Any]:
            out = list(row)
            for i, fn in active:
                out[i] = fn(out[i])
            return out

        return run
