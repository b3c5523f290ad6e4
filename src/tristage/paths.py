"""Where the platform keeps its state: `$TRISTAGE_HOME`, else the user's data directory."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from . import unix_sockets


def platform_home() -> Path:
    env = os.environ.get("TRISTAGE_HOME")
    if env:
        home = Path(env).expanduser()
    else:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        home = Path(base) / "tristage"
    return private_mkdirs(home).resolve()


def socket_path(preferred: Path) -> Path:
    """Where to bind the unix socket meant to be at `preferred`: there when its path is
    short enough for a socket address, else a stand-in in a private directory of this
    user's (`unix_sockets.socket_path`, shared with the hook client)."""
    return Path(unix_sockets.socket_path(os.fspath(preferred)))


def safe_child(root: Path, *parts: str) -> Path:
    """Join user-supplied parts under root, refusing anything that escapes it."""
    from .errors import UsageError

    candidate = root.joinpath(*parts).resolve()
    root_resolved = root.resolve()
    if candidate != root_resolved and root_resolved not in candidate.parents:
        raise UsageError(f"path {'/'.join(parts)!r} escapes {root}", "use a plain name")
    return candidate


def private_dirs(root: Path, *parts: str) -> Path:
    """The directory `root/parts...`, each level below `root` created or made 0700.

    Modes are set with chmod, so they hold whatever the umask (mkdir only masks).
    """
    path = root
    for part in parts:
        path = path / part
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            if not path.is_dir():
                raise
        if path.stat().st_mode & 0o7777 != 0o700:
            path.chmod(0o700)
    return path


def private_mkdirs(path: Path) -> Path:
    """Make sure directory `path` exists; what is created (it and missing parents) is
    0700 whatever the umask. An existing directory is left as it is; a file is refused."""
    missing: list[str] = []
    base = path
    while not base.exists() and base != base.parent:
        missing.append(base.name)
        base = base.parent
    if not missing and not path.is_dir():
        raise NotADirectoryError(f"{path} is not a directory")
    return private_dirs(base, *reversed(missing))


def private_open(path: Path, exclusive: bool = False) -> BinaryIO:
    """Open `path` for writing (truncated), as a 0600 file whatever the umask; with
    `exclusive`, a file that already exists is an error (FileExistsError)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    flags |= os.O_EXCL if exclusive else os.O_TRUNC
    fd = os.open(path, flags, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o7777 != 0o600:
            os.fchmod(fd, 0o600)
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


def private_file(path: Path) -> Path:
    """Create `path` if missing and make it 0600 (an existing file keeps its contents).

    A symbolic link is refused (OSError ELOOP), never followed. An existing file is
    never opened: closing any descriptor of a file drops every POSIX lock this process
    holds on it, which would break the locking of a SQLite connection that has it open.
    """
    try:
        st = path.lstat()
    except FileNotFoundError:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                         0o600)  # fmt: skip
        except FileExistsError:  # created concurrently: make it private below
            st = path.lstat()
        else:
            try:
                os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
            return path
    if stat.S_ISLNK(st.st_mode):
        raise OSError(errno.ELOOP, f"{path} is a symbolic link")
    if st.st_mode & 0o7777 != 0o600:
        os.chmod(path, 0o600)
    return path


def make_private(path: Path) -> None:
    """Make an existing file 0600 (or a directory 0700); nothing if it does not exist."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        return
    want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
    if st.st_mode & 0o7777 != want:
        path.chmod(want)


def private_tree(root: Path) -> None:
    """Take group and other permissions off everything under `root` (a cache a tool
    filled with its own modes); symlinks are left alone."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
                if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
                    os.chmod(p, stat.S_IMODE(st.st_mode) & 0o700)
            except OSError:
                continue
