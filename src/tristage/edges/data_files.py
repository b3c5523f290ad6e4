"""The files of a data directory on disk: read them into a tar archive, unpack an
archive beside the directory, and put an unpacked tree in place all-or-nothing.

An app may have written anything into its data directory, and an archive may have been
altered: symbolic links, hard links, pipes, sockets and device files are refused with
the path named, symlinks are never followed (every open uses O_NOFOLLOW), and a name
that leaves the directory is refused. What is written here is private: files 0600
(0700 when the owner could run them), directories 0700, whatever the umask.

A release sees its data directory through a bind mount of that directory. Renaming the
directory itself would leave the running release on the old tree (the mount keeps the
directory it was made of, measured with bubblewrap), so a new tree is put in place by
renaming the entries *inside* the directory, the store's own files staying where they
are. The staging directory lives beside the data directory
(`<parent>/.files-<name>-<token>/`, outside any sandbox's view) and holds a journal; a
process killed while it swaps leaves the journal, and `recover` finishes or undoes its
work, so the tree is either the old or the new one. A staging directory is locked
(flock) by the process working in it, so `recover` leaves a live one alone.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import secrets
import shutil
import sqlite3
import stat
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from ..domain.data_files import UnsafeEntry, check_name, excluded, refusal
from ..errors import TristageError

STAGE_PREFIX = ".files-"
JOURNAL = "journal.json"
Step = Callable[[str], None]  # called before each step of a swap (names the step)


class DataFilesError(TristageError):
    pass


@dataclass(frozen=True)
class FileItem:
    rel: str
    is_dir: bool
    size: int
    mode: int
    mtime: float


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def scan(root: Path, store: frozenset[str]) -> list[FileItem]:
    """The directories and regular files under `root` (relative paths, sorted, parents
    first), without the excluded ones; anything else raises DataFilesError."""
    out: list[FileItem] = []

    def walk(folder: Path, prefix: str) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for e in entries:
            rel = prefix + e.name
            if excluded(rel, store):
                continue
            st = e.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                out.append(FileItem(rel, True, 0, st.st_mode, st.st_mtime))
                walk(Path(e.path), rel + "/")
            elif stat.S_ISREG(st.st_mode):
                # a second name of one file (a hard link inside the directory) is copied
                # as a file of its own
                out.append(FileItem(rel, False, st.st_size, st.st_mode, st.st_mtime))
            else:
                raise DataFilesError(
                    refusal(rel, _kind(st.st_mode), f"data directory {root}"),
                    "remove it (or replace it with a regular file); nothing was written",
                )

    walk(root, "")
    return out


def _file_mode(mode: int) -> int:
    return 0o700 if mode & stat.S_IXUSR else 0o600


class _Hashing(io.RawIOBase):
    """A writer that counts and hashes what passes through to `out`."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.h = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.h.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)


@dataclass(frozen=True)
class Archived:
    sha256: str
    bytes: int
    files: int
    file_bytes: int


SQLITE_HEADER = b"SQLite format 3\x00"
SQLITE_SIDE = ("-wal", "-shm", "-journal")
SQLITE_COPY_PREFIX = "files-sqlite-"  # in the platform's tmp/ while a backup runs


def _identity(path: Path) -> tuple[int, int, int] | None:
    """(device, inode, kind) of `path` itself (a link is not followed); None if absent."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, stat.S_IFMT(st.st_mode)


def _sqlite_copy(path: Path, scratch: Path) -> Path | None:
    """A consistent copy of the app's SQLite database `path` (SQLite's backup API: what
    its WAL holds included), in a private file of `scratch`; None when `path` is not a
    SQLite database, or SQLite cannot read it (then its files are copied as they are).
    The file and its -wal/-shm must be the same regular files (or absent) before and
    after, so a link swapped in meanwhile is never read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode) or f.read(16) != SQLITE_HEADER:
            return None
    watched = [path, *(Path(f"{path}{s}") for s in SQLITE_SIDE)]
    before = [_identity(p) for p in watched]
    if any(i is not None and i[2] != stat.S_IFREG for i in before):
        return None  # the caller refuses the link or special file
    copy = scratch / f"{SQLITE_COPY_PREFIX}{secrets.token_hex(6)}"
    try:
        src = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=5)
        try:
            dst = sqlite3.connect(copy)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()
        os.chmod(copy, 0o600)
    except sqlite3.Error:
        copy.unlink(missing_ok=True)
        return None
    after = [_identity(p) for p in watched[:1]]
    if after != before[:1]:
        copy.unlink(missing_ok=True)
        raise DataFilesError(
            f"data directory: {path.name!r} was replaced while it was backed up",
            "take the backup again; nothing was written",
        )
    return copy


def write_archive(
    root: Path, items: list[FileItem], out: IO[bytes], scratch: Path | None = None
) -> Archived:
    """A tar archive (PAX) of `items` written to `out`; a file that is no longer a
    regular file, or shrinks while it is read, raises DataFilesError. Given `scratch`
    (a private directory), an SQLite database of the app is archived as a consistent
    copy made by SQLite, without its -wal/-shm."""
    sink = _Hashing(out)
    files = total = 0
    copied: set[str] = set()
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for item in items:
            if any(item.rel.endswith(s) and item.rel[: -len(s)] in copied for s in SQLITE_SIDE):
                continue  # in the consistent copy of its database
            info = tarfile.TarInfo(item.rel)
            info.mtime = int(item.mtime)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if item.is_dir:
                info.type, info.mode = tarfile.DIRTYPE, 0o700
                tar.addfile(info)
                continue
            path = root / item.rel
            snapshot = _sqlite_copy(path, scratch) if scratch is not None else None
            if snapshot is not None:
                copied.add(item.rel)
                path = snapshot
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # removed by the app meanwhile: not part of the backup
            except OSError as exc:
                raise DataFilesError(
                    f"data directory {root}: cannot read {item.rel!r} ({exc.strerror})",
                    "it may be a symbolic link written meanwhile; nothing was written",
                ) from None
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise DataFilesError(
                        refusal(item.rel, _kind(st.st_mode), f"data directory {root}"),
                        "remove it; nothing was written",
                    )
                info.type, info.size, info.mode = (
                    tarfile.REGTYPE,
                    st.st_size,
                    _file_mode(st.st_mode),
                )
                try:
                    tar.addfile(info, f)
                except OSError as exc:
                    if "unexpected end of data" in str(exc):
                        raise DataFilesError(
                            f"data directory {root}: {item.rel!r} shrank while it was read",
                            "take the backup again; nothing was written",
                        ) from None
                    raise
                finally:
                    if snapshot is not None:
                        snapshot.unlink(missing_ok=True)
            files += 1
            total += info.size
    return Archived(sink.h.hexdigest(), sink.size, files, total)


class _ChunkReader(io.RawIOBase):
    """A file object over an iterator of byte chunks (a snapshot member's plain bytes)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.buf = b""
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self.buf and not self.done:
            try:
                self.buf = next(self.chunks)
            except StopIteration:
                self.done = True
        n = min(len(b), len(self.buf))
        b[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n

    def drain(self) -> None:
        """Read to the end, so the chunk iterator runs its final checks."""
        self.buf = b""
        for _ in self.chunks:
            pass
        self.done = True


_TAR_KINDS = {
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.FIFOTYPE: "fifo",
    tarfile.CHRTYPE: "device",
    tarfile.BLKTYPE: "device",
}


def read_archive(
    chunks: Iterator[bytes], into: Path | None, label: str, store: frozenset[str]
) -> tuple[int, int]:
    """Check every entry of the archive in `chunks` and, given `into` (an empty private
    directory), unpack it there; returns (files, bytes). A symlink, hard link, device,
    pipe, a name leaving the directory, a store file's name or a name given twice raise
    DataFilesError. `chunks` raises at its end when the archive differs from the
    manifest, so nothing unpacked may be used before this returns."""
    reader = _ChunkReader(chunks)
    stream = io.BufferedReader(reader, 1 << 20)
    files = total = 0
    seen: set[str] = set()
    made: set[str] = set()
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for m in tar:
                try:
                    rel = check_name(m.name)
                except UnsafeEntry as exc:
                    raise DataFilesError(f"{label}: {exc}", "nothing was restored") from None
                if not (m.isreg() or m.isdir()):
                    kind = _TAR_KINDS.get(m.type, "special file")
                    raise DataFilesError(refusal(rel, kind, label), "nothing was restored")
                if excluded(rel, store):
                    raise DataFilesError(
                        f"{label}: {rel!r} is a file of the data store or of tristage itself",
                        "the archive was altered; nothing was restored",
                    )
                if rel in seen:
                    raise DataFilesError(f"{label}: {rel!r} appears twice", "nothing was restored")
                seen.add(rel)
                if into is not None:
                    _make_parents(into, rel, made)
                if m.isdir():
                    if into is not None and rel not in made:
                        os.mkdir(into / rel, 0o700)
                        os.chmod(into / rel, 0o700)
                        made.add(rel)
                    continue
                src = tar.extractfile(m)
                assert src is not None
                files += 1
                total += m.size
                if into is None:
                    while src.read(1 << 20):
                        pass
                    continue
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                mode = _file_mode(m.mode)
                fd = os.open(into / rel, flags, mode)
                with os.fdopen(fd, "wb") as dst:
                    os.fchmod(dst.fileno(), mode)
                    shutil.copyfileobj(src, dst, 1 << 20)
                os.utime(into / rel, (m.mtime, m.mtime), follow_symlinks=False)
        reader.drain()
        if into is not None:
            sync_filesystem(into)  # one flush of the whole tree before it may be swapped in
    except tarfile.TarError as exc:
        raise DataFilesError(
            f"{label}: not a readable archive ({exc})", "nothing was restored"
        ) from None
    return files, total


def _make_parents(into: Path, rel: str, made: set[str]) -> None:
    parts = rel.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d not in made:
            p = into / d
            os.mkdir(p, 0o700)
            os.chmod(p, 0o700)
            made.add(d)


def copy_files(src_root: Path, rels: list[str], into: Path) -> tuple[int, int]:
    """Copy the regular files `rels` of `src_root` into the empty directory `into`
    (parents 0700, files 0600/0700; never following a link); returns (files, bytes)."""
    made: set[str] = set()
    files = total = 0
    for rel in rels:
        check_name(rel)
        try:
            fd = os.open(src_root / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise DataFilesError(
                f"data directory {src_root}: cannot read {rel!r} ({exc.strerror})",
                "it may be a symbolic link; nothing was copied",
            ) from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise DataFilesError(
                    refusal(rel, _kind(st.st_mode), f"data directory {src_root}"),
                    "remove it; nothing was copied",
                )
            _make_parents(into, rel, made)
            mode = _file_mode(st.st_mode)
            out = os.open(into / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            with os.fdopen(out, "wb") as dst:
                os.fchmod(dst.fileno(), mode)
                shutil.copyfileobj(f, dst, 1 << 20)
            os.utime(into / rel, (st.st_atime, st.st_mtime))
            files += 1
            total += st.st_size
    sync_filesystem(into)
    return files, total


def sync_filesystem(path: Path) -> None:
    """Flush the filesystem holding `path` (syncfs: one call for a whole unpacked tree,
    instead of an fsync per file); os.sync where syncfs is missing."""
    import ctypes
    import ctypes.util

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name, use_errno=True) if name else None
        if libc is None or not hasattr(libc, "syncfs") or libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


# -- staging and the swap ------------------------------------------------------------


@dataclass
class Stage:
    """A private directory beside `root` holding the new tree (`new/`) and, while the
    swap runs, the old one (`old/`) and the journal."""

    root: Path
    path: Path
    lock_fd: int

    @property
    def new(self) -> Path:
        return self.path / "new"

    @property
    def old(self) -> Path:
        return self.path / "old"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock(path: Path) -> int | None:
    """An exclusive lock on the stage's lock file, or None if another process holds it."""
    try:
        fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


@contextmanager
def staging(root: Path) -> Iterator[Stage]:
    """A locked staging directory beside `root`, removed when the block ends (after a
    swap, or unused)."""
    path = root.parent / f"{STAGE_PREFIX}{root.name}-{secrets.token_hex(4)}"
    os.mkdir(path, 0o700)
    os.chmod(path, 0o700)
    fd = _lock(path)
    assert fd is not None
    stage = Stage(root, path, fd)
    try:
        os.mkdir(stage.new, 0o700)
        os.chmod(stage.new, 0o700)
        yield stage
    finally:
        try:
            _remove_stage(path)
        finally:
            os.close(fd)


def _remove_stage(path: Path) -> None:
    """Drop a stage: its journal first (a stage without one holds nothing to recover)."""
    try:
        (path / JOURNAL).unlink(missing_ok=True)
        _fsync_dir(path)
    except FileNotFoundError:
        return
    shutil.rmtree(path, ignore_errors=True)


def _journal(stage: Path, phase: str) -> None:
    tmp = stage / f".{JOURNAL}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"phase": phase}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, stage / JOURNAL)
    _fsync_dir(stage)


def pinned_dirs(store: frozenset[str]) -> frozenset[str]:
    """The directories holding a store file (`app` for `app/shop.db`): they stay in
    place, and the swap works inside them."""
    out: set[str] = set()
    for rel in store:
        parts = rel.split("/")[:-1]
        out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return frozenset(out)


def _move_out(root: Path, old: Path, store: frozenset[str], pinned: frozenset[str],
              step: Step, prefix: str = "") -> None:  # fmt: skip
    for name in sorted(os.listdir(root)):
        rel = prefix + name
        if excluded(rel, store):
            continue
        if rel in pinned and os.path.isdir(root / name) and not os.path.islink(root / name):
            os.makedirs(old / name, 0o700, exist_ok=True)
            _move_out(root / name, old / name, store, pinned, step, rel + "/")
            continue
        step(f"old:{rel}")
        _move(root / name, old / name)


def _move_back(old: Path, root: Path, pinned: frozenset[str], prefix: str = "") -> None:
    for name in sorted(os.listdir(old)):
        rel = prefix + name
        if rel in pinned and os.path.isdir(root / name):
            _move_back(old / name, root / name, pinned, rel + "/")
        elif not os.path.lexists(root / name):
            _move(old / name, root / name)


def swap_in(stage: Stage, store: frozenset[str], step: Step | None = None) -> None:
    """Replace the entries of `stage.root` (all but the excluded ones) by those of
    `stage.new`: the old ones are moved into the stage, then the new ones in."""
    root = stage.root
    step = step or (lambda _label: None)
    pinned = pinned_dirs(store)
    os.mkdir(stage.old, 0o700)
    step("journal:old")
    _journal(stage.path, "old")
    _move_out(root, stage.old, store, pinned, step)
    step("journal:new")
    _journal(stage.path, "new")
    _move_in(stage.new, root, stage.old, store, pinned, step)
    _fsync_dir(root)
    step("done")
    (stage.path / JOURNAL).unlink()
    _fsync_dir(stage.path)


def _move(src: Path, dst: Path) -> None:
    try:
        os.rename(src, dst)
    except FileNotFoundError:
        pass  # removed meanwhile (or moved before a kill)


def _move_in(new: Path, root: Path, aside: Path, store: frozenset[str], pinned: frozenset[str],
             step: Step, prefix: str = "") -> None:  # fmt: skip
    for name in sorted(os.listdir(new)):
        rel = prefix + name
        target = root / name
        if rel in pinned and os.path.isdir(target) and not os.path.islink(target):
            os.makedirs(aside / name, 0o700, exist_ok=True)
            _move_in(new / name, target, aside / name, store, pinned, step, rel + "/")
            continue
        step(f"new:{rel}")
        if os.path.lexists(target) and not excluded(rel, store):
            # written by the app while the old entries were moved: it goes with them
            _move(target, aside / f"{name}.{secrets.token_hex(3)}")
        _move(new / name, target)


def recover(root: Path, store: frozenset[str]) -> int:
    """Finish or undo the swaps of `root` that a killed process left (a stage in the
    journal's `new` phase is finished, one in `old` undone, one without a journal
    dropped); stages locked by a live process are left alone. Returns how many."""
    n = 0
    try:
        names = os.listdir(root.parent)
    except FileNotFoundError:
        return 0
    prefix = f"{STAGE_PREFIX}{root.name}-"
    pinned = pinned_dirs(store)
    for name in names:
        if not name.startswith(prefix):
            continue
        path = root.parent / name
        fd = _lock(path)
        if fd is None:
            continue
        try:
            stage = Stage(root, path, fd)
            try:
                journal = json.loads((path / JOURNAL).read_text())
            except (FileNotFoundError, ValueError):
                journal = None
            phase = journal.get("phase") if isinstance(journal, dict) else None
            if phase == "new" and stage.new.is_dir():
                os.makedirs(stage.old, 0o700, exist_ok=True)
                _move_in(stage.new, root, stage.old, store, pinned, lambda _label: None)
            elif phase == "old" and stage.old.is_dir():
                _move_back(stage.old, root, pinned)
            _fsync_dir(root)
            _remove_stage(path)
            n += 1
        finally:
            os.close(fd)
    return n


def has_stage(root: Path) -> bool:
    """Whether a staging directory of `root` exists (a swap running or interrupted)."""
    prefix = f"{STAGE_PREFIX}{root.name}-"
    try:
        return any(e.startswith(prefix) for e in os.listdir(root.parent))
    except FileNotFoundError:
        return False
