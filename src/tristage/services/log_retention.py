"""Log retention by age: build and runtime logs (and their rotated parts) older than
`TRISTAGE_LOG_MAX_AGE_DAYS` (default 30) are deleted, except those of deployments that
still run. Sizes are bounded where logs are written (rotation in the log pump,
`TRISTAGE_LOG_MAX_BYTES`)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def max_age() -> float:
    try:
        return float(os.environ.get("TRISTAGE_LOG_MAX_AGE_DAYS", "30")) * 86400
    except ValueError:
        return 30 * 86400


def sweep(logs: Path, running: set[str], now: float | None = None, age: float | None = None) -> int:
    """Delete the old logs under `logs` (PROJECT/ID.kind.log[.N]); how many."""
    now = time.time() if now is None else now
    cutoff = now - (max_age() if age is None else age)
    removed = 0
    if not logs.is_dir():
        return 0
    for project in logs.iterdir():
        if not project.is_dir() or project.is_symlink():
            continue
        for f in project.iterdir():
            dep = f.name.split(".", 1)[0]
            if dep in running or not f.is_file() or ".log" not in f.name:
                continue
            try:
                if f.stat().st_mtime < cutoff:
                    f.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
    return removed
