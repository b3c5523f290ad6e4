"""Release log lines (pure): which process wrote one, filters by process and time.

A release's log holds the lines of all its processes, each `STAMP TEXT` (local time,
`2026-01-01T03:00:00`); every process but `web.1` marks its lines (`STAMP [worker.1]
TEXT`)."""

from __future__ import annotations

import re

from ..errors import UsageError

_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d) (?:\[([a-z][a-z0-9_-]*\.\d+)\] )?")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> float:
    """`90s`, `10m`, `2h`, `1d` -> seconds; UsageError otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if m is None:
        raise UsageError(f"--since {text!r} is not a duration", "e.g. --since 10m (s, m, h, d)")
    return float(m[1]) * _UNITS[m[2]]


def process_of(line: str) -> str | None:
    """The process that wrote `line` (`web.1` for unmarked lines); None: not a log line."""
    m = _LINE.match(line)
    if m is None:
        return None
    return m[2] or "web.1"


def keep(line: str, process: str | None, since_stamp: str | None) -> bool:
    """Whether `line` passes `--process` and `--since` (a `STAMP` to compare with)."""
    m = _LINE.match(line)
    if m is None:  # a continuation the app printed without a stamp: keep it with the rest
        return process is None and since_stamp is None
    if since_stamp is not None and m[1] < since_stamp:
        return False
    return process is None or (m[2] or "web.1") == process
