"""The deterministic keyed transforms of sanitize rules. Pure.

Every transform is a function of HMAC-SHA256(project key, value): the same input gives
the same output in every table and every clone, so joins on sanitized columns still
match. Distinct inputs stay distinct: `email` and `hash` carry 80 bits of the digest,
`name` 64; `phone` is a keyed permutation of the number's digits (one to eleven
digits: two numbers never share a pseudonym) into Berlin numbers `+49 30 …` of eleven
digits that `phonenumbers` accepts as valid (longer inputs take 36 bits of the digest).

Arrays are transformed element by element; JSON documents by their string leaves, or
by the fields JSON-path rules name; `scrub` replaces the emails, phone numbers, card
numbers and national ids inside free text by their pseudonyms and keeps the rest.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from . import json_paths, pii_values
from .snapshot import JsonValue

CACHE_ENTRIES = 1 << 14  # per rule; values repeat across rows and tables (emails, names)

_ONSETS = ("b", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "io")
_CODAS = ("", "n")
_SYLLABLES = tuple(o + v + c for o in _ONSETS for v in _VOWELS for c in _CODAS)  # 256
_STREETS = ("Oak", "Maple", "Cedar", "Elm", "Pine", "Birch", "Willow", "Ash", "Linden",
            "Hazel", "Alder", "Rowan")  # fmt: skip
_CITIES = ("Springfield", "Riverton", "Lakeside", "Fairview", "Greenville", "Milton",
           "Ashford", "Brookhaven")  # fmt: skip

PHONE_PREFIX = "+49 30 "  # Berlin: eleven more digits are a valid number (15 in E.164)
PHONE_DIGITS = 11
_PHONE_SPACE = 10**PHONE_DIGITS
_HALF = 316_228  # _HALF**2 >= _PHONE_SPACE: a Feistel network on two halves


class RuleLike(Protocol):
    @property
    def column(self) -> str: ...

    @property
    def rule(self) -> str: ...

    @property
    def paths(self) -> tuple[tuple[json_paths.JsonPath, str], ...]: ...


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


def _word(d: bytes) -> str:
    return "".join(_SYLLABLES[b] for b in d).capitalize()


def _email(d: bytes, v: Any) -> Any:
    return f"user-{d[:10].hex()}@example.invalid"


def _hash(d: bytes, v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool):
        return int.from_bytes(d[:7], "big")
    if isinstance(v, bytes | bytearray | memoryview):
        return d
    return d.hex()


def _name(d: bytes, v: Any) -> Any:
    """'Kavi Lorenta-Musiben': 16 bits of given name, 48 of family name."""
    return f"{_word(d[:2])} {_word(d[2:5])}-{_word(d[5:8])}"


def _address(d: bytes, v: Any) -> Any:
    n = int.from_bytes(d[:8], "big")
    return (
        f"{n % 9000 + 100} {_STREETS[(n // 9000) % len(_STREETS)]} Street, "
        f"{_CITIES[(n // 997) % len(_CITIES)]}"
    )


def _card(d: bytes) -> str:
    """A 16-digit number of the 4000 00 test range that passes the Luhn check."""
    body = "400000" + f"{int.from_bytes(d[:8], 'big') % 10**9:09d}"
    for check in "0123456789":
        if pii_values.luhn(body + check):
            return body + check
    raise AssertionError("unreachable")


def _national_id(d: bytes, text: str) -> str:
    n = int.from_bytes(d[:8], "big")
    if "-" in text:  # 9xx-xx-xxxx is never issued as a social security number
        return f"9{n % 100:02d}-{(n // 100) % 100:02d}-{(n // 10**4) % 10**4:04d}"
    return f"ZZ{n % 10**6:06d}A"


_SHAPES: dict[str, Callable[[bytes, Any], Any]] = {
    "email": _email,
    "hash": _hash,
    "name": _name,
    "address": _address,
}


def _keep(v: Any) -> Any:
    return v


def _null(v: Any) -> Any:
    return None


def _redact(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, list):
        return [_redact(x) for x in v]
    return "[redacted]"


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

    def _mac(self, data: bytes) -> bytes:
        i = self._inner.copy()
        i.update(data)
        o = self._outer.copy()
        o.update(i.digest())
        return o.digest()

    # -- phone: a keyed permutation of [0, 10**11) ------------------------------
    def _feistel(self, n: int) -> int:
        while True:  # cycle-walk until the value is inside the space again
            left, right = divmod(n, _HALF)
            for r in range(6):
                f = int.from_bytes(self._mac(b"p%d:%d" % (r, right))[:8], "big") % _HALF
                left, right = right, (left + f) % _HALF
            n = left * _HALF + right
            if n < _PHONE_SPACE:
                return n

    def _phone(self, d: bytes, v: Any) -> Any:
        digits = re.sub(r"\D", "", v if isinstance(v, str) else str(v))
        if 1 <= len(digits) <= PHONE_DIGITS:
            n = self._feistel(int(digits))
        else:
            n = int.from_bytes(d[:8], "big") % _PHONE_SPACE
        return f"{PHONE_PREFIX}{n:0{PHONE_DIGITS}d}"

    # -- scrub: personal data inside free text ---------------------------------
    def _scrub_text(self, text: str) -> str:
        parts: list[str] = []
        pos = 0
        for start, end, kind in pii_values.spans(text):
            found = text[start:end]
            d = self.digest(found)
            if kind == "email":
                new = _email(d, found)
            elif kind == "card":
                new = _card(d)
            elif kind == "national id":
                new = _national_id(d, found)
            else:
                new = self._phone(d, found)
            parts.append(text[pos:start])
            parts.append(new)
            pos = end
        if not parts:
            return text
        parts.append(text[pos:])
        return "".join(parts)

    def _scrub(self, d: bytes, v: Any) -> Any:
        return self._scrub_text(v) if isinstance(v, str) else v

    def _shape(self, rule: str) -> Callable[[bytes, Any], Any]:
        shape = _SHAPES.get(rule)
        if shape is not None:
            return shape
        if rule == "phone":
            return self._phone
        if rule == "scrub":
            return self._scrub
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
        return self.rule_function(rule)(v)

    def rule_function(self, rule: str) -> Callable[[Any], Any]:
        """The function of one rule (arrays element-wise, JSON documents by their string
        leaves), remembering recent results (bounded memory)."""
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

    def column_function(
        self, rule: str, paths: Sequence[tuple[json_paths.JsonPath, str]] = ()
    ) -> Callable[[Any], Any]:
        """The function of a column's rule; `json` applies each path's rule."""
        if rule != "json":
            return self.rule_function(rule)
        steps = [(p, self.rule_function(r)) for p, r in paths]

        def doc(value: Any) -> Any:
            for path, fn in steps:
                value = json_paths.apply(value, path, fn)
            return value

        def run(v: Any) -> Any:
            if v is None:
                return None
            if isinstance(v, JsonValue):
                return JsonValue(doc(v.value))
            if isinstance(v, str):  # a JSON column kept as text (SQLite)
                try:
                    parsed = json.loads(v)
                except ValueError:
                    return self._scrub_text(v)  # not JSON: its personal data goes anyway
                return json.dumps(doc(parsed), ensure_ascii=False, separators=(",", ":"))
            if isinstance(v, dict | list):
                return doc(v)
            return v

        return run

    def _cached(self, rule: str, shape: Callable[[bytes, Any], Any]) -> Callable[[Any], Any]:
        inner, outer = self._inner, self._outer
        digest = self.digest
        cache: dict[Any, Any] = {}  # str values by themselves, others by (type, value)
        miss = cache
        numbers = rule == "hash"  # only hash rewrites numbers inside documents

        def walk(v: Any) -> Any:
            if isinstance(v, str):
                return run(v)
            if isinstance(v, dict):
                return {k: walk(x) for k, x in v.items()}
            if isinstance(v, list):
                return [walk(x) for x in v]
            if numbers and isinstance(v, int | float) and not isinstance(v, bool):
                return run(v)
            return v

        def run(v: Any) -> Any:
            if v is None:
                return None
            key: Any
            cls = v.__class__
            if cls is str:
                key = v
                out = cache.get(key, miss)
                if out is not miss:
                    return out
                i = inner.copy()
                i.update(b"s" + v.encode("utf-8"))
                o = outer.copy()
                o.update(i.digest())
                out = shape(o.digest(), v)
            elif cls is list:  # an array: element by element
                return [run(x) for x in v]
            elif cls is JsonValue:  # a JSON document: its string leaves
                return JsonValue(walk(v.value))
            else:
                try:
                    key = (cls, v)
                    out = cache.get(key, miss)
                except TypeError:  # unhashable
                    return shape(digest(v), v)
                if out is not miss:
                    return out
                out = shape(digest(v), v)
            if len(cache) >= CACHE_ENTRIES:
                cache.clear()
            cache[key] = out
            return out

        return run

    def function(self, rule: RuleLike) -> Callable[[Any], Any]:
        return self.column_function(rule.rule, rule.paths)

    def row_function(
        self, column_names: Sequence[str], rules: Sequence[RuleLike]
    ) -> Callable[[Sequence[Any]], list[Any]]:
        """A function that sanitizes one row (values in `column_names` order)."""
        by_col = {r.column: r for r in rules}
        active = [
            (i, self.function(by_col[c]))
            for i, c in enumerate(column_names)
            if c in by_col and by_col[c].rule != "keep"
        ]

        def run(row: Sequence[Any]) -> list[Any]:
            out = list(row)
            for i, fn in active:
                out[i] = fn(out[i])
            return out

        return run
