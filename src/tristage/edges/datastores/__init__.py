"""Data stores of environments: a small protocol, SQLite and PostgreSQL implementations.

`open_datastore(url)` takes the DATABASE_URL an app receives:
``sqlite:////absolute/path.sqlite3`` or ``postgresql://user@host:port/dbname``.
"""

from __future__ import annotations

from .base import BATCH_ROWS, DataStore, DataStoreError, LoadError, Reader, SourcedRow, Writer
from .postgres import PostgresDataStore
from .sqlite import SqliteDataStore, path_from_url


def open_datastore(url: str, role: str | None = None) -> SqliteDataStore | PostgresDataStore:
    """The store at `url`; on PostgreSQL, writes run as `role` if given."""
    if url.startswith("sqlite:///"):
        return SqliteDataStore(path_from_url(url))
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDataStore(url, role)
    raise DataStoreError(
        f"unsupported database URL scheme in {url.split('://', 1)[0]!r}",
        "use sqlite:////absolute/path or postgresql://host:port/dbname",
    )


__all__ = [
    "BATCH_ROWS",
    "DataStore",
    "DataStoreError",
    "LoadError",
    "PostgresDataStore",
    "Reader",
    "SourcedRow",
    "SqliteDataStore",
    "Writer",
    "open_datastore",
    "path_from_url",
]
