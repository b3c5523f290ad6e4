"""The embedded SQLite state store (WAL; writes serialize, readers never block).

Every PRAGMA the platform needs is set here, behind the `Store` protocol: WAL and
NORMAL sync, a busy timeout, foreign keys, and ``secure_delete`` so replaced values
are overwritten rather than left in freed pages (`scrub` then empties the WAL).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from ...errors import StoreError
from ...paths import private_file, private_mkdirs
from .base import Migration, Params, Row, StoreBusy

BUSY_TIMEOUT_MS = 15_000


def _row_factory(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}


class SqliteStore:
    """One connection per thread; `transaction()` takes the write lock up front."""

    def __init__(self, path: Path, migrations: Iterable[Migration] | None = None) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        private_mkdirs(path.parent)
        _private_files(path)
        conn = self._conn()
        _retry_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
        self.migrate(migration_files() if migrations is None else migrations)

    # -- connections ---------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with _wrapped():
                conn = sqlite3.connect(
                    self.path,
                    timeout=BUSY_TIMEOUT_MS / 1000,
                    isolation_level=None,
                    check_same_thread=False,
                )
                conn.row_factory = _row_factory
                conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute("PRAGMA secure_delete=ON")
            self._local.conn = conn
            self._local.depth = 0
            with self._lock:
                self._all.append(conn)
        return conn

    def _waiting(self, conn: sqlite3.Connection) -> sqlite3.Connection:
        """The connection back to waiting on a busy store (after `transaction(wait=False)`
        set it not to)."""
        if getattr(self._local, "nowait", False):
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._local.nowait = False
        return conn

    # -- protocol ------------------------------------------------------
    def query(self, sql: str, params: Params = ()) -> list[Row]:
        with _wrapped():
            return list(self._waiting(self._conn()).execute(sql, params).fetchall())

    def query_one(self, sql: str, params: Params = ()) -> Row | None:
        with _wrapped():
            row: Row | None = self._waiting(self._conn()).execute(sql, params).fetchone()
            return row

    def iterate(self, sql: str, params: Params = ()) -> Iterator[Row]:
        with _wrapped():
            cur = self._waiting(self._conn()).execute(sql, params)
            while True:
                rows = cur.fetchmany(500)
                if not rows:
                    return
                yield from rows

    def execute(self, sql: str, params: Params = ()) -> int:
        with self.transaction(), _wrapped():
            return self._conn().execute(sql, params).rowcount

    def insert(self, sql: str, params: Params = ()) -> int:
        with self.transaction(), _wrapped():
            rowid = self._conn().execute(sql, params).lastrowid
            return int(rowid or 0)

    @contextmanager
    def transaction(self, wait: bool = True) -> Iterator[None]:
        conn = self._conn()
        depth: int = self._local.depth
        if depth:
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth = depth
            return
        if wait:
            self._waiting(conn)
            with _wrapped():
                _begin_immediate(conn)
        else:
            if not getattr(self._local, "nowait", False):
                conn.execute("PRAGMA busy_timeout=0")  # kept for the next ones
                self._local.nowait = True
            _begin_now(conn)
        self._local.depth = 1
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
                conn.execute("ROLLBACK")
            raise
        else:
            try:
                with _wrapped():
                    conn.execute("COMMIT")
            except StoreError:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        finally:
            self._local.depth = 0

    def migrate(self, migrations: Iterable[Migration]) -> list[str]:
        conn = self._conn()
        _retry_locked(lambda: conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (id TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
        ))  # fmt: skip
        applied = set(self.applied_migrations())
        done: list[str] = []
        for mid, sql in sorted(migrations):
            if mid in applied:
                continue
            with self.transaction(), _wrapped():
                if self.query_one("SELECT 1 FROM schema_migrations WHERE id=?", (mid,)):
                    continue  # another process applied it since we looked
                for statement in _statements(sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (id, applied_at) VALUES (?, ?)",
                    (mid, time.time()),
                )
            done.append(mid)
        return done

    def applied_migrations(self) -> list[str]:
        return [r["id"] for r in self.query("SELECT id FROM schema_migrations ORDER BY id")]

    def scrub(self) -> bool:
        try:
            row = self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.OperationalError:  # inside a transaction, or the file is locked
            return False
        return row is not None and not row["busy"]

    def copy_to(self, path: Path) -> None:
        """A consistent copy of the whole store into the new file `path` (SQLite's backup
        API through this store's connection: the file is never opened a second time)."""
        with _wrapped():
            copy = sqlite3.connect(path)
            try:
                self._conn().backup(copy)
            finally:
                copy.close()

    def replace_from(self, path: Path) -> None:
        """Replace the whole store with the SQLite file `path`, all or nothing, once it
        passes SQLite's integrity check (a StoreError otherwise, the store unchanged)."""
        with _wrapped():
            copy = sqlite3.connect(path)
            try:
                ok = copy.execute("PRAGMA integrity_check").fetchone()
                if not ok or ok[0] != "ok":
                    raise StoreError(f"{path.name} is not an intact state store")
                copy.backup(self._conn())
            finally:
                copy.close()

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.ProgrammingError:
                    pass
            self._all.clear()
        self._local = threading.local()


@contextmanager
def _wrapped() -> Iterator[None]:
    """sqlite3's errors as StoreError (the sqlite3 error is the cause)."""
    try:
        yield
    except sqlite3.Error as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            hint = "another tristage process holds the state store's write lock; try again"
            raise StoreError(f"the state store failed: {exc}", hint) from exc
        if "disk is full" in text or "disk I/O error" in text:
            raise StoreError(
                f"the state store could not write to its disk ({text}): is the disk full?",
                "free space on the disk that holds the platform home (df -h $TRISTAGE_HOME), "
                "then run the command again (nothing was changed)",
            ) from exc
        raise StoreError(f"the state store failed: {exc}") from exc


def _private_files(path: Path) -> None:
    """The database 0600 before SQLite opens it: its WAL and shared-memory files take the
    database file's mode when SQLite creates them. Those of an older, looser store are
    tightened too."""
    private_file(path)
    for suffix in ("-wal", "-shm", "-journal"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            private_file(side)


def _retry_locked(run: Callable[[], object]) -> None:
    """Run a statement the busy handler does not cover (switching a new file to WAL,
    creating a table while another process creates the store), retrying while locked."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            with _wrapped():
                run()
            return
        except StoreError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _begin_now(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE on a connection that does not wait: StoreBusy when another
    connection writes."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise StoreBusy("the state store is being written by another client") from exc
        raise StoreError(f"state store: {exc}") from exc


def _begin_immediate(conn: sqlite3.Connection) -> None:
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


# ---------------------------------------------------------------------------
# The platform's schema: `schema/NNNN_area.sql`, applied by `migrate` in name order.


def migration_files() -> list[tuple[str, str]]:
    schema = resources.files(__package__).joinpath("schema")
    out = []
    for entry in schema.iterdir():
        if entry.name.endswith(".sql"):
            out.append((entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8")))
    return sorted(out)


def _statements(sql: str) -> list[str]:
    parts: list[str] = []
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                parts.append(buf.strip())
            buf = ""
    if buf.strip():
        parts.append(buf.strip())
    return parts


def open_store(home: Path) -> SqliteStore:
    return SqliteStore(home / "state.db")
