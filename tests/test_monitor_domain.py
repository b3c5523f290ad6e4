"""The monitor's pure rules: windows over cumulative samples, rollback, alert hysteresis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tristage.domain.monitor import (
    HealthState,
    Live,
    Sample,
    Thresholds,
    Window,
    first_time_live,
    judge_health,
    judge_traffic,
    prune,
    window,
)

T = Thresholds(error_rate=0.2, min_requests=10, window_seconds=60, watch_seconds=600)


def s(at: float, requests: int, s5: int = 0, up: int = 0, boot: float = 0.0) -> Sample:
    return Sample(at=at, requests=requests, status_5xx=s5, upstream_errors=up, boot=boot)


# -- windows ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("samples", "now", "seconds", "since", "requests", "failures"),
    [
        ([], 100, 60, None, 0, 0),
        # baseline is the last sample at or before the start
        ([s(10, 50, 5), s(50, 80, 5), s(90, 100, 15)], 100, 60, None, 50, 10),
        # no baseline: counting from zero
        ([s(50, 30, 3), s(90, 40, 4)], 100, 60, None, 40, 4),
        # `since` narrows the window (went live at 60)
        ([s(10, 50), s(55, 60, 0), s(70, 90, 30)], 100, 60, 60, 30, 30),
        # samples after `now` are ignored
        ([s(10, 0), s(90, 10, 1), s(120, 1000, 1000)], 100, 60, None, 10, 1),
        # a restart (new boot) counts from zero
        ([s(10, 500, 10, boot=1), s(50, 20, 2, boot=2)], 100, 60, None, 20, 2),
        # counters that drop are a restart too
        ([s(10, 500, 10), s(50, 20, 2)], 100, 60, None, 20, 2),
        # a 502 is both a 5xx and an upstream error: failures never exceed requests
        ([s(10, 0), s(50, 10, 10, 10)], 100, 60, None, 10, 10),
        # upstream errors after the response started have no status
        ([s(10, 0), s(50, 10, 2, 3)], 100, 60, None, 10, 5),
    ],
)
def test_window(
    samples: list[Sample],
    now: float,
    seconds: float,
    since: float | None,
    requests: int,
    failures: int,
) -> None:
    w = window(samples, now, seconds, since)
    assert (w.requests, w.failures) == (requests, failures)


def test_window_rates() -> None:
    w = Window(start=40, end=100, requests=120, failures=30)
    assert w.seconds == 60 and w.per_second == 2.0 and w.error_rate == 0.25
    assert Window(0, 0, 0, 0).error_rate is None and Window(0, 0, 0, 0).per_second == 0.0


def test_prune_keeps_one_baseline() -> None:
    samples = [s(1, 1), s(2, 2), s(3, 3), s(10, 4)]
    assert prune(samples, 5) == [s(3, 3), s(10, 4)]
    assert prune(samples, 0) == samples
    assert prune([], 5) == []


counters = st.lists(
    st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(0, 5)), max_size=30
)


@settings(max_examples=100, deadline=None)
@given(steps=counters, seconds=st.floats(1, 40), now=st.floats(0, 40))
def test_window_matches_the_traffic_it_covers(
    steps: list[tuple[int, int, int]], seconds: float, now: float
) -> None:
    """Per-second traffic, sampled cumulatively: the window sums exactly its seconds."""
    samples, total_r, total_f = [], 0, 0
    for i, (r, f5, fu) in enumerate(steps):
        total_r += r
        total_f += min(f5 + fu, r)
        samples.append(Sample(at=float(i), requests=total_r, status_5xx=total_f, upstream_errors=0))
    w = window(samples, now, seconds)
    start = now - seconds
    inside = [(r, min(f5 + fu, r)) for i, (r, f5, fu) in enumerate(steps) if start < i <= now]
    assert w.requests == sum(r for r, _ in inside)
    assert w.failures == sum(f for _, f in inside)
    assert 0 <= w.failures <= w.requests


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 3)), max_size=20
    ),
    seconds=st.floats(0.1, 100),
)
def test_window_is_never_negative(values: list[tuple[int, int, int]], seconds: float) -> None:
    """Any sequence of counters (restarts included) gives a sane window."""
    samples = [Sample(float(i), r, f, 0, float(b)) for i, (r, f, b) in enumerate(values)]
    w = window(samples, float(len(values)), seconds)
    assert w.requests >= 0 and 0 <= w.failures <= w.requests
    assert w.error_rate is None or 0.0 <= w.error_rate <= 1.0


# -- automatic rollback and error-rate alerts -----------------------------------

LIVE = Live("2new0000", went_live_at=1000, first_time_live=True, previous="1old0000",
            production=True)  # fmt: skip
BAD = Window(940, 1100, requests=40, failures=20)  # 50 %
GOOD = Window(940, 1100, requests=40, failures=0)
FEW = Window(940, 1100, requests=5, failures=5)
EDGE = Window(940, 1100, requests=50, failures=10)  # exactly 20 %
MILD = Window(940, 1100, requests=100, failures=15)  # between half and the threshold


@pytest.mark.parametrize(
    ("live", "win", "now", "open_", "rolled", "expect"),
    [
        (LIVE, BAD, 1100, False, frozenset(), "rollback"),
        (LIVE, EDGE, 1100, False, frozenset(), "rollback"),  # the threshold counts
        (LIVE, GOOD, 1100, False, frozenset(), "nothing"),
        (LIVE, FEW, 1100, False, frozenset(), "nothing"),  # too few requests to judge
        (LIVE, BAD, 1601, False, frozenset(), "alert"),  # watch period over
        (LIVE, BAD, 1600, False, frozenset(), "rollback"),  # last second of it
        (LIVE, BAD, 1601, True, frozenset(), "nothing"),  # alert already open
        (Live("2new0000", 1000, False, "1old0000", True), BAD, 1100, False, frozenset(), "alert"),
        (Live("2new0000", 1000, True, None, True), BAD, 1100, False, frozenset(), "alert"),
        (Live("2new0000", 1000, True, "1old0000", False), BAD, 1100, False, frozenset(), "alert"),
        (LIVE, BAD, 1100, False, frozenset({"2new0000"}), "alert"),  # once only
        (LIVE, BAD, 1100, False, frozenset({"1old0000"}), "alert"),  # never back to a bad one
        (LIVE, GOOD, 1100, True, frozenset(), "close"),
        (LIVE, MILD, 1100, True, frozenset(), "nothing"),  # hysteresis: stays open
        (LIVE, FEW, 1100, True, frozenset(), "alert-stays"),
    ],
)
def test_judge_traffic(
    live: Live, win: Window, now: float, open_: bool, rolled: frozenset[str], expect: str
) -> None:
    d = judge_traffic(live, win, T, now, open_, rolled)
    got = (
        "rollback"
        if d.rollback_to
        else "alert"
        if d.open_alert
        else "close"
        if d.close_alert
        else "nothing"
    )
    if expect == "alert-stays":
        assert got == "nothing"
        return
    assert got == expect
    if d.rollback_to:
        assert d.rollback_to == live.previous
        assert "error rate" in d.reason and "threshold 20%" in d.reason


def test_auto_rollback_off_only_alerts() -> None:
    off = Thresholds(auto_rollback=False, error_rate=0.2, min_requests=10)
    d = judge_traffic(LIVE, BAD, off, 1100, False)
    assert d.open_alert and d.rollback_to is None and "20 of 40" in d.reason


@settings(max_examples=150, deadline=None)
@given(
    rates=st.lists(st.floats(0, 1), min_size=1, max_size=40),
    threshold=st.floats(0.05, 1),
)
def test_alert_never_flaps_between_thresholds(rates: list[float], threshold: float) -> None:
    """Between half the threshold and the threshold the alert state never changes."""
    t = Thresholds(error_rate=threshold, min_requests=10)
    live = Live("2x", 0, False, None, True)
    is_open = False
    for rate in rates:
        failures = round(rate * 100)
        win = Window(0, 60, 100, failures)
        d = judge_traffic(live, win, t, 10, is_open)
        r = failures / 100
        if t.error_rate * 0.5 < r < t.error_rate:
            assert not d.open_alert and not d.close_alert
        assert not (d.open_alert and d.close_alert)
        assert not (d.open_alert and is_open) and not (d.close_alert and not is_open)
        is_open = (is_open or d.open_alert) and not d.close_alert


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=12))
def test_two_bad_deployments_never_toggle(seq: list[str]) -> None:
    """Replaying rollbacks: each deployment is rolled back automatically at most once,
    and never to one that was."""
    rolled: set[str] = set()
    history: list[str] = ["0good"]
    for dep in seq:
        history.append(dep)
        while True:
            current = history[-1]
            prev = next((d for d in reversed(history) if d != current), None)
            live = Live(current, 0, first_time_live(history), prev, True)
            d = judge_traffic(live, BAD, T, 10, False, frozenset(rolled))
            if d.rollback_to is None:
                break
            assert current not in rolled and d.rollback_to not in rolled
            rolled.add(current)
            history.append(d.rollback_to)
    assert len(rolled) <= len(set(seq))


# -- health ---------------------------------------------------------------------


def test_judge_health_sequence() -> None:
    t = Thresholds(health_failures=3)
    state = HealthState()
    events = []
    for ok in [False, False, True, False, False, False, False, True, True]:
        d = judge_health(state, ok, t)
        state = d.state
        events.append("open" if d.open_alert else "close" if d.close_alert else "-")
    assert events == ["-", "-", "-", "-", "-", "open", "-", "close", "-"]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.booleans(), max_size=50), st.integers(1, 5))
def test_health_alert_opens_only_after_n_in_a_row(probes: list[bool], n: int) -> None:
    t = Thresholds(health_failures=n)
    state, streak = HealthState(), 0
    for ok in probes:
        d = judge_health(state, ok, t)
        streak = 0 if ok else streak + 1
        assert d.open_alert == (streak == n)
        assert d.state.streak == streak
        state = d.state


def test_first_time_live() -> None:
    assert first_time_live(["a", "b"]) and not first_time_live(["a", "b", "a"])
    assert not first_time_live([])
