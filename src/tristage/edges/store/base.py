"""The state store protocol.

Every service reaches the platform's own state through `Store`, in SQL written in the
subset SQLite and PostgreSQL share: ``?`` placeholders (an implementation translates
them), ``INSERT ... ON CONFLICT (...) DO UPDATE/DO NOTHING`` for upserts, no PRAGMA,
no ``INSERT OR REPLACE/IGNORE``. What differs between engines (locking, durability,
erasing freed pages, schema bookkeeping) sits behind the methods below. A statement
the engine refuses or fails raises `tristage.errors.StoreError`, the engine's own
error as its cause.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from ...errors import StoreError

Row = dict[str, Any]
Params = Sequence[Any] | Mapping[str, Any]
Migration = tuple[str, str]  # (id, SQL script): applied in id order, each once


class StoreBusy(StoreError):
    """`transaction(wait=False)` found the write lock held by another client."""


class Store(Protocol):
    """A transactional SQL store shared by threads and processes of one platform home."""

    def query(self, sql: str, params: Params = ()) -> list[Row]: ...

    def query_one(self, sql: str, params: Params = ()) -> Row | None: ...

    def iterate(self, sql: str, params: Params = ()) -> Iterator[Row]:
        """Stream the rows of a query in batches (a large result is never held whole)."""
        ...

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement (in its own transaction unless inside one); rows changed."""
        ...

    def insert(self, sql: str, params: Params = ()) -> int:
        """Run an INSERT into a table keyed by an integer ``id``; returns the new id."""
        ...

    def transaction(self, wait: bool = True) -> AbstractContextManager[None]:
        """One writer at a time: the write lock is taken when the block starts, so what
        it reads stays true until it commits; readers outside are never blocked. An
        exception rolls the whole block back. Nested blocks join the outer one.
        `wait=False`: raise `StoreBusy` at once, instead of waiting, when another
        client holds the write lock (a caller that must not block tries elsewhere)."""
        ...

    def migrate(self, migrations: Iterable[Migration]) -> list[str]:
        """Apply the migrations not applied yet, in id order, each in its own
        transaction and once even when several processes open the store together;
        returns the ids applied now."""
        ...

    def applied_migrations(self) -> list[str]:
        """The ids of the migrations applied so far, in id order."""
        ...

    def scrub(self) -> bool:
        """Make the values that deletes and updates replaced unrecoverable from the
        store's files (a value once written must not linger in freed pages or a log).
        False when a concurrent reader kept it from finishing: the pages are then
        overwritten by the next writes."""
        ...

    def close(self) -> None: ...
