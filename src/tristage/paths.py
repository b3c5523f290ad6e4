"""Where the platform keeps its state: `$TRISTAGE_HOME`, else the user's data directory."""

from __future__ import annotations

import os
from pathlib import Path


def platform_home() -> Path:
    env = os.environ.get("TRISTAGE_HOME")
    if env:
        home = Path(env).expanduser()
    else:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        home = Path(base) / "tristage"
    return private_dir(home).resolve()


def private_dir(path: Path) -> Path:
    """Make sure directory `path` exists; what is created (it and missing parents) is
    0700 whatever the umask. An existing directory is left as it is."""
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:  # created concurrently: theirs
            continue
        os.chmod(directory, 0o700)  # mkdir's mode is filtered through the umask
    path.mkdir(exist_ok=True)  # raises if `path` is a file
    return path


def private_file(path: Path) -> None:
    """Create `path` if missing; make it (and an existing one) 0600 whatever the umask."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o177:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def safe_child(root: Path, *parts: str) -> Path:
    """Join user-supplied parts under root, refusing anything that escapes it."""
    from .errors import UsageError

    candidate = root.joinpath(*parts).resolve()
    root_resolved = root.resolve()
    if candidate != root_resolved and root_resolved not in candidate.parents:
        raise UsageError(f"path {'/'.join(parts)!r} escapes {root}", "use a plain name")
    return candidate
