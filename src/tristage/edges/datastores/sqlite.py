"""SQLite data stores: one file per environment."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import stat
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

from ...domain.snapshot import (
    Column,
    ForeignKey,
    JsonValue,
    SnapshotFormatError,
    Table,
    decode_value,
)
from ...paths import make_private, private_file, private_mkdirs
from .base import BATCH_ROWS, DataStoreError, LoadError, SourcedRow, batched, quote

ENGINE = "sqlite"

KIND_TYPES = {
    "integer": "INTEGER",
    "real": "REAL",
    "numeric": "NUMERIC",
    "boolean": "BOOLEAN",
    "text": "TEXT",
    "blob": "BLOB",
    "json": "JSON",
    "timestamp": "TIMESTAMP",
    "timestamptz": "TIMESTAMP",
    "date": "DATE",
    "time": "TIME",
}


def kind_of(declared: str) -> str:
    t = declared.upper()
    for needle, kind in (
        ("INT", "integer"),
        ("BOOL", "boolean"),
        ("JSON", "json"),
        ("TIMESTAMP", "timestamp"),
        ("DATETIME", "timestamp"),
        ("DATE", "date"),
        ("TIME", "time"),
        ("UUID", "uuid"),
        ("CHAR", "text"),
        ("CLOB", "text"),
        ("TEXT", "text"),
        ("BLOB", "blob"),
        ("REAL", "real"),
        ("FLOA", "real"),
        ("DOUB", "real"),
        ("NUM", "numeric"),
        ("DEC", "numeric"),
    ):
        if needle in t:
            return kind
    return "blob" if not t else "numeric"


_NATIVE = frozenset({str, int, float, bytes})
# JSON values of a snapshot line that are not stored as they are
_JSON_NEEDS_DECODING = frozenset({dict, list, bool})


def _adapt(v: Any) -> Any:
    t = type(v)
    if v is None or t is str or t is int or t is float or t is bytes:
        return v
    if isinstance(v, JsonValue):
        return v.dumps()
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, dt.timedelta):
        return v.total_seconds()
    if isinstance(v, list | dict):
        return json.dumps(v, ensure_ascii=False, default=str)
    if isinstance(v, bytearray | memoryview):
        return bytes(v)
    return str(v)


def _adapt_json(v: Any) -> Any:
    if v is None or isinstance(v, str):
        return v
    return v.dumps() if isinstance(v, JsonValue) else json.dumps(v, default=str)


def _order(table: Table) -> str:
    order = ", ".join(quote(c) for c in table.primary_key) or "rowid"
    without_rowid = bool(table.ddl and re.search(r"WITHOUT\s+ROWID", table.ddl, re.I))
    if without_rowid and not table.primary_key:
        order = "1"
    return order


def path_from_url(url: str) -> Path:
    if not url.startswith("sqlite:///"):
        raise ValueError(f"not a sqlite URL: {url!r} (expected sqlite:////absolute/path)")
    return Path("/" + url[len("sqlite:///") :].lstrip("/"))


# Files SQLite keeps beside a database: they belong to it and move with it.
SIDECARS = ("-wal", "-shm", "-journal")


def sidecars(path: Path) -> list[Path]:
    return [Path(f"{path}{suffix}") for suffix in SIDECARS]


def check_files(path: Path) -> None:
    """Refuse a database (or one of its -wal/-shm/-journal) that is not a regular file.

    The directory of an environment's database is writable by its app: a symbolic
    link left there must never lead tristage to read or write another file.
    """
    for p in (path, *sidecars(path)):
        try:
            st = p.lstat()
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
            raise DataStoreError(
                f"{p} is {what}; a SQLite data store and its -wal/-shm files must be regular files",
                f"remove {p} (and restore the database from a backup if it was replaced)",
            )


def prepare_file(path: Path) -> Path:
    """Create the database file if missing; it and its -wal/-shm are made 0600.

    SQLite gives the -wal and -shm it creates the mode of the database file, so a
    private database stays private whatever the umask.
    """
    check_files(path)
    private_mkdirs(path.parent)
    private_file(path)
    for p in sidecars(path):
        make_private(p)
    return path


def move_database(old: Path, new: Path) -> bool:
    """Move a database file with its -wal/-shm/-journal (sidecars first, the file last,
    so an interrupted move is finished by the next call); never replaces `new`."""
    if new.exists() or not old.is_file():
        return False
    check_files(old)
    for src, dst in zip(sidecars(old), sidecars(new), strict=True):
        if src.exists():
            os.replace(src, dst)
    os.replace(old, new)
    return True


class SqliteDataStore:
    engine = ENGINE

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self.url = f"sqlite:///{self.path}"

    def _connect(self) -> sqlite3.Connection:
        prepare_file(self.path)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    @contextmanager
    def read(self) -> Iterator[SqliteSession]:
        conn = self._connect()
        try:
            conn.execute("BEGIN")
            yield SqliteSession(conn, self.path)
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextmanager
    def write(self) -> Iterator[SqliteSession]:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("PRAGMA defer_foreign_keys=ON")
            session = SqliteSession(conn, self.path)
            try:
                yield session
                session.check_foreign_keys()
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    def close(self) -> None:
        pass


class SqliteSession:
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._attached: Path | None = None
        self._functions = 0

    # -- reading ---------------------------------------------------------
    def tables(self) -> list[Table]:
        out = []
        for name, sql in self.conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type='table'"
            " AND name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall():
            out.append(self._table(name, sql))
        return out

    def _table(self, name: str, sql: str | None) -> Table:
        info = self.conn.execute(f"PRAGMA table_info({quote(name)})").fetchall()
        pk = tuple(r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5]))
        autoinc = bool(sql and re.search(r"AUTOINCREMENT", sql, re.IGNORECASE))
        cols = []
        for _cid, cname, ctype, notnull, default, pkpos in info:
            identity = bool(pkpos) and len(pk) == 1 and ctype.upper() == "INTEGER"
            cols.append(
                Column(
                    name=cname,
                    type=ctype or "",
                    kind=kind_of(ctype or ""),
                    nullable=not notnull,
                    default=default,
                    identity=identity or (autoinc and bool(pkpos)),
                )
            )
        fks: dict[int, list[tuple[str, str, str]]] = {}
        for row in self.conn.execute(f"PRAGMA foreign_key_list({quote(name)})").fetchall():
            fks.setdefault(row[0], []).append((row[2], row[3], row[4]))
        foreign = []
        for parts in fks.values():
            refs = [p[2] for p in parts]
            if any(r is None for r in refs):  # REFERENCES parent: its primary key
                pinfo = self.conn.execute(f"PRAGMA table_info({quote(parts[0][0])})").fetchall()
                refs = [r[1] for r in sorted((r for r in pinfo if r[5]), key=lambda r: r[5])]
            foreign.append(ForeignKey(tuple(p[1] for p in parts), parts[0][0], tuple(refs)))
        indexes = tuple(
            r[0]
            for r in self.conn.execute(
                "SELECT sql FROM sqlite_master WHERE type='index' AND tbl_name=?"
                " AND sql IS NOT NULL ORDER BY name",
                (name,),
            )
        )
        return Table(name, tuple(cols), pk, tuple(foreign), sql, indexes)

    def count(self, table: str) -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM {quote(table)}").fetchone()[0])

    def rows(self, table: Table) -> Iterator[tuple[Any, ...]]:
        cols = ", ".join(quote(c) for c in table.column_names)
        cur = self.conn.execute(f"SELECT {cols} FROM {quote(table.name)} ORDER BY {_order(table)}")
        while True:
            batch = cur.fetchmany(BATCH_ROWS)
            if not batch:
                return
            yield from batch

    # -- writing ---------------------------------------------------------
    def drop(self, names: Sequence[str]) -> None:
        for n in names:
            self.conn.execute(f"DROP TABLE IF EXISTS {quote(n)}")

    def create(self, table: Table, source_engine: str, defer_keys: bool = False) -> None:
        if source_engine == ENGINE and table.ddl:
            self.conn.execute(table.ddl)
            return
        parts = []
        single_identity = [c.name for c in table.columns if c.identity]
        for c in table.columns:
            ddl = f"{quote(c.name)} {KIND_TYPES.get(c.kind, 'TEXT')}"
            if c.identity and table.primary_key == (c.name,) and len(single_identity) == 1:
                ddl = f"{quote(c.name)} INTEGER PRIMARY KEY"
            elif not c.nullable:
                ddl += " NOT NULL"
            parts.append(ddl)
        if table.primary_key and not any("PRIMARY KEY" in p for p in parts):
            parts.append(f"PRIMARY KEY ({', '.join(quote(c) for c in table.primary_key)})")
        for fk in table.foreign_keys:
            parts.append(
                f"FOREIGN KEY ({', '.join(quote(c) for c in fk.columns)}) REFERENCES "
                f"{quote(fk.ref_table)} ({', '.join(quote(c) for c in fk.ref_columns)})"
            )
        self.conn.execute(f"CREATE TABLE {quote(table.name)} ({', '.join(parts)})")

    def clear(self, tables: Sequence[Table]) -> None:
        for t in reversed(tables):
            self.conn.execute(f"DELETE FROM {quote(t.name)}")

    def insert(self, table: Table, columns: Sequence[str], rows: Iterable[SourcedRow]) -> int:
        adapters: list[Callable[[Any], Any]] = []
        for name in columns:
            col = table.column(name)
            adapters.append(_adapt_json if col is not None and col.kind == "json" else _adapt)
        sql = (
            f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)})"
            f" VALUES ({', '.join('?' for _ in columns)})"
        )
        n = 0
        execute = self.conn.executemany
        for batch in batched(rows):
            values = [
                [
                    v if (v is None or type(v) in _NATIVE) else a(v)
                    for a, v in zip(adapters, vals, strict=True)
                ]
                for _ref, vals in batch
            ]
            self.conn.execute("SAVEPOINT batch")
            try:
                execute(sql, values)
            except sqlite3.Error:
                self.conn.execute("ROLLBACK TO batch")
                self._locate(sql, batch, values)
                raise
            self.conn.execute("RELEASE batch")
            n += len(batch)
        return n

    def insert_records(
        self,
        table: Table,
        columns: Sequence[str],
        records: Iterable[tuple[int, list[Any]]],
        where: Callable[[int], str],
    ) -> int:
        """Insert snapshot records (line number, JSON values in `columns` order) in
        batches; a bad value or a row SQLite refuses raises naming `where(line)`."""
        kinds = table.kinds(columns)
        convert = [_adapt_json if k == "json" else _adapt for k in kinds]
        sql = (
            f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)})"
            f" VALUES ({', '.join('?' for _ in columns)})"
        )
        n = 0
        batch: list[list[Any]] = []
        linenos: list[int] = []
        for lineno, vals in records:
            for i, j in enumerate(vals):
                if j.__class__ in _JSON_NEEDS_DECODING:
                    try:
                        vals[i] = convert[i](decode_value(j) if j.__class__ is not bool else j)
                    except SnapshotFormatError as exc:
                        raise LoadError(where(lineno), f"column {columns[i]!r}: {exc}") from None
            batch.append(vals)
            linenos.append(lineno)
            if len(batch) >= BATCH_ROWS:
                n += self._insert_batch(sql, batch, linenos, where)
        if batch:
            n += self._insert_batch(sql, batch, linenos, where)
        return n

    def _insert_batch(
        self, sql: str, batch: list[list[Any]], linenos: list[int], where: Callable[[int], str]
    ) -> int:
        self.conn.execute("SAVEPOINT batch")
        try:
            self.conn.executemany(sql, batch)
        except sqlite3.Error:
            self.conn.execute("ROLLBACK TO batch")
            self._locate(sql, [(where(k), v) for k, v in zip(linenos, batch, strict=True)], batch)
            raise
        self.conn.execute("RELEASE batch")
        n = len(batch)
        batch.clear()
        linenos.clear()
        return n

    def _locate(self, sql: str, batch: list[SourcedRow], values: list[list[Any]]) -> None:
        for (ref, _), vals in zip(batch, values, strict=True):
            try:
                self.conn.execute(sql, vals)
            except sqlite3.Error as exc:
                self.conn.execute("ROLLBACK TO batch")
                raise LoadError(ref, f"{type(exc).__name__}: {exc}") from None
        self.conn.execute("ROLLBACK TO batch")

    def finish(self, created: Sequence[Table], loaded: Sequence[Table], source_engine: str) -> None:
        if source_engine != ENGINE:
            return
        for t in created:
            for stmt in t.indexes:
                self.conn.execute(stmt)

    def copy_from(
        self, source: Path, table: Table, functions: Mapping[str, Callable[[Any], Any]]
    ) -> int:
        """Copy every row of `table` from the SQLite file `source` in one statement of
        this transaction, passing the columns named in `functions` through them."""
        if self._attached != source:
            if self._attached is not None:
                self.conn.execute("DETACH DATABASE ts_source")
            self.conn.execute("ATTACH DATABASE ? AS ts_source", (str(source),))
            self._attached = source
        exprs = []
        for c in table.column_names:
            fn = functions.get(c)
            if fn is None:
                exprs.append(quote(c))
                continue
            self._functions += 1
            name = f"ts_rule_{self._functions}"
            self.conn.create_function(name, 1, fn, deterministic=True)
            exprs.append(f"{name}({quote(c)})")
        cols = ", ".join(quote(c) for c in table.column_names)
        try:
            cur = self.conn.execute(
                f"INSERT INTO main.{quote(table.name)} ({cols}) SELECT {', '.join(exprs)}"
                f" FROM ts_source.{quote(table.name)} ORDER BY {_order(table)}"
            )
        except sqlite3.Error as exc:
            raise LoadError(f"table {table.name}", f"{type(exc).__name__}: {exc}") from None
        return cur.rowcount

    def check_foreign_keys(self) -> None:
        bad = self.conn.execute("PRAGMA foreign_key_check").fetchmany(5)
        if bad:
            table, rowid, parent, _ = bad[0]
            raise LoadError(
                f"table {table} (rowid {rowid})",
                f"references a missing row of {parent} (foreign key)",
            )
