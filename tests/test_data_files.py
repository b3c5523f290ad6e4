"""Where environments' data lives on disk: a private directory per environment.

Each environment that owns a data store has its own directory,
`$TRISTAGE_HOME/data/<project>/<environment>/`, holding its SQLite file (and the
file's -wal/-shm) and whatever else the app keeps; a sandboxed release sees only
its own. Data files, backups and exports are private whatever the umask.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tristage.api import Tristage
from tristage.edges.datastores import DataStoreError, SqliteDataStore, path_from_url
from tristage.errors import UsageError

CONFIG = """
[project]
name = "shop"

[environments.development]
tier = "development"
branches = ["dev"]

[environments.preview]
tier = "preview"
branches = ["test"]

[environments.production]
tier = "production"
branches = ["main"]
{extra}
[sanitize]
"notes.body" = "redact"
"""


def configure(api: Tristage, repo: Path, extra: str = "") -> None:
    (repo / "tristage.toml").write_text(CONFIG.format(extra=extra))
    api.open_project(repo)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sqlite_path(url: str) -> Path:
    assert url.startswith("sqlite:////"), url
    return path_from_url(url)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Every file and directory created in the test is world-writable unless made private."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# -- a directory per environment ------------------------------------------------


def test_each_environment_has_its_own_private_data_directory(api: Tristage, repo: Path) -> None:
    configure(api, repo)
    data = api.home / "data" / "shop"
    for env in ("development", "preview", "production"):
        d = api.data.stores.data_dir("shop", env)
        assert d == (data / env).resolve() and d.is_dir() and mode(d) == 0o700
        assert sqlite_path(api.data.database_url("shop", env)) == d / "database.sqlite3"
    assert mode(data) == 0o700 and mode(data.parent) == 0o700
    # nothing of another environment lives in an environment's directory
    assert sorted(p.name for p in (data / "preview").iterdir()) == ["database.sqlite3"]


def test_a_shared_store_lives_in_its_owner_directory(api: Tristage, repo: Path) -> None:
    api.init_project(repo, "simple", name="simpleapp")
    cfg = api.config_for("simpleapp")
    sharer = next(n for n, e in cfg.environments.items() if e.shares)
    owner = cfg.owner(sharer)
    assert api.data.stores.data_dir("simpleapp", sharer) == api.data.stores.data_dir(
        "simpleapp", owner
    )
    assert api.data.database_url("simpleapp", sharer) == api.data.database_url("simpleapp", owner)


def test_a_relative_database_path_stays_inside_the_environment_directory(
    api: Tristage, repo: Path
) -> None:
    configure(api, repo, '\n[environments.preview.database]\nurl = "app/shop.db"\n')
    d = api.data.stores.data_dir("shop", "preview")
    assert sqlite_path(api.data.database_url("shop", "preview")) == d / "app" / "shop.db"
    escape = '\n[environments.preview.database]\nurl = "../production/database.sqlite3"\n'
    configure(api, repo, escape)
    with pytest.raises(UsageError, match=r"environments\.preview\.database\.url") as info:
        api.data.database_url("shop", "preview")
    assert "inside" in (info.value.hint or "")


def test_an_old_layout_file_moves_with_its_wal_and_shm(api: Tristage, repo: Path) -> None:
    configure(api, repo)
    old = api.home / "data" / "shop" / "production.sqlite3"
    old.parent.mkdir(parents=True)
    # a process that dies with its last transaction still in the WAL (never checkpointed)
    script = (
        "import os, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('PRAGMA journal_mode=WAL'); c.execute('PRAGMA wal_autocheckpoint=0')\n"
        "c.execute('CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)')\n"
        "c.execute(\"INSERT INTO notes (body) VALUES ('only in the wal')\")\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(old)], check=True, timeout=30)
    wal, shm = Path(f"{old}-wal"), Path(f"{old}-shm")
    assert wal.stat().st_size > 0 and shm.exists()

    new = sqlite_path(api.data.database_url("shop", "production"))
    assert new == api.home / "data" / "shop" / "production" / "database.sqlite3"
    assert not old.exists() and not wal.exists() and not shm.exists()
    assert Path(f"{new}-wal").exists()
    with sqlite3.connect(new) as conn:
        assert conn.execute("SELECT body FROM notes").fetchall() == [("only in the wal",)]
    # once moved, a second call changes nothing; other environments start empty
    assert sqlite_path(api.data.database_url("shop", "production")) == new
    with sqlite3.connect(sqlite_path(api.data.database_url("shop", "preview"))) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


def test_an_old_layout_file_never_replaces_a_new_one(api: Tristage, repo: Path) -> None:
    configure(api, repo)
    new = sqlite_path(api.data.database_url("shop", "production"))
    with sqlite3.connect(new) as conn:
        conn.execute("CREATE TABLE kept (id INTEGER)")
    conn.close()
    old = api.home / "data" / "shop" / "production.sqlite3"
    old.write_bytes(b"stale")
    assert sqlite_path(api.data.database_url("shop", "production")) == new
    assert old.read_bytes() == b"stale"
    with sqlite3.connect(new) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("kept",)]
    conn.close()


@pytest.mark.parametrize("member", ["database.sqlite3", "database.sqlite3-wal"])
def test_a_link_in_a_data_directory_is_never_followed(
    api: Tristage, repo: Path, member: str
) -> None:
    """A preview app replaces its file (or its -wal) with a link to production's."""
    configure(api, repo)
    prod = sqlite_path(api.data.database_url("shop", "production"))
    with sqlite3.connect(prod) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO notes (body) VALUES ('production only')")
    conn.close()
    before = prod.read_bytes()
    preview_dir = api.data.stores.data_dir("shop", "preview")
    (preview_dir / member).unlink(missing_ok=True)
    (preview_dir / member).symlink_to(prod)
    for attempt in (
        lambda: api.data.database_url("shop", "preview"),
        lambda: api.data.backup("shop", "preview"),
        lambda: api.data.tables("shop", "preview"),
    ):
        with pytest.raises(DataStoreError, match="symbolic link") as info:
            attempt()
        assert str(preview_dir / member) in info.value.message
    assert prod.read_bytes() == before and api.data.backups("shop", "preview") == []


# -- private whatever the umask ------------------------------------------------------


def test_sqlite_files_and_their_wal_are_private_under_umask_000(
    open_umask: None, api: Tristage, repo: Path
) -> None:
    configure(api, repo)
    path = sqlite_path(api.data.database_url("shop", "production"))
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    # the app opens it in WAL mode: SQLite gives -wal and -shm the file's mode
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes (body) VALUES ('x')")
    for suffix in ("-wal", "-shm"):
        assert mode(Path(f"{path}{suffix}")) == 0o600, suffix
    conn.close()


def test_existing_data_files_are_made_private(api: Tristage, repo: Path) -> None:
    configure(api, repo)
    path = sqlite_path(api.data.database_url("shop", "preview"))
    wal = Path(f"{path}-wal")
    wal.write_bytes(b"")
    for p in (path, wal):
        p.chmod(0o644)
    path.parent.chmod(0o755)
    api.data.database_url("shop", "preview")
    assert mode(path) == 0o600 and mode(wal) == 0o600 and mode(path.parent) == 0o700


def test_a_new_sqlite_store_is_created_private(open_umask: None, tmp_path: Path) -> None:
    path = tmp_path / "scratch" / "drill.sqlite3"
    store = SqliteDataStore(path)
    with store.write() as w:
        w.conn.execute("CREATE TABLE t (id INTEGER)")
    assert mode(path) == 0o600 and mode(path.parent) == 0o700


def test_backups_and_exports_are_private_under_umask_000(
    open_umask: None, api: Tristage, repo: Path, tmp_path: Path
) -> None:
    configure(api, repo)
    with sqlite3.connect(sqlite_path(api.data.database_url("shop", "production"))) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("INSERT INTO notes (body) VALUES ('secret plans')")
    conn.close()
    info = api.data.backup("shop", "production")
    path = api.data.target("shop", "production").local_path(info.id)
    assert path is not None and mode(path) == 0o600
    backups = api.home / "backups"
    for d in (backups, backups / "shop", backups / "shop" / "production"):
        assert mode(d) == 0o700, d

    zipped = api.data.export("shop", "production", tmp_path / "out" / "prod.zip", "zip")
    assert mode(zipped.path) == 0o600
    folder = api.data.export("shop", "production", tmp_path / "prod-dir", "dir")
    assert mode(folder.path) == 0o700
    for p in folder.path.rglob("*"):
        assert mode(p) == (0o700 if p.is_dir() else 0o600), p
