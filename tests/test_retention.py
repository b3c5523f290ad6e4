"""Retention selection: properties over arbitrary backup histories."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from tristage.domain.retention import Backup, Policy, select

BASE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

times = st.lists(st.integers(min_value=0, max_value=800 * 24 * 3600), max_size=60, unique=True)
policies = st.builds(
    Policy,
    daily=st.integers(0, 10),
    weekly=st.integers(0, 6),
    monthly=st.integers(0, 14),
)


def backups(offsets: list[int]) -> list[Backup]:
    return [Backup(f"b{o:012d}", BASE + dt.timedelta(seconds=o)) for o in offsets]


@settings(max_examples=300, deadline=None)
@given(times, policies)
def test_partition_latest_and_bound(offsets: list[int], policy: Policy) -> None:
    items = backups(offsets)
    sel = select(items, policy)
    ids = {b.id for b in items}
    assert set(sel.keep) | set(sel.prune) == ids
    assert not set(sel.keep) & set(sel.prune)
    if items:
        newest = max(items, key=lambda b: b.at)
        assert "latest" in sel.keep[newest.id]
    assert len(sel.keep) <= policy.daily + policy.weekly + policy.monthly + 1
    assert all(reasons for reasons in sel.keep.values())


@settings(max_examples=300, deadline=None)
@given(times, policies)
def test_selection_is_stable(offsets: list[int], policy: Policy) -> None:
    items = backups(offsets)
    sel = select(items, policy)
    kept = [b for b in items if b.id in sel.keep]
    again = select(kept, policy)
    assert again.prune == ()
    assert set(again.keep) == set(sel.keep)


@settings(max_examples=300, deadline=None)
@given(times, policies)
def test_daily_keeps_newest_of_each_recent_day(offsets: list[int], policy: Policy) -> None:
    items = backups(offsets)
    sel = select(items, policy)
    days: dict[dt.date, Backup] = {}
    for b in sorted(items, key=lambda b: b.at):
        days[b.at.date()] = b  # the newest of each day wins
    recent = sorted(days, reverse=True)[: policy.daily]
    for d in recent:
        assert f"daily {d.isoformat()}" in sel.keep[days[d].id]


def test_example_seven_four_twelve() -> None:
    # one backup a day for a year
    items = [Backup(f"d{i:03d}", BASE + dt.timedelta(days=i, hours=2)) for i in range(366)]
    sel = select(items, Policy(7, 4, 12))
    reasons = [r for rs in sel.keep.values() for r in rs]
    assert sum(r.startswith("daily") for r in reasons) == 7
    assert sum(r.startswith("weekly") for r in reasons) == 4
    assert sum(r.startswith("monthly") for r in reasons) == 12
    assert len(sel.keep) < 7 + 4 + 12  # periods overlap on the newest backups
    assert sel.keep["d365"] == ("daily 2024-12-31", "weekly 2025-W01", "monthly 2024-12", "latest")


def test_empty_and_zero_policy() -> None:
    assert select([], Policy()).keep == {}
    one = backups([5, 10])
    sel = select(one, Policy(0, 0, 0))
    assert list(sel.keep) == ["b000000000010"] and sel.prune == ("b000000000005",)
