"""Which backups to keep under daily/weekly/monthly counts, and why. Pure.

For each period kind, walk the backups newest first and keep the newest backup of
each distinct period (UTC day, ISO week, month) until the count for that kind is
reached. A backup may be kept for several reasons. The newest backup is always kept.
Selecting again over the kept backups keeps them all (the selection is stable).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    daily: int = 7
    weekly: int = 4
    monthly: int = 12


@dataclass(frozen=True)
class Backup:
    id: str
    at: dt.datetime  # timezone-aware


@dataclass(frozen=True)
class Selection:
    keep: dict[str, tuple[str, ...]]  # id -> reasons, e.g. ("daily 2024-05-03", "latest")
    prune: tuple[str, ...]  # ids, newest first


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def _day(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d")


def _week(t: dt.datetime) -> str:
    y, w, _ = t.isocalendar()
    return f"{y}-W{w:02d}"


def _month(t: dt.datetime) -> str:
    return t.strftime("%Y-%m")


PERIODS: tuple[tuple[str, Callable[[dt.datetime], str]], ...] = (
    ("daily", _day),
    ("weekly", _week),
    ("monthly", _month),
)


def select(backups: Sequence[Backup], policy: Policy) -> Selection:
    ordered = sorted(backups, key=lambda b: (_utc(b.at), b.id), reverse=True)
    reasons: dict[str, list[str]] = {}
    for kind, period in PERIODS:
        count = getattr(policy, kind)
        seen: set[str] = set()
        for b in ordered:
            if len(seen) >= count:
                break
            key = period(_utc(b.at))
            if key in seen:
                continue
            seen.add(key)
            reasons.setdefault(b.id, []).append(f"{kind} {key}")
    if ordered:
        reasons.setdefault(ordered[0].id, []).append("latest")
    keep = {b.id: tuple(reasons[b.id]) for b in ordered if b.id in reasons}
    prune = tuple(b.id for b in ordered if b.id not in reasons)
    return Selection(keep=keep, prune=prune)
