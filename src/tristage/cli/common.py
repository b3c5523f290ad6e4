"""Shared CLI plumbing: the API handle, JSON output, time formatting."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from ..api import ProjectRef, Tristage

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


@dataclass
class State:
    debug: bool = False
    home: Path | None = None
    api: Tristage | None = None
    project: str | None = None  # -p/--project (or TRISTAGE_PROJECT)


state = State()


def get_api() -> Tristage:
    if state.api is None:
        state.api = Tristage(state.home)
    return state.api


def current_project(project_dir: Path | None = None) -> ProjectRef:
    """The project a command acts on, one mechanism for every command: the one named by
    `-p/--project NAME` (or `TRISTAGE_PROJECT`), else the project of the working copy
    at `TRISTAGE_PROJECT_DIR` or the current directory (the nearest `tristage.toml`)."""
    if project_dir is None and state.project:
        return get_api().open_named_project(state.project)
    start = project_dir or Path(os.environ.get("TRISTAGE_PROJECT_DIR") or Path.cwd())
    return get_api().open_project(start)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def age(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def when(ts: float | None) -> str:
    """A unix time as local `YYYY-MM-DD HH:MM:SS` ("" for None)."""
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
