"""The `BackupTarget` protocol's conformance suite: one set of tests run against every
implementation (`local-directory`, a real directory) and the in-memory fake.

A `Harness` gives each test what it needs in the target's own terms, independently of
the target's own bookkeeping: how many partial writes it holds, a way to make them old
(as a write killed long ago leaves them), and, where objects are files, their modes.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from tristage.edges.backup_targets import (
    SUFFIX,
    TMP_PREFIX,
    BackupTarget,
    LocalDirectoryTarget,
    MemoryTarget,
)
from tristage.edges.s3_target import S3Target
from tristage.errors import NotFound, UsageError


@dataclass(frozen=True)
class Harness:
    name: str
    open: Callable[[Path], BackupTarget]
    partials: Callable[[Any], int]  # partial writes the target holds
    age_partials: Callable[[Any, float], None]  # make every partial write older
    modes: Callable[[Any], dict[str, int]] | None  # mode of each thing at rest, if files


def _local_partials(t: LocalDirectoryTarget) -> int:
    if not t.root.is_dir():
        return 0
    return sum(1 for p in t.root.iterdir() if not p.name.endswith(SUFFIX))


def _local_age(t: LocalDirectoryTarget, seconds: float) -> None:
    for p in t.root.glob(f"{TMP_PREFIX}*"):
        st = p.stat()
        os.utime(p, (st.st_atime - seconds, st.st_mtime - seconds))


def _local_modes(t: LocalDirectoryTarget) -> dict[str, int]:
    out = {".": stat.S_IMODE(t.root.stat().st_mode)}
    for p in t.root.iterdir():
        out[p.name] = stat.S_IMODE(p.lstat().st_mode)
    return out


def _local_age_spool(t: S3Target, seconds: float) -> None:
    for p in t.spool.glob(f"{TMP_PREFIX}*"):
        st = p.stat()
        os.utime(p, (st.st_atime - seconds, st.st_mtime - seconds))


def _memory_age(t: MemoryTarget, seconds: float) -> None:
    for p in t.partials.values():
        p.started -= seconds


# -- S3: moto's server mode on a free loopback port (one per test process) ----------

_S3: dict[str, Any] = {}


def _s3_endpoint() -> str:
    if "url" not in _S3:
        import atexit
        import socket

        from moto.server import ThreadedMotoServer

        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        atexit.register(server.stop)
        _S3["url"] = f"http://127.0.0.1:{port}"
    return str(_S3["url"])


def _s3_open(place: Path) -> S3Target:
    url = _s3_endpoint()
    bucket = "b-" + place.name.lower().replace("_", "-")[-40:].strip("-")
    target = S3Target(bucket, "shop/production", place.parent / (place.name + "-spool"), url)
    target.client.create_bucket(Bucket=bucket)
    return target


def _s3_partials(t: S3Target) -> int:
    spooled = len(list(t.spool.glob(f"{TMP_PREFIX}*"))) if t.spool.is_dir() else 0
    uploads = t.client.list_multipart_uploads(Bucket=t.bucket).get("Uploads", [])
    return spooled + len(uploads)


HARNESSES = [
    Harness(
        "local-directory",
        lambda place: LocalDirectoryTarget(place / "backups" / "shop" / "production"),
        _local_partials,
        _local_age,
        _local_modes,
    ),
    Harness("s3", _s3_open, _s3_partials, _local_age_spool, None),
    Harness(
        "memory",
        lambda place: MemoryTarget(),
        lambda t: len(t.partials),
        _memory_age,
        None,
    ),
]


@pytest.fixture(params=HARNESSES, ids=lambda h: h.name)
def harness(request: pytest.FixtureRequest) -> Harness:
    h: Harness = request.param
    return h


@pytest.fixture
def target(harness: Harness, tmp_path: Path) -> BackupTarget:
    return harness.open(tmp_path)


def put(target: BackupTarget, name: str, data: bytes) -> None:
    with target.create(name) as f:
        f.write(data)


def get(target: BackupTarget, name: str) -> bytes:
    with target.open(name) as f:
        return f.read()


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


# -- put, get, list, delete ---------------------------------------------------------


def test_put_get_list_delete_round_trip(target: BackupTarget) -> None:
    assert target.list() == []
    big = os.urandom(3 << 20)  # several megabytes, binary
    before = time.time()
    put(target, "20260101T000000Z-b", big)
    put(target, "20260101T000000Z-a", b"small")
    listed = target.list()
    assert [b.name for b in listed] == ["20260101T000000Z-a", "20260101T000000Z-b"]
    assert [b.size for b in listed] == [5, len(big)]
    assert all(before - 2 <= b.modified <= time.time() + 2 for b in listed)
    assert get(target, "20260101T000000Z-b") == big
    with target.open("20260101T000000Z-b") as f:  # seekable
        f.seek(len(big) - 10)
        assert f.read() == big[-10:]
        f.seek(0)
        assert f.read(4) == big[:4]
    target.delete("20260101T000000Z-b")
    assert [b.name for b in target.list()] == ["20260101T000000Z-a"]
    with pytest.raises(NotFound):
        target.open("20260101T000000Z-b")
    target.delete("20260101T000000Z-b")  # deleting what is gone is not an error
    assert get(target, "20260101T000000Z-a") == b"small"
    assert target.describe()


def test_local_path_is_none_or_the_published_file(target: BackupTarget) -> None:
    put(target, "one", b"the bytes")
    path = target.local_path("one")
    if path is not None:
        assert path.read_bytes() == b"the bytes"
    assert target.local_path("missing") is None


def test_open_of_a_missing_backup_is_not_found(target: BackupTarget) -> None:
    with pytest.raises(NotFound) as exc:
        target.open("nothing-here")
    assert "nothing-here" in str(exc.value)


def test_an_existing_name_is_refused_and_the_backup_kept(target: BackupTarget) -> None:
    put(target, "same", b"first")
    with pytest.raises(UsageError):
        put(target, "same", b"second")
    assert get(target, "same") == b"first"


def test_two_writes_of_one_name_at_once_publish_one_and_refuse_the_other(
    target: BackupTarget,
) -> None:
    first, second = target.create("twice"), target.create("twice")
    f1, f2 = first.__enter__(), second.__enter__()
    f1.write(b"first")
    f2.write(b"second")
    first.__exit__(None, None, None)
    with pytest.raises(UsageError):
        second.__exit__(None, None, None)
    assert get(target, "twice") == b"first"
    assert [b.name for b in target.list()] == ["twice"]


# -- atomic publishing --------------------------------------------------------------


def test_a_backup_being_written_is_not_listed_until_complete(
    target: BackupTarget, harness: Harness
) -> None:
    put(target, "done", b"old")
    with target.create("writing") as f:
        f.write(b"half")
        f.flush()
        assert [b.name for b in target.list()] == ["done"]
        with pytest.raises(NotFound):
            target.open("writing")
        assert target.local_path("writing") is None
        assert harness.partials(target) == 1
        f.write(b" and the rest")
    assert [b.name for b in target.list()] == ["done", "writing"]
    assert get(target, "writing") == b"half and the rest"
    assert harness.partials(target) == 0


def test_an_exception_inside_create_leaves_nothing(target: BackupTarget, harness: Harness) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), target.create("failed") as f:
        f.write(b"x" * 100_000)
        raise Boom
    assert target.list() == []
    assert harness.partials(target) == 0
    with pytest.raises(NotFound):
        target.open("failed")
    put(target, "failed", b"second try")  # the name is free again
    assert get(target, "failed") == b"second try"


def test_sweep_removes_only_stale_partial_writes(target: BackupTarget, harness: Harness) -> None:
    put(target, "published", b"kept")
    stale = target.create("killed")  # a write that never finished (its process died)
    stale.__enter__().write(b"partial")
    harness.age_partials(target, 7200)
    fresh = target.create("running")
    fresh.__enter__().write(b"in progress")
    assert harness.partials(target) == 2
    assert target.sweep(3600) == 1
    assert harness.partials(target) == 1
    assert target.sweep(3600) == 0
    # the write in progress still completes; the swept one can no longer be published
    fresh.__exit__(None, None, None)
    assert get(target, "running") == b"in progress"
    with pytest.raises(Exception):  # noqa: B017 - how it fails is the target's own
        stale.__exit__(None, None, None)
    assert [b.name for b in target.list()] == ["published", "running"]
    assert get(target, "published") == b"kept"
    assert harness.partials(target) == 0


def test_sweep_never_removes_a_published_backup(target: BackupTarget) -> None:
    assert target.sweep(0) == 0
    put(target, "old", b"kept")
    time.sleep(0.02)
    assert target.sweep(0) == 0  # whatever its age
    assert [b.name for b in target.list()] == ["old"]
    assert get(target, "old") == b"kept"


# -- names ---------------------------------------------------------------------------

BAD_NAMES = [
    "",
    "..",
    "../escape",
    "a/../../b",
    "sub/dir",
    "/etc/passwd",
    ".hidden",
    TMP_PREFIX + "x",
    "a..b",
    "nul\x00byte",
    "new\nline",
    "back\\slash",
    "space name",
    "x" * 200,
    "zoë",
    "name" + SUFFIX[:4] + "/x",
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_names_are_refused_everywhere(
    target: BackupTarget, harness: Harness, tmp_path: Path, name: str
) -> None:
    calls: list[Callable[[], object]] = [
        lambda: target.open(name),
        lambda: target.delete(name),
        lambda: target.local_path(name),
    ]
    for call in calls:
        with pytest.raises(UsageError) as exc:
            call()
        assert "is not a backup id" in str(exc.value)
    with pytest.raises(UsageError):
        put(target, name, b"x")
    assert target.list() == []
    assert harness.partials(target) == 0
    # nothing was written beside or above the target either
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == []


# -- private whatever the umask -----------------------------------------------------


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077])
def test_everything_at_rest_is_private_whatever_the_umask(
    target: BackupTarget, harness: Harness, mask: int
) -> None:
    if harness.modes is None:
        pytest.skip(f"{harness.name} keeps nothing on disk")
    with umask(mask):
        writing: AbstractContextManager[IO[bytes]] = target.create("partial")
        writing.__enter__().write(b"secret partial")
        during = harness.modes(target)
        writing.__exit__(None, None, None)
        put(target, "published", b"secret")
    after = harness.modes(target)
    assert during["."] == 0o700 and after["."] == 0o700
    assert [m for n, m in during.items() if n != "."] == [0o600]
    assert sorted(after) == [".", "partial" + SUFFIX, "published" + SUFFIX]
    assert all(m == 0o600 for n, m in after.items() if n != ".")
