"""The platform's own files are private whatever the umask: the home directory, the
state store with its WAL and shared-memory files, and the master key."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tristage.api import Tristage
from tristage.edges.secrets import load_master_key
from tristage.edges.store import SqliteStore
from tristage.paths import platform_home


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 000: whatever is not made private explicitly is world-readable and -writable."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def no_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRISTAGE_MASTER_KEY", raising=False)
    monkeypatch.delenv("TRISTAGE_MASTER_KEY_FILE", raising=False)


def test_home_store_wal_and_key_are_private(
    tmp_path: Path, open_umask: None, no_key_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "xdg" / "tristage"
    monkeypatch.delenv("TRISTAGE_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert platform_home() == home.resolve()
    api = Tristage(home, actor="tester")
    try:
        api.audit.record("test.write", details={"personal": "data"})
        api.secret_box.encrypt_text("x")
        made = {p.name: mode(p) for p in home.iterdir()}
        assert {"state.db", "state.db-wal", "state.db-shm", "master.key"} <= set(made)
        assert made == dict.fromkeys(made, 0o600)
        assert mode(home) == 0o700
        assert mode(tmp_path / "xdg") == 0o700  # a missing parent is created private too
    finally:
        api.close()
    given = Tristage(tmp_path / "given" / "home", actor="tester")  # a home passed in
    given.close()
    assert mode(tmp_path / "given" / "home") == 0o700


def test_store_files_of_an_older_version_are_tightened(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "state.db")
    s.execute("INSERT INTO audit_events (at, actor, action) VALUES (1, 'a', 'x')")
    for p in tmp_path.glob("state.db*"):
        os.chmod(p, 0o644)
    s.close()
    os.chmod(tmp_path / "state.db", 0o644)
    again = SqliteStore(tmp_path / "state.db")
    try:
        again.execute("INSERT INTO audit_events (at, actor, action) VALUES (2, 'a', 'y')")
        assert {p.name: mode(p) for p in tmp_path.glob("state.db*")} == {
            "state.db": 0o600, "state.db-wal": 0o600, "state.db-shm": 0o600,
        }  # fmt: skip
    finally:
        again.close()


def test_key_file_in_a_new_directory_is_private(
    tmp_path: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRISTAGE_MASTER_KEY", raising=False)
    key_file = tmp_path / "keys" / "master.key"
    monkeypatch.setenv("TRISTAGE_MASTER_KEY_FILE", str(key_file))
    key = load_master_key(tmp_path / "home")
    assert mode(key_file) == 0o600 and mode(key_file.parent) == 0o700
    assert load_master_key(tmp_path / "home") == key
    assert not (tmp_path / "home").exists()  # the home is not where the key went


def _first_uses(home: Path, n: int) -> tuple[list[bytes], list[BaseException]]:
    gate = threading.Barrier(n)
    keys: list[bytes] = []
    errors: list[BaseException] = []

    def first_use() -> None:
        try:
            gate.wait(10)
            keys.append(load_master_key(home))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return keys, errors


def test_concurrent_first_uses_agree_on_one_key(tmp_path: Path, no_key_env: None) -> None:
    for attempt in range(20):
        home = tmp_path / f"home{attempt}"
        home.mkdir()
        keys, errors = _first_uses(home, 8)
        assert errors == [] and len(set(keys)) == 1 and len(keys) == 8
        assert [p.name for p in home.iterdir()] == ["master.key"]  # no temporary file left


def test_a_socket_path_too_long_for_an_address_gets_a_private_stand_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket as socketlib

    from tristage.paths import socket_path
    from tristage.unix_sockets import SOCKET_PATH_MAX

    short = tmp_path / "a.sock"
    assert socket_path(short) == short  # a path that fits stays where it is
    deep = tmp_path.joinpath(*["d" * 20] * 6)
    deep.mkdir(parents=True)
    runtime = Path(tempfile.mkdtemp(prefix="ts-run-", dir="/tmp"))  # short, this test's own
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    wanted = deep / "admin.sock"
    got = socket_path(wanted)
    assert got.parent == runtime / "tristage" and got.name.endswith("-admin.sock")
    assert len(str(got)) <= SOCKET_PATH_MAX
    assert got == socket_path(wanted)  # every process finds the same one
    assert socket_path(deep / "other" / "admin.sock") != got
    assert got.parent.stat().st_mode & 0o777 == 0o700
    with socketlib.socket(socketlib.AF_UNIX) as s:  # and it binds
        s.bind(str(got))
    got.parent.chmod(0o755)  # a stand-in directory others can read is refused
    try:
        with pytest.raises(PermissionError, match="not a private directory"):
            socket_path(wanted)
    finally:
        shutil.rmtree(runtime)
