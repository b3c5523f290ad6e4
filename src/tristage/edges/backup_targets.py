"""Where backups are kept: a small protocol and a local-directory implementation.

Backups are private: files 0600, directories 0700, whatever the umask.
Publishing is atomic: a backup is written under a temporary name, flushed to disk,
then renamed into place. Only published objects are listed, so a backup killed
half-way never shows up (its temporary file is swept by `sweep`). An S3-compatible
target is a second implementation of the same protocol (multipart upload, then a
final object whose name is listed).
"""

from __future__ import annotations

import errno
import io
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from ..errors import NotFound, UsageError
from ..paths import make_private, private_mkdirs, private_open

SUFFIX = ".tsbackup.zip"
TMP_PREFIX = ".partial-"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}\Z")


@dataclass(frozen=True)
class StoredBackup:
    name: str  # the backup id
    size: int
    modified: float


class BackupTarget(Protocol):
    def describe(self) -> str: ...

    def create(self, name: str) -> AbstractContextManager[IO[bytes]]:
        """Write a backup; it is published only if the block exits without error."""
        ...

    def list(self) -> list[StoredBackup]: ...

    def open(self, name: str) -> IO[bytes]:
        """A seekable binary file of a published backup."""
        ...

    def local_path(self, name: str) -> Path | None: ...

    def delete(self, name: str) -> None: ...

    def sweep(self, older_than: float) -> int:
        """Remove partial writes older than `older_than` seconds; returns how many."""
        ...


def check_name(name: str) -> str:
    if not NAME_RE.match(name) or ".." in name:
        raise UsageError(f"{name!r} is not a backup id", "list them with 'tristage db backups ENV'")
    return name


class LocalDirectoryTarget:
    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return str(self.root)

    def _path(self, name: str) -> Path:
        return self.root / (check_name(name) + SUFFIX)

    @contextmanager
    def create(self, name: str) -> Iterator[IO[bytes]]:
        final = self._path(name)
        if final.exists():
            raise UsageError(f"backup {name} already exists")
        make_private(private_mkdirs(self.root))
        tmp = self.root / f"{TMP_PREFIX}{name}-{secrets.token_hex(4)}"
        f = private_open(tmp, exclusive=True)
        try:
            yield f
            f.flush()
            os.fsync(f.fileno())
            f.close()
            _publish(tmp, final, name)
            _fsync_dir(self.root)
        except BaseException:
            f.close()
            tmp.unlink(missing_ok=True)
            raise

    def list(self) -> list[StoredBackup]:
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.iterdir():
            if p.name.startswith(TMP_PREFIX) or not p.name.endswith(SUFFIX):
                continue
            st = p.stat()
            out.append(StoredBackup(p.name[: -len(SUFFIX)], st.st_size, st.st_mtime))
        return sorted(out, key=lambda b: b.name)

    def open(self, name: str) -> IO[bytes]:
        path = self._path(name)
        if not path.is_file():
            raise NotFound(
                f"no backup {name} in {self.root}", "list them with 'tristage db backups ENV'"
            )
        return open(path, "rb")

    def local_path(self, name: str) -> Path | None:
        path = self._path(name)
        return path if path.is_file() else None

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)
        _fsync_dir(self.root)

    def sweep(self, older_than: float) -> int:
        if not self.root.is_dir():
            return 0
        n = 0
        cutoff = time.time() - older_than
        for p in self.root.glob(f"{TMP_PREFIX}*"):
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    n += 1
            except FileNotFoundError:
                pass
        return n


def _publish(tmp: Path, final: Path, name: str) -> None:
    """Give `tmp` its final name, never replacing a backup published meanwhile (a hard
    link fails if the name exists; a file system without hard links is renamed onto)."""
    try:
        os.link(tmp, final, follow_symlinks=False)
    except FileExistsError:
        raise UsageError(f"backup {name} already exists") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        if final.exists():
            raise UsageError(f"backup {name} already exists") from None
        os.replace(tmp, final)
        return
    tmp.unlink()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _Partial:
    name: str
    data: IO[bytes]
    started: float


class MemoryTarget:
    """An in-memory `BackupTarget` for tests: the same contract as a directory, nothing
    on disk. Published objects are kept as bytes; writes in progress are partials that
    `sweep` removes once they are old enough (their age follows `clock`)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.objects: dict[str, tuple[bytes, float]] = {}
        self.partials: dict[int, _Partial] = {}
        self._next = 0

    def describe(self) -> str:
        return "memory"

    @contextmanager
    def create(self, name: str) -> Iterator[IO[bytes]]:
        check_name(name)
        if name in self.objects:
            raise UsageError(f"backup {name} already exists")
        key = self._next = self._next + 1
        f = io.BytesIO()
        self.partials[key] = _Partial(name, f, self.clock())
        try:
            yield f
            if self.partials.pop(key, None) is None:
                raise UsageError(f"backup {name} was swept before it was complete")
            if name in self.objects:
                raise UsageError(f"backup {name} already exists")
            self.objects[name] = (f.getvalue(), self.clock())
        finally:
            self.partials.pop(key, None)

    def list(self) -> list[StoredBackup]:
        return [
            StoredBackup(name, len(data), modified)
            for name, (data, modified) in sorted(self.objects.items())
        ]

    def open(self, name: str) -> IO[bytes]:
        check_name(name)
        if name not in self.objects:
            raise NotFound(
                f"no backup {name} in memory", "list them with 'tristage db backups ENV'"
            )
        return io.BytesIO(self.objects[name][0])

    def local_path(self, name: str) -> Path | None:
        check_name(name)
        return None

    def delete(self, name: str) -> None:
        check_name(name)
        self.objects.pop(name, None)

    def sweep(self, older_than: float) -> int:
        cutoff = self.clock() - older_than
        stale = [k for k, p in self.partials.items() if p.started < cutoff]
        for k in stale:
            del self.partials[k]
        return len(stale)
