"""Snapshots of a data store: the manifest model and the JSONL value encoding.

A snapshot is one JSONL file per table (one JSON object per row) plus a manifest
with the schema, row counts, the sha256 of each file, the source environment, the
time and the tool version. Pure: no I/O here.

Values that JSON cannot carry exactly are tagged objects with a single key:
``{"$b64": …}`` bytes, ``{"$dec": "1.10"}`` decimals, ``{"$ts": iso}`` timestamps,
``{"$date"}``, ``{"$time"}``, ``{"$interval": [days, seconds, µs]}``, ``{"$uuid"}``,
``{"$float": "nan"|"inf"|"-inf"}``, ``{"$json": value}`` for JSON columns and
``{"$array": [...]}`` for arrays. Convex's ``{"$bytes"}`` and ``{"$integer"}`` are read too.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import struct
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

MANIFEST_NAME = "manifest.json"
FORMAT = "tristage-snapshot/1"

# Generic column kinds, so a table can be created on another engine.
KINDS = (
    "integer",
    "real",
    "numeric",
    "boolean",
    "text",
    "blob",
    "json",
    "timestamp",
    "timestamptz",
    "date",
    "time",
    "interval",
    "uuid",
    "array",
    "other",
)


class SnapshotFormatError(ValueError):
    """A snapshot line or manifest that cannot be read; the message says why."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # the engine's own declared type, e.g. "character varying(80)" or "TEXT"
    kind: str  # one of KINDS
    nullable: bool = True
    default: str | None = None  # the engine's default expression (same engine only)
    identity: bool = False  # auto-increment / serial / identity
    generated: str | None = None  # the expression of a STORED generated column (computed)


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    ddl: str | None = None  # exact CREATE TABLE of the source engine, when it has one
    indexes: tuple[str, ...] = ()  # CREATE INDEX statements of the source engine

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column | None:
        for c in self.columns:
            if c.name == name:
                return c
        return None

    def kinds(self, columns: Sequence[str]) -> list[str]:
        """The value kind of each of `columns` ("other" for a column it does not have)."""
        return [(c.kind if (c := self.column(name)) else "other") for name in columns]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Table:
        return cls(
            name=data["name"],
            columns=tuple(Column(**c) for c in data["columns"]),
            primary_key=tuple(data.get("primary_key", ())),
            foreign_keys=tuple(
                ForeignKey(tuple(f["columns"]), f["ref_table"], tuple(f["ref_columns"]))
                for f in data.get("foreign_keys", ())
            ),
            ddl=data.get("ddl"),
            indexes=tuple(data.get("indexes", ())),
        )


@dataclass(frozen=True)
class FileEntry:
    path: str  # inside the snapshot, e.g. "tables/users.jsonl"
    rows: int
    sha256: str  # of the plain JSONL bytes
    bytes: int

    @classmethod
    def from_json(cls, table: str, data: Any) -> FileEntry:
        entry = cls(**data)
        if (
            not isinstance(entry.path, str)
            or not isinstance(entry.sha256, str)
            or any(type(n) is not int or n < 0 for n in (entry.rows, entry.bytes))
        ):
            raise SnapshotFormatError(f"the manifest's entry for table {table!r} is malformed")
        return entry


@dataclass
class Manifest:
    engine: str
    tables: list[Table]
    files: dict[str, FileEntry]
    project: str | None = None
    environment: str | None = None
    created_at: str = ""  # ISO 8601, UTC
    tool_version: str = ""
    kind: str = "export"  # export | manual | scheduled | pre-migration | safety
    note: str | None = None
    encrypted: bool = False
    format: str = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return sum(self.row_counts.values())

    @property
    def row_counts(self) -> dict[str, int]:
        """Rows per table: of its JSONL file, or (a backup that is an engine's dump
        only) as counted in the dump's own snapshot."""
        if self.files:
            return {k: f.rows for k, f in self.files.items()}
        dump = self.extra.get("dump")
        counts = dump.get("table_rows") if isinstance(dump, dict) else None
        if not isinstance(counts, dict):
            return {}
        return {str(k): v for k, v in counts.items() if type(v) is int and v >= 0}

    @property
    def dump_only(self) -> bool:
        """A backup holding the engine's own dump and no table files."""
        return not self.files and isinstance(self.extra.get("dump"), dict)

    def table(self, name: str) -> Table | None:
        for t in self.tables:
            if t.name == name:
                return t
        return None

    def to_json(self) -> str:
        data = {
            "format": self.format,
            "engine": self.engine,
            "project": self.project,
            "environment": self.environment,
            "created_at": self.created_at,
            "tool_version": self.tool_version,
            "kind": self.kind,
            "note": self.note,
            "encrypted": self.encrypted,
            "tables": [t.as_json() for t in self.tables],
            "files": {k: asdict(v) for k, v in self.files.items()},
            "extra": self.extra,
        }
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or not str(data.get("format", "")).startswith(
                "tristage-snapshot/"
            ):
                raise SnapshotFormatError("not a tristage snapshot manifest")
            return cls(
                engine=data["engine"],
                tables=[Table.from_json(t) for t in data["tables"]],
                files={k: FileEntry.from_json(k, v) for k, v in data["files"].items()},
                project=data.get("project"),
                environment=data.get("environment"),
                created_at=data.get("created_at", ""),
                tool_version=data.get("tool_version", ""),
                kind=data.get("kind", "export"),
                note=data.get("note"),
                encrypted=bool(data.get("encrypted", False)),
                format=data["format"],
                extra=dict(data.get("extra") or {}),
            )
        except SnapshotFormatError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotFormatError(f"unreadable manifest: {exc}") from None


def load_order(tables: Sequence[Table]) -> list[Table]:
    """Parents before children (by foreign keys); cycles keep their given order."""
    by_name = {t.name: t for t in tables}
    out: list[Table] = []
    state: dict[str, int] = {}

    def visit(t: Table) -> None:
        mark = state.get(t.name, 0)
        if mark:
            return  # done, or a cycle: stop here
        state[t.name] = 1
        for fk in t.foreign_keys:
            parent = by_name.get(fk.ref_table)
            if parent is not None and parent.name != t.name:
                visit(parent)
        state[t.name] = 2
        out.append(t)

    for t in tables:
        visit(t)
    return out


# ---------------------------------------------------------------------------
# The value encoding


def _compact_encoder() -> Callable[[Any], str]:
    enc = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython has the C encoder
        return enc.encode
    # the C encoder json.dumps uses, built once instead of per call
    c = make(None, enc.default, json.encoder.encode_basestring, None, ":", ",", False, False, True)

    def encode(o: Any) -> str:
        if isinstance(o, str):
            return json.encoder.encode_basestring(o)
        return "".join(c(o, 0))

    return encode


# json.dumps(o, ensure_ascii=False, separators=(",", ":")), faster
compact_json: Callable[[Any], str] = _compact_encoder()


class JsonValue:
    """A value of a JSON column, kept apart from plain strings."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JsonValue) and other.value == self.value

    def __hash__(self) -> int:
        return hash(json.dumps(self.value, sort_keys=True))

    def __repr__(self) -> str:
        return f"JsonValue({self.value!r})"

    def dumps(self) -> str:
        return compact_json(self.value)


def encode_value(v: Any) -> Any:
    """A Python value read from a data store -> a JSON-compatible value.

    Values of JSON columns arrive wrapped in `JsonValue` (a JSON column stored as text,
    as in SQLite, arrives as its text and stays text).
    """
    if v is None:
        return None
    t = type(v)
    if t is str or t is int or t is bool:
        return v
    if t is float:
        if math.isfinite(v):
            return v
        return {"$float": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}
    if isinstance(v, bytes | bytearray | memoryview):
        return {"$b64": base64.b64encode(bytes(v)).decode("ascii")}
    if isinstance(v, Decimal):
        return {"$dec": str(v)}
    if isinstance(v, dt.datetime):
        return {"$ts": v.isoformat()}
    if isinstance(v, dt.date):
        return {"$date": v.isoformat()}
    if isinstance(v, dt.time):
        return {"$time": v.isoformat()}
    if isinstance(v, dt.timedelta):
        return {"$interval": [v.days, v.seconds, v.microseconds]}
    if isinstance(v, uuid.UUID):
        return {"$uuid": str(v)}
    if isinstance(v, JsonValue):
        return {"$json": v.value}
    if isinstance(v, list | tuple):
        return {"$array": [encode_value(x) for x in v]}
    if isinstance(v, dict):
        return {"$json": v}
    return str(v)  # inet, cidr, money…: their text form loads back on the same engine


def _f(s: str) -> float:
    """tristage's `{"$float": "nan"|"inf"|"-inf"}`, or Convex's `{"$float": base64}` (the
    8 little-endian bytes of an IEEE 754 double: NaN, ±Infinity, -0.0)."""
    special = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}.get(s)
    if special is not None:
        return special
    raw = base64.b64decode(s, validate=True)
    if len(raw) != 8:
        raise ValueError(f"a $float of {len(raw)} bytes (Convex writes 8)")
    return float(struct.unpack("<d", raw)[0])


_DECODERS: dict[str, Any] = {
    "$b64": lambda s: base64.b64decode(s, validate=True),
    "$bytes": lambda s: base64.b64decode(s, validate=True),  # Convex
    "$integer": lambda s: struct.unpack("<q", base64.b64decode(s))[0],  # Convex Int64
    "$dec": Decimal,
    "$ts": dt.datetime.fromisoformat,
    "$date": dt.date.fromisoformat,
    "$time": dt.time.fromisoformat,
    "$interval": lambda p: dt.timedelta(days=p[0], seconds=p[1], microseconds=p[2]),
    "$uuid": uuid.UUID,
    "$float": _f,
    "$json": JsonValue,
}


def decode_value(j: Any) -> Any:
    """A JSON value from a snapshot line -> a Python value (raises SnapshotFormatError)."""
    if isinstance(j, dict):
        if len(j) == 1:
            ((tag, payload),) = j.items()
            if tag == "$array":
                if not isinstance(payload, list):
                    raise SnapshotFormatError("$array must hold a list")
                return [decode_value(x) for x in payload]
            decoder = _DECODERS.get(tag)
            if decoder is not None:
                try:
                    return decoder(payload)
                except Exception as exc:
                    raise SnapshotFormatError(f"bad {tag} value {payload!r}: {exc}") from None
        return JsonValue(j)
    if isinstance(j, list):
        return JsonValue(j)
    return j


def dumps_row(obj: Mapping[str, Any]) -> str:
    """One canonical JSONL line (no trailing newline)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def infer_kind(values: Sequence[Any]) -> str:
    """The kind of a column from sample JSON values (for files without a schema)."""
    kinds: set[str] = set()
    for j in values:
        if j is None:
            continue
        v = decode_value(j)
        if isinstance(v, bool):
            kinds.add("boolean")
        elif isinstance(v, int):
            kinds.add("integer")
        elif isinstance(v, float):
            kinds.add("real")
        elif isinstance(v, str):
            kinds.add("text")
        elif isinstance(v, bytes):
            kinds.add("blob")
        elif isinstance(v, Decimal):
            kinds.add("numeric")
        elif isinstance(v, dt.datetime):
            kinds.add("timestamptz" if v.tzinfo else "timestamp")
        elif isinstance(v, dt.date):
            kinds.add("date")
        elif isinstance(v, uuid.UUID):
            kinds.add("uuid")
        else:
            kinds.add("json")
    if kinds == {"integer", "real"}:
        return "real"
    if len(kinds) == 1:
        return kinds.pop()
    if not kinds:
        return "text"
    return "json"
