"""PostgreSQL COPY text rows: escaping, and sanitizing only the ruled fields of a row.

A COPY text row is tab-separated fields ending in a newline; ``\\N`` is NULL and
backslash, newline, carriage return and tab inside a value are backslash-escaped.
A clone between two PostgreSQL stores streams these rows as they are and rewrites
only the fields of columns whose rule changes them; other fields pass untouched.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from typing import Any

from ...domain.snapshot import JsonValue

NULL = b"\\N"

_UNESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)


def unescape(field: bytes) -> str:
    """The text of one COPY text field (not NULL)."""
    s = field.decode("utf-8")
    if "\\" not in s:
        return s
    return _ESCAPED.sub(lambda m: _UNESCAPES.get(m.group(1), m.group(1)), s)


def escape(s: str) -> bytes:
    return escape_str(s).encode("utf-8")


def escape_str(s: str) -> str:
    if "\\" in s:
        s = s.replace("\\", "\\\\")
    if "\n" in s or "\r" in s or "\t" in s:
        s = s.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return s


def value_text(v: Any) -> str:
    """A Python value (not None, not a list) as PostgreSQL input text, unescaped."""
    t = type(v)
    if t is str:
        return v  # type: ignore[no-any-return]
    if t is bool:
        return "t" if v else "f"
    if t is int or t is float:
        return str(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return "\\x" + bytes(v).hex()
    if isinstance(v, JsonValue):
        return v.dumps()
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return f"{v.days} days {v.seconds} seconds {v.microseconds} microseconds"
    return str(v)  # Decimal, UUID


def array_text(v: list[Any]) -> str:
    """A list as a PostgreSQL array literal (`{"a","b",NULL}`), nested lists as nested
    arrays."""
    parts = []
    for x in v:
        if x is None:
            parts.append("NULL")
        elif isinstance(x, list):
            parts.append(array_text(x))
        else:
            t = value_text(x)
            parts.append('"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(parts) + "}"


def encode_field(v: Any) -> bytes:
    """A Python value (a list as an array) as one COPY text field."""
    if v is None:
        return NULL
    if isinstance(v, list):
        return escape_str(array_text(v)).encode("utf-8")
    return escape_str(value_text(v)).encode("utf-8")


Loader = Callable[[bytes], Any]  # COPY text of one value (unescaped) -> Python value


def row_function(
    width: int,
    fields: Sequence[tuple[int, Loader, Callable[[Any], Any]]],
) -> Callable[[bytes], bytes]:
    """Rewrite the given fields of COPY text rows.

    `fields` holds (index, load, transform): `load` turns the field's text into the
    Python value a query would return, `transform` gives the new value.
    """

    def run(row: bytes) -> bytes:
        parts = row[:-1].split(b"\t")
        if len(parts) != width:
            raise ValueError(f"expected {width} fields in a COPY row, got {len(parts)}")
        for i, load, transform in fields:
            raw = parts[i]
            if raw == NULL:
                continue
            parts[i] = encode_field(transform(load(raw)))
        return b"\t".join(parts) + b"\n"

    return run


def fields_function(keep: Sequence[int]) -> Callable[[bytes], bytes]:
    """A function from a COPY text row to the row of only its fields at `keep`."""

    def row(line: bytes) -> bytes:
        parts = line.rstrip(b"\n").split(b"\t")
        return b"\t".join([parts[i] for i in keep]) + b"\n"

    return row
