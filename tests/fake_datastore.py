"""An in-memory `DataStore` for tests: the protocol's contract without an engine.

Every value is kept as written (it has every kind natively). A read sees the state of
the moment it began; a write works on a copy that replaces the state only when its block
exits without error, so writers serialize and a failed write changes nothing. Keys are
enforced: a duplicate primary key or a NULL in a NOT NULL column fails the row that holds
it, a missing parent fails the write when it ends.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from tristage.domain.snapshot import Table
from tristage.edges.datastores import LoadError, SourcedRow

ENGINE = "memory"


@dataclass
class _Stored:
    table: Table
    rows: dict[tuple[Any, ...], tuple[Any, ...]] = field(default_factory=dict)
    next_id: int = 1
    arrival: int = 0  # order of rows in a table without a primary key


def _key(t: _Stored, row: tuple[Any, ...]) -> tuple[Any, ...]:
    names = t.table.column_names
    if not t.table.primary_key:
        t.arrival += 1
        return (t.arrival,)
    return tuple(row[names.index(c)] for c in t.table.primary_key)


class MemorySession:
    def __init__(self, state: dict[str, _Stored]) -> None:
        self.state = state

    def tables(self) -> list[Table]:
        return [self.state[n].table for n in sorted(self.state)]

    def _get(self, name: str) -> _Stored:
        if name not in self.state:
            raise LoadError(f"table {name}", "no such table")
        return self.state[name]

    def count(self, table: str) -> int:
        return len(self._get(table).rows)

    def rows(self, table: Table) -> Iterator[tuple[Any, ...]]:
        stored = self._get(table.name)
        names = stored.table.column_names
        index = [names.index(c) for c in table.column_names]
        for k in sorted(stored.rows):
            row = stored.rows[k]
            yield tuple(row[i] for i in index)

    def drop(self, names: Sequence[str]) -> None:
        for n in names:
            self.state.pop(n, None)

    def create(self, table: Table, source_engine: str, defer_keys: bool = False) -> None:
        if table.name in self.state:
            raise LoadError(f"table {table.name}", "already exists")
        self.state[table.name] = _Stored(replace(table, ddl=None, indexes=()))

    def clear(self, tables: Sequence[Table]) -> None:
        for t in tables:
            self._get(t.name).rows.clear()

    def insert(self, table: Table, columns: Sequence[str], rows: Iterable[SourcedRow]) -> int:
        stored = self._get(table.name)
        cols = stored.table.columns
        n = 0
        for ref, vals in rows:
            given = dict(zip(columns, vals, strict=True))
            for c in cols:
                if c.name not in given and c.identity:
                    given[c.name] = stored.next_id
            row = tuple(given.get(c.name) for c in cols)
            for c, v in zip(cols, row, strict=True):
                if v is None and (not c.nullable or c.name in stored.table.primary_key):
                    raise LoadError(ref, f"NULL in column {c.name!r}")
            key = _key(stored, row)
            if key in stored.rows:
                raise LoadError(ref, f"duplicate primary key {key!r}")
            stored.rows[key] = row
            for c, v in zip(cols, row, strict=True):
                if c.identity and isinstance(v, int):
                    stored.next_id = max(stored.next_id, v + 1)
            n += 1
        return n

    def finish(self, created: Sequence[Table], loaded: Sequence[Table], source_engine: str) -> None:
        pass

    def check_keys(self) -> None:
        for stored in self.state.values():
            names = stored.table.column_names
            for fk in stored.table.foreign_keys:
                parent = self._get(fk.ref_table)
                pnames = parent.table.column_names
                present = {tuple(r[pnames.index(c)] for c in fk.ref_columns)
                           for r in parent.rows.values()}  # fmt: skip
                for row in stored.rows.values():
                    ref = tuple(row[names.index(c)] for c in fk.columns)
                    if None not in ref and ref not in present:
                        raise LoadError(
                            f"table {stored.table.name}",
                            f"references a missing row of {fk.ref_table} (foreign key)",
                        )


class MemoryDataStore:
    engine = ENGINE

    def __init__(self) -> None:
        self.url = "memory://"
        self._state: dict[str, _Stored] = {}
        self._lock = threading.Lock()

    @contextmanager
    def read(self) -> Iterator[MemorySession]:
        yield MemorySession(copy.deepcopy(self._state))

    @contextmanager
    def write(self) -> Iterator[MemorySession]:
        with self._lock:
            session = MemorySession(copy.deepcopy(self._state))
            yield session
            session.check_keys()
            self._state = session.state

    def close(self) -> None:
        pass
