"""The state store protocol."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

Row = dict[str, Any]
Params = Sequence[Any] | Mapping[str, Any]


class Store(Protocol):
    """A transactional SQL store. Nested `transaction()` blocks join the outer one."""

    def query(self, sql: str, params: Params = ()) -> list[Row]: ...

    def query_one(self, sql: str, params: Params = ()) -> Row | None: ...

    def iterate(self, sql: str, params: Params = ()) -> Iterator[Row]: ...

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement; returns the number of rows changed."""
        ...

    def insert(self, sql: str, params: Params = ()) -> int:
        """Run an INSERT; returns the new row id."""
        ...

    def transaction(self) -> AbstractContextManager[None]: ...

    def close(self) -> None: ...
