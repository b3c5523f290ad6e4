"""The data store protocol: read a consistent snapshot, write in one transaction."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from ...domain.snapshot import Table
from ...errors import TristageError

BATCH_ROWS = 5000

# Rows handed to a writer carry a reference to where they came from
# (e.g. "tables/users.jsonl:17"), so a failing row can be named.
SourcedRow = tuple[str, Sequence[Any]]


class DataStoreError(TristageError):
    pass


class LoadError(DataStoreError):
    """A row could not be written; nothing was written."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(
            f"{where}: {reason}",
            "nothing was changed; fix that row (or the schema) and run again",
        )
        self.where = where
        self.reason = reason


class Reader(Protocol):
    """A consistent, read-only view of a data store."""

    def tables(self) -> list[Table]: ...

    def count(self, table: str) -> int: ...

    def rows(self, table: Table) -> Iterator[tuple[Any, ...]]:
        """Every row, in primary-key order, values in `table.columns` order; streams."""
        ...


class Writer(Protocol):
    """Changes inside one transaction: all of them commit, or none."""

    def tables(self) -> list[Table]: ...

    def count(self, table: str) -> int: ...

    def drop(self, names: Sequence[str]) -> None: ...

    def create(self, table: Table, source_engine: str, defer_keys: bool = False) -> None:
        """Create a table (foreign keys may be added by `finish`; with `defer_keys`, for
        rows that come from a store that enforced the keys, the primary key too)."""
        ...

    def clear(self, tables: Sequence[Table]) -> None: ...

    def insert(self, table: Table, columns: Sequence[str], rows: Iterable[SourcedRow]) -> int:
        """Insert rows in batches; a failing row raises LoadError naming its source."""
        ...

    def finish(self, created: Sequence[Table], loaded: Sequence[Table], source_engine: str) -> None:
        """Indexes and foreign keys of created tables; identity counters of loaded ones."""
        ...


class DataStore(Protocol):
    engine: str
    url: str  # the DATABASE_URL form

    def read(self) -> AbstractContextManager[Reader]: ...

    def write(self) -> AbstractContextManager[Writer]: ...

    def close(self) -> None: ...


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def batched(rows: Iterable[SourcedRow], size: int = BATCH_ROWS) -> Iterator[list[SourcedRow]]:
    batch: list[SourcedRow] = []
    for r in rows:
        batch.append(r)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
