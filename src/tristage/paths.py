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
