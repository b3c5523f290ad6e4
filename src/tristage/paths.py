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
    home.mkdir(parents=True, exist_ok=True)
    return home.resolve()


def safe_child(root: Path, *parts: str) -> Path:
    """Join user-supplied parts under root, refusing anything that escapes it."""
    from .errors import UsageError

    candidate = root.joinpath(*parts).resolve()
    root_resolved = root.resolve()
    if candidate != root_resolved and root_resolved not in candidate.parents:
        raise UsageError(f"path {'/'.join(parts)!r} escapes {root}", "use a plain name")
    return candidate


def private_dir(path: Path) -> Path:
    """`mkdir -p path` where every directory it creates is 0700 whatever the umask
    (`Path.mkdir(parents=True, mode=...)` gives the mode to the last one only)."""
    missing: list[Path] = []
    p = path
    while not os.path.lexists(p) and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue  # made meanwhile by another process: its maker chose the mode
        os.chmod(d, 0o700)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a directory")
    return path
