"""The files of an environment's data directory in backups, restores, drills and clones.

Files an app writes into `TRISTAGE_DATA_DIR` (its own SQLite file, uploads) are in each
backup as a tar archive beside the tables, checked (size, sha256, file count) and
encrypted like them; a restore puts them back all-or-nothing (unpacked beside, then
swapped in by renames inside the directory, which a killed process leaves recoverable);
a clone from production copies only what `[sanitize.files]` names. Links, special files
and names leaving the directory are refused.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_data_files import open_umask as open_umask  # a fixture
from tristage.api import Tristage
from tristage.domain import data_files as plan
from tristage.domain.config import parse_config
from tristage.domain.snapshot import FileEntry
from tristage.edges import data_files as disk
from tristage.errors import TristageError
from tristage.services.data_records import BackupDamaged, ConfirmationRequired

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
"""


def configure(api: Tristage, repo: Path, extra: str = "") -> None:
    (repo / "tristage.toml").write_text(CONFIG.format(extra=extra))
    api.open_project(repo)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def tree(root: Path) -> dict[str, bytes | None]:
    """Every entry under `root` but the store's files: file -> bytes, directory -> None."""
    out: dict[str, bytes | None] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith("database.sqlite3"):
            continue
        out[rel] = None if p.is_dir() else p.read_bytes()
    return out


def without_db(t: dict[str, bytes | None]) -> dict[str, bytes | None]:
    return {k: v for k, v in t.items() if k != "app.sqlite3"}


def app_writes(data: Path, notes: list[str]) -> None:
    """What an app such as flaskr does: its own SQLite file, and uploads."""
    (data / "uploads" / "2026").mkdir(parents=True, exist_ok=True)
    (data / "uploads" / "2026" / "photo.jpg").write_bytes(os.urandom(300_000))
    (data / "uploads" / "notes.txt").write_text("secret-upload-text\n")
    (data / "public").mkdir(exist_ok=True)
    (data / "public" / "logo.svg").write_text("<svg/>")
    db = sqlite3.connect(data / "app.sqlite3")
    db.execute("CREATE TABLE IF NOT EXISTS notes (body TEXT)")
    db.executemany("INSERT INTO notes VALUES (?)", [(n,) for n in notes])
    db.commit()
    db.close()


def notes(data: Path) -> list[str]:
    db = sqlite3.connect(data / "app.sqlite3")
    try:
        return [r[0] for r in db.execute("SELECT body FROM notes ORDER BY rowid")]
    finally:
        db.close()


@pytest.fixture
def shop(api: Tristage, repo: Path) -> Iterator[Tristage]:
    configure(api, repo)
    api.data.database_url("shop", "production")  # the store's own file exists
    yield api


def data_dir(api: Tristage, env: str = "production") -> Path:
    return api.data.data_dir("shop", env)


# -- backup, delete, restore ------------------------------------------------------


def test_a_backup_holds_the_files_and_a_restore_brings_them_back(
    shop: Tristage, open_umask: None
) -> None:
    data = data_dir(shop)
    app_writes(data, ["first", "second"])
    before = tree(data)
    info = shop.data.backup("shop", "production")
    # production's backup is encrypted: the archive is in it, no file's bytes in clear
    path = shop.data.target("shop", "production").local_path(info.id)
    assert path is not None
    with zipfile.ZipFile(path) as zf:
        assert plan.ARCHIVE_MEMBER in zf.namelist()
        blob = b"".join(zf.read(n) for n in zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
    assert b"secret-upload-text" not in blob and b"<svg/>" not in blob
    entry = manifest["extra"]["files"]
    sizes = sum(len(v) for v in before.values() if v is not None)
    assert entry["files"] == 4 and entry["file_bytes"] == sizes and len(entry["sha256"]) == 64

    # the app loses everything (and writes something new), then the backup comes back
    for p in sorted(data.iterdir(), reverse=True):
        if not p.name.startswith("database.sqlite3"):
            subprocess.run(["rm", "-rf", str(p)], check=True)
    (data / "later.txt").write_text("written after the backup")
    result = shop.data.restore("shop", "production", info.id, yes=True)
    assert result.files == 4
    # the app's SQLite file comes back as SQLite's consistent copy: same rows, other bytes
    assert without_db(tree(data)) == without_db(before) and notes(data) == ["first", "second"]
    assert set(tree(data)) == set(before)
    # what tristage wrote is private whatever the umask; nothing is left beside
    for p in data.rglob("*"):
        if not p.name.startswith("database.sqlite3"):
            assert mode(p) == (0o700 if p.is_dir() else 0o600), p
    assert not [p for p in data.parent.iterdir() if p.name.startswith(".")]
    # the safety backup taken first holds the tree the restore replaced
    safety = shop.data.verify("shop", "production", result.safety_backup or "")
    try:
        assert shop.data.backup_service.files.entry(safety).files == 1  # type: ignore[union-attr]
    finally:
        safety.close()
    report = shop.data.drill("shop", "production", info.id)
    assert report.passed, report.problems
    files_check = next(c for c in report.checks if c.table == "(files)")
    assert files_check.expected_rows == files_check.actual_rows == 4


def test_the_store_own_files_are_left_out_of_the_archive(shop: Tristage) -> None:
    data = data_dir(shop)
    (data / "kept.txt").write_text("x")
    (data / ".tristage-own").write_text("platform")
    info = shop.data.backup("shop", "production")
    src = shop.data.verify("shop", "production", info.id)
    try:
        entry = shop.data.backup_service.files.entry(src)
        assert entry is not None
        raw = b"".join(src.checked_chunks(plan_entry(entry)))
    finally:
        src.close()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert tar.getnames() == ["kept.txt"]


def plan_entry(entry: plan.FilesEntry) -> FileEntry:
    return FileEntry(entry.path, 0, entry.sha256, entry.bytes)


def test_the_snapshot_before_a_release_holds_the_files(shop: Tristage) -> None:
    app_writes(data_dir(shop), ["before the release"])
    bid = shop.data.snapshot_before_migration("shop", "production", "dep-1")
    src = shop.data.verify("shop", "production", bid)
    try:
        entry = shop.data.backup_service.files.entry(src)
        assert entry is not None and entry.files == 4
    finally:
        src.close()


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_link_or_a_pipe_in_the_data_directory_refuses_the_backup(
    shop: Tristage, kind: str
) -> None:
    data = data_dir(shop)
    (data / "uploads").mkdir()
    target = data / "uploads" / "evil"
    if kind == "symlink":
        target.symlink_to(shop.home / "master.key")
    else:
        os.mkfifo(target)
    with pytest.raises(TristageError, match="only regular files and directories") as info:
        shop.data.backup("shop", "production")
    assert "'uploads/evil'" in info.value.message and "remove it" in (info.value.hint or "")
    assert shop.data.backups("shop", "production") == []


# -- hostile or damaged archives ------------------------------------------------------


def _rewrite_archive(api: Tristage, env: str, backup_id: str, tar_bytes: bytes) -> None:
    """Put `tar_bytes` into an (unencrypted) backup as its files archive, with a
    manifest that matches it: as an attacker with write access to the backups would."""
    import hashlib

    path = api.data.target("shop", env).local_path(backup_id)
    assert path is not None
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(members["manifest.json"])
    manifest["extra"]["files"].update(
        sha256=hashlib.sha256(tar_bytes).hexdigest(), bytes=len(tar_bytes)
    )
    members[plan.ARCHIVE_MEMBER] = tar_bytes
    members["manifest.json"] = json.dumps(manifest).encode()
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    tmp.replace(path)


def _tar(*entries: tarfile.TarInfo, data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            tar.addfile(e, io.BytesIO(data) if e.isreg() else None)
    return buf.getvalue()


def _entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    e = tarfile.TarInfo(name)
    e.type, e.linkname = kind, link
    e.size = 1 if kind == tarfile.REGTYPE else 0
    return e


HOSTILE = {
    "symlink": ([_entry("ok.txt"), _entry("uploads", tarfile.SYMTYPE, "/etc")], "symbolic link"),
    "hardlink": ([_entry("h", tarfile.LNKTYPE, "/etc/passwd")], "hard link"),
    "device": ([_entry("dev", tarfile.CHRTYPE)], "device file"),
    "fifo": ([_entry("pipe", tarfile.FIFOTYPE)], "named pipe"),
    "dotdot": ([_entry("../escape.txt")], "leaves the data directory"),
    "absolute": ([_entry("/tmp/escape.txt")], "not a relative path"),
    "store file": ([_entry("database.sqlite3")], "file of the data store"),
    "twice": ([_entry("a.txt"), _entry("a.txt")], "appears twice"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_archive_entries_are_refused_and_nothing_changes(
    shop: Tristage, tmp_path: Path, case: str
) -> None:
    data = data_dir(shop, "preview")
    (data / "current.txt").write_text("the live tree")
    info = shop.data.backup("shop", "preview")
    entries, message = HOSTILE[case]
    _rewrite_archive(shop, "preview", info.id, _tar(*entries))
    with pytest.raises(BackupDamaged, match=message):
        shop.data.restore("shop", "preview", info.id)
    assert tree(data) == {"current.txt": b"the live tree"}
    assert not (tmp_path.parent / "escape.txt").exists() and not Path("/tmp/escape.txt").exists()
    assert [b.kind for b in shop.data.backups("shop", "preview")] == ["manual"]  # no safety
    assert not [p for p in data.parent.iterdir() if p.name.startswith(".")]
    report = shop.data.drill("shop", "preview", info.id)
    assert not report.passed and any(message in p for p in report.problems), report.problems


def test_a_damaged_archive_fails_verification(shop: Tristage) -> None:
    data = data_dir(shop, "preview")
    (data / "a.txt").write_text("one")
    info = shop.data.backup("shop", "preview")
    path = shop.data.target("shop", "preview").local_path(info.id)
    assert path is not None
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    raw = bytearray(members[plan.ARCHIVE_MEMBER])
    raw[600] ^= 1  # a byte of a.txt's content
    members[plan.ARCHIVE_MEMBER] = bytes(raw)
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    (data / "a.txt").write_text("two")
    with pytest.raises(BackupDamaged, match="sha256"):
        shop.data.restore("shop", "preview", info.id)
    assert (data / "a.txt").read_text() == "two"
    with pytest.raises(BackupDamaged, match="sha256"):
        shop.data.verify("shop", "preview", info.id)


# -- the swap: kill -9 at every step ----------------------------------------------

SWAP = """
import os, signal, sys
from pathlib import Path
from tristage.edges import data_files as disk

root, stop = Path(sys.argv[1]), sys.argv[2]
store = frozenset({"database.sqlite3"})

def step(label):
    if label == stop:
        os.kill(os.getpid(), signal.SIGKILL)

with disk.staging(root) as stage:
    for name, text in [("a.txt", "new a"), ("new-only.txt", "n")]:
        (stage.new / name).write_text(text)
    (stage.new / "sub").mkdir()
    (stage.new / "sub" / "c.txt").write_text("new c")
    disk.swap_in(stage, store, step)
print("swapped")
"""

OLD = {"a.txt": b"old a", "old-only.txt": b"o", "sub": None, "sub/c.txt": b"old c", "z": None}
NEW = {"a.txt": b"new a", "new-only.txt": b"n", "sub": None, "sub/c.txt": b"new c"}


def _old_tree(root: Path) -> None:
    root.mkdir()
    for rel, content in OLD.items():
        if content is None:
            (root / rel).mkdir()
        else:
            (root / rel).write_bytes(content)
    (root / "database.sqlite3").write_bytes(b"store")


STEPS = ["journal:old", "old:a.txt", "old:sub", "old:z", "journal:new", "new:a.txt",
         "new:new-only.txt", "new:sub", "done", "never"]  # fmt: skip


@pytest.mark.parametrize("stop", STEPS)
def test_a_swap_killed_at_any_step_leaves_the_old_or_the_new_tree(
    tmp_path: Path, stop: str
) -> None:
    root = tmp_path / "data" / "production"
    root.parent.mkdir()
    _old_tree(root)
    r = subprocess.run([sys.executable, "-c", SWAP, str(root), stop], capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == (0 if stop == "never" else -signal.SIGKILL), r.stderr
    store = frozenset({"database.sqlite3"})
    disk.recover(root, store)
    got = tree(root)
    # killed before the journal's "new" phase is written: the old tree; after: the new one
    expected = OLD if STEPS.index(stop) <= STEPS.index("journal:new") else NEW
    assert got == expected, (stop, got)
    assert (root / "database.sqlite3").read_bytes() == b"store"
    assert [p.name for p in root.parent.iterdir()] == ["production"]


def test_recovery_leaves_a_swap_in_progress_alone(tmp_path: Path) -> None:
    root = tmp_path / "production"
    _old_tree(root)
    with disk.staging(root) as stage:
        assert disk.has_stage(root)
        assert disk.recover(root, frozenset()) == 0  # locked by this process
        assert stage.path.is_dir()
    assert not disk.has_stage(root)


def test_a_release_sees_the_swapped_tree_through_its_bind_mount(tmp_path: Path) -> None:
    """Measured with bubblewrap: a directory renamed under a bind mount keeps the mount on
    the old directory, so the swap renames entries inside it; a sandboxed process sees them."""
    root = tmp_path / "production"
    _old_tree(root)
    script = (
        "import sys, time; from pathlib import Path\n"
        "p = Path(sys.argv[1])\n"
        "print((p / 'a.txt').read_text(), flush=True); sys.stdin.readline()\n"
        "print((p / 'a.txt').read_text(), flush=True)\n"
        "(p / 'from-inside.txt').write_text('written after the swap')\n"
    )
    python = os.path.realpath(sys.executable)
    argv = ["bwrap", "--unshare-user", "--unshare-pid", "--die-with-parent",
            "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib",
            "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
            "--ro-bind", sys.base_prefix, sys.base_prefix,
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            "--bind", str(root), str(root),
            "--", python, "-c", script, str(root)]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "old a"
        with disk.staging(root) as stage:
            (stage.new / "a.txt").write_text("new a")
            disk.swap_in(stage, frozenset({"database.sqlite3"}))
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "new a"
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    assert (root / "from-inside.txt").read_text() == "written after the swap"


def test_an_interrupted_swap_is_finished_before_the_data_directory_is_used(
    shop: Tristage,
) -> None:
    root = data_dir(shop, "preview")
    (root / "a.txt").write_text("old a")
    r = subprocess.run([sys.executable, "-c", SWAP, str(root), "new:new-only.txt"],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert disk.has_stage(root)
    # what a release start, a backup or a restore asks for first
    assert shop.data.data_dir("shop", "preview") == root
    assert not disk.has_stage(root)
    assert tree(root) == NEW


# -- clones -------------------------------------------------------------------------


def test_a_clone_from_production_copies_only_the_ruled_files(api: Tristage, repo: Path) -> None:
    configure(api, repo, '\n[sanitize.files]\ncopy = ["public/**"]\n')
    app_writes(api.data.data_dir("shop", "production"), ["prod"])
    preview = api.data.data_dir("shop", "preview")
    (preview / "stale.txt").write_text("preview's own")
    with pytest.raises(ConfirmationRequired, match="1 file"):
        api.data.clone("shop", "production", "preview")
    assert (preview / "stale.txt").exists()
    report = api.data.clone("shop", "production", "preview", yes=True)
    assert (report.files_copied, report.files_left_out) == (1, 3)
    assert tree(preview) == {"public": None, "public/logo.svg": b"<svg/>"}
    assert report.safety_backup is not None  # preview's files are in it
    # without the rule nothing is copied, and the report says how much was left out
    configure(api, repo)
    report = api.data.clone("shop", "production", "preview", yes=True)
    assert (report.files_copied, report.files_left_out) == (0, 4)
    assert tree(preview) == {}
    # from an environment that is not production every file is copied
    (preview / "p.txt").write_text("preview")
    report = api.data.clone("shop", "preview", "development", yes=True)
    assert (report.files_copied, report.files_left_out) == (1, 0)
    assert tree(api.data.data_dir("shop", "development")) == {"p.txt": b"preview"}


def test_a_clone_refuses_a_link_in_the_source_before_copying(api: Tristage, repo: Path) -> None:
    configure(api, repo, '\n[sanitize.files]\ncopy = ["**"]\n')
    prod = api.data.data_dir("shop", "production")
    (prod / "public").mkdir()
    (prod / "public" / "link").symlink_to("/etc/passwd")
    with pytest.raises(TristageError, match="symbolic link"):
        api.data.clone("shop", "production", "preview", yes=True)
    assert tree(api.data.data_dir("shop", "preview")) == {}


# -- [sanitize.files] in the schema ---------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ('copy = ["/etc/**"]', "drop the leading '/'"),
        ('copy = ["../production/**"]', "'..'"),
        ('copy = ["pub**"]', "whole path segment"),
        ('copy = ["public/[ab"]', "closing ']'"),
        ('copy = [""]', "empty pattern"),
        ('copy = "public/**"', "list of glob patterns"),
        ('include = ["x"]', "unknown key(s) include"),
    ],
)
def test_a_bad_files_rule_is_a_clear_config_error(rule: str, message: str) -> None:
    text = CONFIG.format(extra=f"\n[sanitize.files]\n{rule}\n")
    with pytest.raises(TristageError) as info:
        parse_config(text)
    assert message in str(info.value) and "[sanitize.files]" in str(info.value)


def test_copy_belongs_in_the_files_table_only() -> None:
    text = CONFIG.format(extra='\n[sanitize]\n"users.email" = { copy = ["x"] }\n')
    with pytest.raises(TristageError, match=r"belongs in \[sanitize.files\]"):
        parse_config(text)


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("public/**", ["public/a", "public/a/b.png"], ["publicx/a", "a/public/b"]),
        ("**/*.png", ["a.png", "x/y/a.png"], ["a.jpg", "x/a.png/b"]),
        ("media/*.jp?g", ["media/a.jpeg", "media/b.jpxg"], ["media/x/a.jpeg", "media/a.jpg"]),
        ("a/**/z", ["a/z", "a/b/c/z"], ["a/zz", "b/z"]),
        ("f[!0-9]", ["fa"], ["f1", "fab"]),
        ("**", ["a", "a/b/c", ".hidden"], []),
    ],
)
def test_globs(pattern: str, yes: list[str], no: list[str]) -> None:
    rx = plan.compile_glob(pattern)
    assert all(rx.fullmatch(p) for p in yes), pattern
    assert not any(rx.fullmatch(p) for p in no), pattern
    assert plan.copies_everything(pattern) == (pattern == "**")


def test_a_backup_to_s3_holds_the_files_and_restores_and_drills_from_there(
    api: Tristage, repo: Path
) -> None:
    import secrets

    import boto3

    from test_backup_target_conformance import _s3_endpoint

    endpoint = _s3_endpoint()
    bucket = "files-" + secrets.token_hex(4)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    target = f'target = "s3://{bucket}/t?endpoint={endpoint}"'
    configure(api, repo, f"\n[environments.production.backups]\n{target}\n")
    data = api.data.data_dir("shop", "production")
    app_writes(data, ["to the bucket"])
    before = tree(data)
    info = api.data.backup("shop", "production")
    assert not list((api.home / "backups").rglob("*.zip"))  # in the bucket only
    (data / "uploads" / "notes.txt").unlink()
    api.data.restore("shop", "production", info.id, yes=True)
    assert without_db(tree(data)) == without_db(before) and notes(data) == ["to the bucket"]
    report = api.data.drill("shop", "production", info.id)
    assert report.passed and any(c.table == "(files)" and c.ok for c in report.checks)


def test_a_store_file_in_a_subdirectory_stays_in_place_through_a_restore(
    api: Tristage, repo: Path
) -> None:
    """`database.url = "app/shop.db"`: the swap works inside `app/`, never moving it."""
    configure(api, repo, '\n[environments.preview.database]\nurl = "app/shop.db"\n')
    url = api.data.database_url("shop", "preview")
    db = sqlite3.connect(url.removeprefix("sqlite://"))
    db.execute("CREATE TABLE t (v TEXT)")
    db.execute("INSERT INTO t VALUES ('row')")
    db.commit()
    db.close()
    data = api.data.data_dir("shop", "preview")
    (data / "app" / "cache.txt").write_text("beside the store")
    (data / "top.txt").write_text("top")
    info = api.data.backup("shop", "preview")
    (data / "app" / "cache.txt").unlink()
    (data / "top.txt").write_text("changed")
    (data / "app" / "later.txt").write_text("later")
    result = api.data.restore("shop", "preview", info.id)
    assert result.files == 2 and result.rows == {"t": 1}
    assert (data / "app" / "cache.txt").read_text() == "beside the store"
    assert (data / "top.txt").read_text() == "top" and not (data / "app" / "later.txt").exists()
    assert (data / "app" / "shop.db").is_file()
    db = sqlite3.connect(url.removeprefix("sqlite://"))
    assert db.execute("SELECT v FROM t").fetchall() == [("row",)]
    db.close()


NESTED = """
import os, signal, sys
from pathlib import Path
from tristage.edges import data_files as disk

root, stop = Path(sys.argv[1]), sys.argv[2]
def step(label):
    if label == stop:
        os.kill(os.getpid(), signal.SIGKILL)
with disk.staging(root) as stage:
    (stage.new / "app").mkdir()
    (stage.new / "app" / "x.txt").write_text("new x")
    disk.swap_in(stage, frozenset({"app/db"}), step)
"""


@pytest.mark.parametrize("stop", ["old:app/x.txt", "old:top.txt", "new:app/x.txt", "done"])
def test_a_killed_swap_around_a_nested_store_file(tmp_path: Path, stop: str) -> None:
    root = tmp_path / "env"
    (root / "app").mkdir(parents=True)
    (root / "app" / "db").write_text("store")
    (root / "app" / "x.txt").write_text("old x")
    (root / "top.txt").write_text("old top")
    r = subprocess.run([sys.executable, "-c", NESTED, str(root), stop], capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == -signal.SIGKILL, r.stderr
    disk.recover(root, frozenset({"app/db"}))
    got = {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*") if p.is_file()}
    old = {"app/db": "store", "app/x.txt": "old x", "top.txt": "old top"}
    new = {"app/db": "store", "app/x.txt": "new x"}
    assert got == (old if stop.startswith("old:") else new), got


def test_an_app_sqlite_file_is_backed_up_consistently_with_what_its_wal_holds(
    shop: Tristage,
) -> None:
    """The app died with its last transaction only in the WAL (never checkpointed): the
    backup holds a consistent copy made by SQLite, not the file and its -wal apart."""
    data = data_dir(shop)
    script = (
        "import os, sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('PRAGMA journal_mode=WAL'); c.execute('PRAGMA wal_autocheckpoint=0')\n"
        "c.execute('CREATE TABLE notes (body TEXT)')\n"
        "c.execute(\"INSERT INTO notes VALUES ('only in the wal')\")\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(data / "db.sqlite3")], check=True,
                   timeout=30)  # fmt: skip
    assert (data / "db.sqlite3-wal").stat().st_size > 0
    info = shop.data.backup("shop", "production")
    src = shop.data.verify("shop", "production", info.id)
    try:
        entry = shop.data.backup_service.files.entry(src)
        assert entry is not None
        raw = b"".join(src.checked_chunks(plan_entry(entry)))
    finally:
        src.close()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        assert tar.getnames() == ["db.sqlite3"]  # no -wal, -shm: all in the copy
    for p in list(data.glob("db.sqlite3*")):
        p.unlink()
    shop.data.restore("shop", "production", info.id, yes=True)
    db = sqlite3.connect(data / "db.sqlite3")
    assert db.execute("SELECT body FROM notes").fetchall() == [("only in the wal",)]
    db.close()
    assert not list((shop.home / "tmp").glob("files-sqlite-*"))
