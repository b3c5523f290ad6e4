"""Export a data store as a Convex snapshot ZIP that `npx convex import` accepts.

The layout is Convex's own snapshot export: one folder per table holding
`documents.jsonl` (one JSON object per document), and `_tables/documents.jsonl`
naming the tables. Convex's rules (convex-backend `value` and `common` crates):

- table names are identifiers (`[A-Za-z][A-Za-z0-9_]*`, at most 64 characters) not
  starting with `_` (system tables): `sales.deals` becomes `sales_deals`;
- field names are non-empty identifiers of at most 64 characters that do not start
  with `$` or `_` (`_id` and `_creationTime` are the system's): a column `_x` becomes
  `x_` (then `x__`, … if taken), other characters become `_`; keys of nested objects
  may not start with `$` either (`$x` becomes `x$`);
- values: null, booleans, strings, arrays, objects, float64 numbers (JSON numbers),
  Int64 as `{"$integer": base64 of 8 little-endian bytes}`, bytes as
  `{"$bytes": base64}`, and NaN/±Infinity as `{"$float": base64 of the double}`.

SQL values without a Convex type are written as their text: timestamps in ISO 8601,
decimals, uuids and intervals as strings. Integers within ±2^53 are plain numbers
(what a Convex app reads as `number`); larger ones `$integer`. SQL NULL is `null`.
The rows' own keys are kept as fields; Convex gives each document a new `_id`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import struct
import zipfile
from collections.abc import Iterable
from decimal import Decimal
from typing import IO, Any

from ..domain.snapshot import JsonValue, Table
from .datastores.base import Reader

_IDENT = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
MAX_SAFE = 2**53


def table_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", name).lstrip("_") or "table"
    if not base[0].isalpha():
        base = "t" + base
    return _unique(base[:64], taken)


def field_name(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", name)
    stripped = base.lstrip("_$")
    if not stripped:
        stripped = "field"
    if stripped != base:  # a leading _ moves to the end: _id -> id_
        stripped += "_" * (len(base) - len(stripped))
    if not stripped[0].isalpha():
        stripped = "f" + stripped
    return _unique(stripped[:64], taken)


def _unique(base: str, taken: set[str]) -> str:
    name = base
    while name in taken:
        name = (name + "_")[-64:] if len(name) >= 64 else name + "_"
    taken.add(name)
    return name


def _float(v: float) -> Any:
    if math.isfinite(v):
        return v
    return {"$float": base64.b64encode(struct.pack("<d", v)).decode()}


def _key(k: Any) -> str:
    k = str(k)
    return k[1:] + k[0] if k.startswith("$") else (k or "empty")


def value(v: Any) -> Any:
    """A Python value read from a data store -> its Convex JSON export form."""
    if v is None or isinstance(v, bool | str):
        return v
    if isinstance(v, int):
        if -MAX_SAFE <= v <= MAX_SAFE:
            return v
        return {"$integer": base64.b64encode(struct.pack("<q", v)).decode()}
    if isinstance(v, float):
        return _float(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(v)).decode()}
    if isinstance(v, JsonValue):
        return _json(v.value)
    if isinstance(v, list | tuple):
        return [value(x) for x in v]
    if isinstance(v, dict):
        return _json(v)
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return str(v.total_seconds())
    if isinstance(v, Decimal):
        return str(v)
    return str(v)


def _json(v: Any) -> Any:
    if isinstance(v, dict):
        return {_key(k): _json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json(x) for x in v]
    if isinstance(v, float):
        return _float(v)
    if isinstance(v, int) and not isinstance(v, bool) and not -MAX_SAFE <= v <= MAX_SAFE:
        return {"$integer": base64.b64encode(struct.pack("<q", v)).decode()}
    return v


def write_convex_zip(reader: Reader, tables: Iterable[Table], out: IO[bytes]) -> dict[str, int]:
    """Write the tables as a Convex snapshot ZIP to `out`; rows per (Convex) table."""
    counts: dict[str, int] = {}
    names: set[str] = set()
    listing: list[str] = []
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for t in tables:
            name = table_name(t.name, names)
            taken: set[str] = set()
            fields = [field_name(c, taken) for c in t.column_names]
            n = 0
            with zf.open(f"{name}/documents.jsonl", "w", force_zip64=True) as f:
                buf: list[str] = []
                for row in reader.rows(t):
                    doc = {k: value(v) for k, v in zip(fields, row, strict=True)}
                    buf.append(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
                    n += 1
                    if len(buf) >= 5000:
                        f.write(("\n".join(buf) + "\n").encode("utf-8"))
                        buf.clear()
                if buf:
                    f.write(("\n".join(buf) + "\n").encode("utf-8"))
            counts[name] = n
            listing.append(name)
        zf.writestr(
            "_tables/documents.jsonl",
            "".join(json.dumps({"name": n, "id": i}) + "\n" for i, n in enumerate(listing, 10001)),
        )
    return counts
