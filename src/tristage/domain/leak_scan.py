"""The check after a sanitized clone: no production value of a ruled column in the copy.

Bounded and sampled: the first rows (in primary-key order) of each table with a
transformed column are read from the source and from the copy; every value a rule
should have replaced (the cell, each array element, each JSON string the rule's paths
reach, each email, phone, card number or national id `scrub` finds in text) is looked
for in every cell of the copy's sample (whole values, array elements, JSON strings and
the personal data found in text). Pure: the rows are passed in. Findings name
columns, never values.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import json_paths, pii_values
from .sanitize import ColumnRule
from .snapshot import JsonValue

MIN_LENGTH = 5  # shorter strings ("NY", "yes") are too common to mean a leak
MIN_NUMBER = 10**6


@dataclass
class ScanReport:
    tables: int = 0
    rows: int = 0  # copied rows looked at
    values: int = 0  # distinct production values looked for
    found: list[str] = field(default_factory=list)  # "users.email in users.notes"

    def as_json(self) -> dict[str, Any]:
        return {"tables": self.tables, "rows": self.rows, "values": self.values,
                "found": list(self.found)}  # fmt: skip


def _doc(v: Any) -> Any:
    if isinstance(v, JsonValue):
        return v.value
    return v


def _tokens(v: Any) -> Iterable[Any]:
    """Whatever a value holds that could be a copied production value."""
    v = _doc(v)
    if v is None or isinstance(v, bool):
        return
    if isinstance(v, int):
        if abs(v) >= MIN_NUMBER:
            yield v
        return
    if isinstance(v, str):
        if len(v) >= MIN_LENGTH:
            yield v
            for start, end, _ in pii_values.spans(v):
                yield v[start:end]
        return
    if isinstance(v, dict | list):
        for _, leaf in json_paths.leaves(v):
            yield from _tokens(leaf)


def _sensitive(rule: ColumnRule, v: Any) -> Iterable[Any]:
    """The production values inside `v` that `rule` must have replaced."""
    v = _doc(v)
    if v is None:
        return
    if rule.rule == "scrub":
        texts = [leaf for _, leaf in json_paths.leaves(v)] if isinstance(v, dict | list) else [v]
        for t in texts:
            if isinstance(t, str):
                for start, end, _ in pii_values.spans(t):
                    yield t[start:end]
        return
    if rule.rule == "json":
        if isinstance(v, str):
            return  # a document kept as text: its leaves are checked after parsing
        for path, _ in rule.paths:
            found: list[Any] = []

            def grab(x: Any, found: list[Any] = found) -> Any:
                found.append(x)
                return x

            json_paths.apply(v, path, grab)
            for x in found:
                yield from _tokens(x)
        return
    yield from _tokens(v)


def production_values(
    columns: Sequence[str], rules: Sequence[ColumnRule], rows: Iterable[Sequence[Any]]
) -> dict[Any, str]:
    """value -> the ruled column it came from, from sampled source rows."""
    ruled = [
        (columns.index(r.column), r) for r in rules if r.rule != "keep" and r.column in columns
    ]
    out: dict[Any, str] = {}
    for row in rows:
        for i, rule in ruled:
            for value in _sensitive(rule, _parsed(row[i]) if rule.rule == "json" else row[i]):
                out.setdefault(value, rule.column)
    return out


def _parsed(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def outputs(rows: Iterable[Sequence[Any]]) -> set[Any]:
    """Every token of transformed rows: a production value that is also what a rule
    gives for some value (a Faker first name, a short fake word) is no leak."""
    out: set[Any] = set()
    for row in rows:
        for cell in row:
            v = _parsed(cell) if isinstance(cell, str) and cell[:1] in "{[" else cell
            for token in _tokens(v):
                try:
                    out.add(token)
                except TypeError:
                    continue
    return out


def scan(
    table: str,
    columns: Sequence[str],
    values: dict[Any, str],
    rows: Iterable[Sequence[Any]],
    report: ScanReport,
    expected: set[Any] | None = None,
) -> None:
    """Look for `values` in every cell of the copied rows; add findings to `report`.
    `expected`: tokens the rules themselves produce (see `outputs`)."""
    if expected:
        values = {k: v for k, v in values.items() if k not in expected}
    report.tables += 1
    report.values += len(values)
    found: set[str] = set()
    for row in rows:
        report.rows += 1
        if not values:
            continue
        for name, cell in zip(columns, row, strict=False):
            v = _parsed(cell) if isinstance(cell, str) and cell[:1] in "{[" else cell
            for token in _tokens(v):
                try:
                    source = values.get(token)
                except TypeError:
                    continue
                if source is not None:
                    found.add(f"{table}.{source} in {table}.{name}")
    report.found.extend(sorted(found))
