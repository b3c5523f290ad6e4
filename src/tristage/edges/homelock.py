"""One control plane per platform home: an exclusive lock held for the process's life."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from ..errors import TristageError

LOCK_FILE = "controlplane.lock"


class AlreadyRunning(TristageError):
    """Another control plane holds this home."""


class HomeLock:
    """`flock` on HOME/controlplane.lock; the file names the holder's pid."""

    def __init__(self, home: Path) -> None:
        self.path = home / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(
                f"a control plane is already running for {self.path.parent} (pid {holder})",
                "use it, or stop it first with 'tristage down'",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
