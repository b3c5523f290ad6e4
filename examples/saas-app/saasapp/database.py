"""One small interface over SQLite (`sqlite3`) and PostgreSQL (`psycopg`, imported lazily).

SQL is written once with `?` placeholders; PostgreSQL receives `%s`. Rows come back as
plain dicts with timestamps as ISO-8601 strings and booleans as `bool`, whatever the engine.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

Engine = Literal["sqlite", "postgres"]
Row = dict[str, Any]


class DatabaseConfigError(ValueError):
    """DATABASE_URL is missing or not understood."""


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached (or its driver is missing)."""


def iso(value: dt.datetime) -> str:
    """The one text form of a timestamp: UTC, milliseconds, sortable as text."""
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class DatabaseURL:
    engine: Engine
    url: str  # as given (may hold a password: never log it)
    path: str | None = None  # sqlite only

    @classmethod
    def parse(cls, url: str | None) -> DatabaseURL:
        if not url:
            raise DatabaseConfigError(
                "DATABASE_URL is not set: use sqlite:////absolute/path.sqlite3 "
                "or postgresql://user@host:port/dbname"
            )
        if url.startswith("sqlite:///"):
            path = unquote(url[len("sqlite:///") :].split("?", 1)[0])
            if not path:
                raise DatabaseConfigError(
                    "DATABASE_URL names no SQLite file: use sqlite:////absolute/path.sqlite3"
                )
            return cls("sqlite", url, path)
        scheme = url.split(":", 1)[0].lower()
        if scheme in ("postgres", "postgresql"):
            parts = urlsplit(url)
            if not parts.path.strip("/"):
                raise DatabaseConfigError(
                    "DATABASE_URL names no PostgreSQL database: "
                    "use postgresql://user@host:port/dbname"
                )
            return cls("postgres", url)
        raise DatabaseConfigError(
            f"DATABASE_URL scheme {scheme!r} is not supported: "
            "use sqlite:////absolute/path.sqlite3 or postgresql://user@host:port/dbname"
        )

    def describe(self) -> str:
        """Where the data lives, without credentials (safe to log)."""
        if self.engine == "sqlite":
            return f"sqlite {self.path}"
        parts = urlsplit(self.url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        return f"postgres {host}{port}/{parts.path.strip('/')}"


class Connection:
    """A connection in autocommit mode; `transaction()` groups statements."""

    def __init__(self, engine: Engine, raw: Any) -> None:
        self.engine = engine
        self.raw = raw

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.engine == "postgres" else sql

    def _params(self, params: Sequence[Any]) -> tuple[Any, ...]:
        if self.engine == "sqlite":
            return tuple(iso(p) if isinstance(p, dt.datetime) else p for p in params)
        return tuple(params)

    @staticmethod
    def _row(row: Any) -> Row:
        out: Row = {}
        for key, value in dict(row).items():
            out[key] = iso(value) if isinstance(value, dt.datetime) else value
        if "deleted" in out and out["deleted"] is not None:
            out["deleted"] = bool(out["deleted"])
        return out

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        cur = self.raw.execute(self._sql(sql), self._params(params))
        return int(cur.rowcount)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cur = self.raw.execute(self._sql(sql), self._params(params))
        return [self._row(r) for r in cur.fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cur = self.raw.execute(self._sql(sql), self._params(params))
        row = cur.fetchone()
        if row is None:
            return None
        return row[0] if self.engine == "sqlite" else next(iter(row.values()))

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """All or nothing. SQLite takes the write lock up front (BEGIN IMMEDIATE)."""
        if self.engine == "sqlite":
            self.raw.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                self.raw.execute("ROLLBACK")
                raise
            self.raw.execute("COMMIT")
        else:
            with self.raw.transaction():
                yield self

    def close(self) -> None:
        self.raw.close()


class Database:
    def __init__(self, url: DatabaseURL) -> None:
        self.url = url

    @property
    def engine(self) -> Engine:
        return self.url.engine

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        conn = self._open()
        try:
            yield conn
        finally:
            conn.close()

    def _open(self) -> Connection:
        if self.url.engine == "sqlite":
            assert self.url.path is not None
            try:
                raw = sqlite3.connect(
                    self.url.path, timeout=10, isolation_level=None, check_same_thread=False
                )
            except sqlite3.Error as exc:
                raise DatabaseUnavailable(
                    f"cannot open the SQLite file {self.url.path}: {exc}"
                ) from None
            raw.row_factory = sqlite3.Row
            raw.execute("PRAGMA foreign_keys = ON")
            raw.execute("PRAGMA busy_timeout = 10000")
            return Connection("sqlite", raw)
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError:
            raise DatabaseUnavailable(
                "DATABASE_URL is PostgreSQL but the 'psycopg' package is not installed "
                "for this Python: add 'psycopg[binary]' to requirements.txt"
            ) from None
        try:
            pg = psycopg.connect(
                self.url.url, autocommit=True, row_factory=dict_row, connect_timeout=10
            )
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DatabaseUnavailable(f"cannot connect to {self.url.describe()}: {first}") from None
        return Connection("postgres", pg)
