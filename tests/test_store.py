from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from tristage.edges.store import SqliteStore
from tristage.edges.store.sqlite import migration_files


def test_migrations_apply_once(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "state.db")
    applied = {r["id"] for r in s.query("SELECT id FROM schema_migrations")}
    assert applied == {m for m, _ in migration_files()}
    s.close()
    s2 = SqliteStore(tmp_path / "state.db")  # reopening applies nothing twice
    assert len(s2.query("SELECT id FROM schema_migrations")) == len(applied)
    mode = s2.query_one("PRAGMA journal_mode")
    assert mode is not None and mode["journal_mode"] == "wal"
    s2.close()


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "state.db")
    with pytest.raises(RuntimeError), s.transaction():
        s.execute("INSERT INTO audit_events (at, actor, action) VALUES (1, 'a', 'x')")
        raise RuntimeError("boom")
    assert s.query("SELECT * FROM audit_events") == []


def test_concurrent_writers_serialize_and_readers_read(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "state.db")
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            other = SqliteStore(tmp_path / "state.db")
            for i in range(50):
                with other.transaction():
                    other.execute(
                        "INSERT INTO audit_events (at, actor, action) VALUES (?, ?, 'w')",
                        (i, f"w{n}"),
                    )
            other.close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    reads = 0
    while any(t.is_alive() for t in threads):
        s.query("SELECT count(*) AS n FROM audit_events")
        reads += 1
    for t in threads:
        t.join()
    assert not errors
    row = s.query_one("SELECT count(*) AS n FROM audit_events")
    assert row == {"n": 200}
    assert reads > 0
    # the raw file is a valid SQLite database any reader can open
    raw = sqlite3.connect(tmp_path / "state.db")
    assert raw.execute("SELECT count(*) FROM audit_events").fetchone() == (200,)
    raw.close()


def test_a_second_store_in_the_same_process_keeps_the_first_reading_fresh(tmp_path: Path) -> None:
    """Opening the store again (another API object in the same process) must not touch
    the file: closing any descriptor of it drops the process's POSIX locks, and the
    first connection then read an old snapshot for ever."""
    import subprocess
    import sys

    from tristage.edges.store import open_store

    first = open_store(tmp_path)
    first.execute(
        "INSERT INTO projects (name, root, config, created_at, updated_at)"
        " VALUES ('a', '/', '', 1, 1)"
    )
    assert first.query_one("SELECT updated_at FROM projects")["updated_at"] == 1  # type: ignore[index]
    open_store(tmp_path).query("SELECT 1")  # a second store of the same home, same process
    code = (
        "import sys; from pathlib import Path; from tristage.edges.store import open_store;"
        "s = open_store(Path(sys.argv[1]));"
        "s.execute('UPDATE projects SET updated_at=updated_at+1'); s.close()"
    )
    for expected in (2, 3, 4):  # another process (a CLI command) writes and exits, thrice
        subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
        row = first.query_one("SELECT updated_at FROM projects")
        assert row is not None and row["updated_at"] == expected
