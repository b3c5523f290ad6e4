"""What every `Store` implementation must do, run against each of them.

An implementation is added to `IMPLEMENTATIONS`: how to open it at a place (opening
twice at the same place gives two clients of one store, as two processes would), the
column type of an integer key it assigns itself, and everything it keeps at rest (to
check that replaced values are erased).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tristage.edges.store import SqliteStore, Store
from tristage.edges.store.base import Migration
from tristage.errors import StoreError


@dataclass(frozen=True)
class Implementation:
    name: str
    open: Callable[[Path, Sequence[Migration]], Store]
    serial_key: str  # DDL of an integer primary key the store assigns
    at_rest: Callable[[Path], bytes]


def _sqlite_at_rest(place: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(place.glob("state.db*")))


IMPLEMENTATIONS = [
    Implementation(
        "sqlite-file",
        lambda place, migrations: SqliteStore(place / "state.db", migrations),
        "INTEGER PRIMARY KEY",
        _sqlite_at_rest,
    ),
]


def schema(impl: Implementation) -> list[Migration]:
    return [
        (
            "0001_kv",
            "CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT NOT NULL, n INTEGER NOT NULL DEFAULT 0);",
        ),
        (
            "0002_events",
            f"CREATE TABLE events (id {impl.serial_key}, kind TEXT NOT NULL, at REAL);\n"
            "CREATE TABLE notes (id TEXT PRIMARY KEY, event INTEGER NOT NULL"
            " REFERENCES events (id) ON DELETE CASCADE, body TEXT NOT NULL);",
        ),
    ]


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda i: i.name)
def impl(request: pytest.FixtureRequest) -> Implementation:
    param: Implementation = request.param
    return param


@pytest.fixture
def place(tmp_path: Path) -> Path:
    p = tmp_path / "store"
    p.mkdir()
    return p


@pytest.fixture
def opener(impl: Implementation, place: Path) -> Iterator[Callable[[], Store]]:
    """Open another client of the same store (closed at the end of the test)."""
    opened: list[Store] = []

    def open_one() -> Store:
        s = impl.open(place, schema(impl))
        opened.append(s)
        return s

    yield open_one
    for s in opened:
        s.close()


@pytest.fixture
def store(opener: Callable[[], Store]) -> Store:
    return opener()


def count(store: Store, table: str) -> int:
    row = store.query_one(f"SELECT COUNT(*) AS n FROM {table}")
    assert row is not None
    return int(row["n"])


# -- statements ----------------------------------------------------------------------


def test_insert_returns_the_new_id_and_execute_the_rows_changed(store: Store) -> None:
    first = store.insert("INSERT INTO events (kind, at) VALUES (?, ?)", ("a", 1.0))
    second = store.insert("INSERT INTO events (kind, at) VALUES (?, ?)", ("b", 2.0))
    assert second > first > 0
    assert store.query_one("SELECT kind FROM events WHERE id=?", (second,)) == {"kind": "b"}
    assert store.execute("UPDATE events SET at = at + 1") == 2
    assert store.execute("DELETE FROM events WHERE kind=?", ("nothing",)) == 0
    assert store.query_one("SELECT * FROM events WHERE id=?", (-1,)) is None


def test_named_parameters(store: Store) -> None:
    store.execute("INSERT INTO kv (k, v) VALUES (:k, :v)", {"k": "x", "v": "1"})
    assert store.query("SELECT k, v FROM kv WHERE k=:k", {"k": "x"}) == [{"k": "x", "v": "1"}]


def test_on_conflict_upserts(store: Store) -> None:
    upsert = (
        "INSERT INTO kv (k, v) VALUES (?, ?)"
        " ON CONFLICT (k) DO UPDATE SET v = excluded.v, n = n + 1"
    )
    store.execute(upsert, ("a", "one"))
    store.execute(upsert, ("a", "two"))
    store.execute(upsert, ("b", "bee"))
    assert store.query("SELECT k, v, n FROM kv ORDER BY k") == [
        {"k": "a", "v": "two", "n": 1},
        {"k": "b", "v": "bee", "n": 0},
    ]
    ignore = "INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO NOTHING"
    assert store.execute(ignore, ("a", "three")) == 0
    assert store.execute(ignore, ("c", "sea")) == 1
    assert store.query_one("SELECT v FROM kv WHERE k='a'") == {"v": "two"}


def test_iterate_streams_every_row_in_order(store: Store) -> None:
    with store.transaction():
        for i in range(1234):
            store.execute("INSERT INTO kv (k, v, n) VALUES (?, ?, ?)", (f"k{i:05d}", "x", i))
    it = store.iterate("SELECT k, n FROM kv ORDER BY k")
    assert not isinstance(it, list | tuple)
    assert [r["n"] for r in it] == list(range(1234))
    # abandoned half way: the store still writes and reads
    partial = store.iterate("SELECT n FROM kv ORDER BY k")
    assert [next(partial)["n"] for _ in range(3)] == [0, 1, 2]
    partial.close()
    store.execute("DELETE FROM kv WHERE n >= 1000")
    assert count(store, "kv") == 1000


def test_foreign_keys_cascade(store: Store) -> None:
    event = store.insert("INSERT INTO events (kind) VALUES ('e')")
    store.execute("INSERT INTO notes (id, event, body) VALUES ('n1', ?, 'b')", (event,))
    with pytest.raises(StoreError):  # whatever the engine's own error
        store.execute("INSERT INTO notes (id, event, body) VALUES ('n2', ?, 'b')", (event + 99,))
    store.execute("DELETE FROM events WHERE id=?", (event,))
    assert count(store, "notes") == 0


# -- transactions --------------------------------------------------------------------


def test_a_transaction_rolls_back_on_error(store: Store) -> None:
    store.execute("INSERT INTO kv (k, v) VALUES ('kept', '1')")
    with pytest.raises(RuntimeError), store.transaction():
        store.execute("INSERT INTO kv (k, v) VALUES ('lost', '1')")
        store.execute("UPDATE kv SET v='2' WHERE k='kept'")
        raise RuntimeError("boom")
    assert store.query("SELECT k, v FROM kv") == [{"k": "kept", "v": "1"}]
    store.execute("INSERT INTO kv (k, v) VALUES ('after', '1')")  # the store is usable
    assert count(store, "kv") == 2


def test_a_failing_statement_rolls_back_its_transaction(store: Store) -> None:
    with pytest.raises(StoreError), store.transaction():
        store.execute("INSERT INTO kv (k, v) VALUES ('a', '1')")
        store.execute("INSERT INTO kv (k, v) VALUES ('a', '2')")  # duplicate key
    assert count(store, "kv") == 0


def test_nested_transactions_join_the_outer_one(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        with store.transaction():
            store.execute("INSERT INTO kv (k, v) VALUES ('inner', '1')")
        raise RuntimeError("the outer block fails after the inner one ended")
    assert count(store, "kv") == 0
    with store.transaction():
        store.execute("INSERT INTO kv (k, v) VALUES ('outer', '1')")
        with pytest.raises(RuntimeError), store.transaction():
            store.execute("INSERT INTO kv (k, v) VALUES ('inner', '1')")
            raise RuntimeError("inner")
        # the inner error was caught inside the outer block, which commits it all
    assert count(store, "kv") == 2


def test_writers_serialize_from_the_start_of_a_transaction(
    opener: Callable[[], Store],
) -> None:
    """Read-modify-write in transactions from several clients loses no update."""
    opener().execute("INSERT INTO kv (k, v, n) VALUES ('counter', '', 0)")
    errors: list[BaseException] = []

    def bump(s: Store) -> None:
        try:
            for _ in range(25):
                with s.transaction():
                    row = s.query_one("SELECT n FROM kv WHERE k='counter'")
                    assert row is not None
                    time.sleep(random.random() / 2000)
                    s.execute("UPDATE kv SET n=? WHERE k='counter'", (row["n"] + 1,))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    clients = [opener() for _ in range(4)]
    threads = [threading.Thread(target=bump, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert opener().query_one("SELECT n FROM kv WHERE k='counter'") == {"n": 100}


def test_a_second_writer_waits_for_the_first(opener: Callable[[], Store]) -> None:
    first, second = opener(), opener()
    order: list[str] = []
    holding = threading.Event()

    def hold() -> None:
        with first.transaction():
            first.execute("INSERT INTO kv (k, v) VALUES ('first', '1')")
            holding.set()
            time.sleep(0.3)
            order.append("first commits")

    t = threading.Thread(target=hold)
    t.start()
    assert holding.wait(10)
    with second.transaction():
        order.append("second starts")
        seen = second.query_one("SELECT v FROM kv WHERE k='first'")
    t.join()
    assert order == ["first commits", "second starts"]
    assert seen == {"v": "1"}  # it started after the commit, so it sees it


def test_a_writer_that_must_not_wait_is_refused_at_once(opener: Callable[[], Store]) -> None:
    """`transaction(wait=False)` while another client writes: StoreBusy at once, nothing
    written; once the lock is free it writes, and the store still waits as before."""
    from tristage.edges.store import StoreBusy

    first, second = opener(), opener()
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with first.transaction():
            first.execute("INSERT INTO kv (k, v) VALUES ('first', '1')")
            holding.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert holding.wait(10)
    started = time.monotonic()
    with pytest.raises(StoreBusy), second.transaction(wait=False):
        second.execute("INSERT INTO kv (k, v) VALUES ('second', '2')")
    assert time.monotonic() - started < 1.0
    assert isinstance(StoreBusy(""), StoreError)
    release.set()
    t.join()
    with second.transaction(wait=False):
        second.execute("INSERT INTO kv (k, v) VALUES ('second', '2')")
    rows = second.query("SELECT k FROM kv ORDER BY k")
    assert rows == [{"k": "first"}, {"k": "second"}]
    # the connection waits again afterwards: a plain transaction behind a writer waits
    holding.clear()
    release.clear()
    t = threading.Thread(target=hold)
    first.execute("DELETE FROM kv")
    t.start()
    assert holding.wait(10)
    threading.Timer(0.2, release.set).start()
    with second.transaction():
        second.execute("INSERT INTO kv (k, v) VALUES ('late', '3')")
    t.join()


def test_readers_are_not_blocked_by_a_writer(opener: Callable[[], Store]) -> None:
    writer, reader = opener(), opener()
    writer.execute("INSERT INTO kv (k, v) VALUES ('a', 'old')")
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with writer.transaction():
            writer.execute("UPDATE kv SET v='new' WHERE k='a'")
            holding.set()
            done.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert holding.wait(10)
        started = time.monotonic()
        row = reader.query_one("SELECT v FROM kv WHERE k='a'")
        waited = time.monotonic() - started
    finally:
        done.set()
        t.join()
    assert row == {"v": "old"}  # the uncommitted write is not visible
    assert waited < 1.0
    assert reader.query_one("SELECT v FROM kv WHERE k='a'") == {"v": "new"}


# -- migrations ----------------------------------------------------------------------


def test_migrations_apply_once_in_name_order(impl: Implementation, place: Path) -> None:
    migrations = [
        *schema(impl),
        ("0003_seed", "INSERT INTO kv (k, v) VALUES ('seeded', 'once');"),
        ("0004_more", "UPDATE kv SET n = n + 1 WHERE k = 'seeded';"),
    ]
    shuffled = migrations[::-1]  # given out of order: 0004 needs 0003's row, 0003 0001's table
    s = impl.open(place, shuffled)
    try:
        assert s.applied_migrations() == [m for m, _ in migrations]
        assert s.migrate(shuffled) == []
        assert s.query("SELECT v, n FROM kv") == [{"v": "once", "n": 1}]
        later = ("0005_later", "UPDATE kv SET n = n + 10;")
        assert s.migrate([*shuffled, later]) == ["0005_later"]
    finally:
        s.close()
    again = impl.open(place, [*migrations, later])  # reopening applies nothing twice
    try:
        assert again.query("SELECT n FROM kv") == [{"n": 11}]
        assert again.applied_migrations()[-1] == "0005_later"
    finally:
        again.close()


def test_concurrent_openers_apply_a_migration_once(
    opener: Callable[[], Store],
) -> None:
    clients = [opener() for _ in range(4)]
    new = ("0003_seed", "INSERT INTO kv (k, v) VALUES ('seed', '1');")
    results: list[list[str]] = []
    errors: list[BaseException] = []
    gate = threading.Barrier(len(clients))

    def run(s: Store) -> None:
        try:
            gate.wait(10)
            results.append(s.migrate([new]))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(results) == [[], [], [], ["0003_seed"]]
    assert count(clients[0], "kv") == 1


def test_a_failing_migration_changes_nothing(store: Store) -> None:
    bad = (
        "0003_bad",
        "INSERT INTO kv (k, v) VALUES ('half', '1');\nINSERT INTO no_such_table VALUES (1);",
    )
    with pytest.raises(StoreError):
        store.migrate([bad])
    assert "0003_bad" not in store.applied_migrations()
    assert count(store, "kv") == 0


# -- at rest -------------------------------------------------------------------------


def test_scrub_erases_replaced_and_deleted_values(
    impl: Implementation, place: Path, store: Store
) -> None:
    replaced, deleted = "plain-value-3f9a1c77e2", "deleted-value-8b2d4e6f10"
    with store.transaction():
        for i in range(200):  # enough rows for several pages
            store.execute("INSERT INTO kv (k, v) VALUES (?, ?)", (f"row{i:04d}", "x" * 40))
        store.execute("INSERT INTO kv (k, v) VALUES ('secret', ?)", (replaced,))
        store.execute("INSERT INTO kv (k, v) VALUES ('gone', ?)", (deleted,))
    store.scrub()
    assert replaced.encode() in impl.at_rest(place)  # the check can see a value at rest
    store.execute("UPDATE kv SET v=? WHERE k='secret'", ("sealed" + "0" * len(replaced),))
    store.execute("DELETE FROM kv WHERE k='gone'")
    assert store.scrub() is True
    at_rest = impl.at_rest(place)
    assert [v for v in (replaced, deleted) if v.encode() in at_rest] == []
    assert count(store, "kv") == 201


def test_writes_survive_reopening(impl: Implementation, place: Path) -> None:
    s = impl.open(place, schema(impl))
    s.execute("INSERT INTO kv (k, v) VALUES ('durable', 'yes')")
    s.close()
    again = impl.open(place, schema(impl))
    try:
        assert again.query("SELECT v FROM kv") == [{"v": "yes"}]
    finally:
        again.close()
