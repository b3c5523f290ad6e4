"""Monitoring decisions: error rates over metric windows, alerts, automatic rollback.

Pure: everything a decision needs is passed in (samples, thresholds, what is live,
what was already rolled back), and the answer is data. The monitor service
samples the router, probes health and carries the answers out.

- A **sample** is a snapshot of a deployment's cumulative router counters at a time.
  Counters restart from zero when the control plane restarts; `boot` tells the runs
  apart, so a drop is read as a restart, never as negative traffic.
- A **window** is the traffic between the last sample at or before its start and the
  newest sample: requests, failures ((5xx + upstream errors), capped at requests)
  and the error rate.
- **Auto-rollback**: a production deployment that is live *for the first time* and
  fails (`min_requests` reached, error rate >= `error_rate`) within `watch_seconds`
  of going live is rolled back to the previous production deployment, once.
  A deployment that was rolled back automatically is never rolled back to and never
  rolled back again, and a deployment live again after a rollback is not judged for
  rollback, so two bad deployments cannot toggle production back and forth.
- **Alerts** have hysteresis: an error-rate alert opens at the threshold and closes only
  when the rate falls to half of it (or the deployment stops being live); a health alert
  opens after `health_failures` failed probes in a row and closes on the next success.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

RESOLVE_FRACTION = 0.5  # an error-rate alert closes at this fraction of the threshold

ACTOR = "tristage-monitor"


class Kind(StrEnum):
    error_rate = "error_rate"
    health = "health"
    auto_rollback = "auto_rollback"
    out_of_memory = "out_of_memory"
    crash_loop = "crash_loop"  # a process ended N times within the crash window
    cron_failed = "cron_failed"
    webhook_gone = "webhook_gone"  # a webhook destination answered 410 Gone
    webhook_paused = "webhook_paused"  # a webhook destination failed past `pause_after`


# Alerts about webhook destinations, not deployments: they stay open across deploys.
WEBHOOK_KINDS = (Kind.webhook_gone, Kind.webhook_paused)


@dataclass(frozen=True)
class Thresholds:
    auto_rollback: bool = True
    error_rate: float = 0.2
    min_requests: int = 20
    window_seconds: float = 60.0
    watch_seconds: float = 600.0
    health_failures: int = 3


@dataclass(frozen=True)
class Sample:
    """Cumulative counters of one deployment, as the router reported them at `at`."""

    at: float
    requests: int
    status_5xx: int
    upstream_errors: int
    boot: float = 0.0  # when the router that counted them started


@dataclass(frozen=True)
class Window:
    start: float
    end: float
    requests: int
    failures: int

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.requests if self.requests else None

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def _failures(s: Sample) -> int:
    return s.status_5xx + s.upstream_errors


def _delta(before: Sample | None, after: Sample) -> tuple[int, int]:
    """Requests and failures counted between two samples (a restart counts from zero)."""
    if (
        before is None
        or before.boot != after.boot
        or after.requests < before.requests
        or _failures(after) < _failures(before)
    ):
        return after.requests, _failures(after)
    return after.requests - before.requests, _failures(after) - _failures(before)


def window(
    samples: Sequence[Sample], now: float, seconds: float, since: float | None = None
) -> Window:
    """The traffic of the last `seconds` before `now` (and not before `since`).

    `samples` are one deployment's, oldest first. Without a sample at or before the
    window's start, counting starts from zero: the deployment had no traffic the router
    saw before its first sample.
    """
    start = now - seconds
    if since is not None:
        start = max(start, since)
    base: Sample | None = None
    requests = failures = 0
    for s in samples:
        if s.at > now:
            break
        if s.at <= start:
            base = s
            continue
        r, f = _delta(base, s)
        requests, failures = requests + r, failures + f
        base = s
    return Window(start=start, end=now, requests=requests, failures=min(failures, requests))


def prune(samples: Sequence[Sample], keep_from: float) -> list[Sample]:
    """Drop samples older than `keep_from`, keeping the last one before it (a baseline)."""
    older = [s for s in samples if s.at < keep_from]
    newer = [s for s in samples if s.at >= keep_from]
    return ([older[-1]] if older else []) + newer


def failing(win: Window, t: Thresholds) -> bool:
    rate = win.error_rate
    return win.requests >= t.min_requests and rate is not None and rate >= t.error_rate


def recovered(win: Window, t: Thresholds) -> bool:
    """Below half the threshold over enough requests: an open alert may close."""
    rate = win.error_rate
    return (
        win.requests >= t.min_requests
        and rate is not None
        and rate <= t.error_rate * RESOLVE_FRACTION
    )


@dataclass(frozen=True)
class Live:
    """What production (or any environment) serves, as the monitor needs it."""

    deployment: str
    went_live_at: float
    first_time_live: bool  # not live before: it came by deploy or promote, not rollback
    previous: str | None  # the deployment a rollback would return to
    production: bool


@dataclass(frozen=True)
class Decision:
    rollback_to: str | None = None
    open_alert: bool = False
    close_alert: bool = False
    reason: str = ""


def judge_traffic(
    live: Live,
    win: Window,
    t: Thresholds,
    now: float,
    alert_open: bool,
    rolled_back: frozenset[str] = frozenset(),
) -> Decision:
    """Roll back, open an error-rate alert, close it, or do nothing.

    `win` is the live deployment's traffic since it went live (at most one window);
    `rolled_back` holds the deployments already rolled back automatically.
    """
    rate = win.error_rate
    if failing(win, t):
        assert rate is not None
        why = (
            f"error rate {rate:.0%} ({win.failures} of {win.requests} requests failed in the "
            f"last {win.seconds:.0f}s; threshold {t.error_rate:.0%})"
        )
        if (
            live.production
            and t.auto_rollback
            and live.first_time_live
            and now - live.went_live_at <= t.watch_seconds
            and live.deployment not in rolled_back
            and live.previous is not None
            and live.previous not in rolled_back
            and live.previous != live.deployment
        ):
            return Decision(rollback_to=live.previous, reason=why)
        return Decision(open_alert=not alert_open, reason=why)
    if alert_open and recovered(win, t):
        return Decision(close_alert=True, reason=f"error rate back to {rate:.0%}")
    return Decision()


@dataclass(frozen=True)
class HealthState:
    streak: int = 0  # failed probes in a row
    alert_open: bool = False


@dataclass(frozen=True)
class HealthDecision:
    state: HealthState
    open_alert: bool = False
    close_alert: bool = False


def judge_health(state: HealthState, ok: bool, t: Thresholds) -> HealthDecision:
    """One probe result: count failures in a row, open at the limit, close on success."""
    if ok:
        return HealthDecision(HealthState(0, False), close_alert=state.alert_open)
    streak = state.streak + 1
    if streak >= t.health_failures and not state.alert_open:
        return HealthDecision(HealthState(streak, True), open_alert=True)
    return HealthDecision(HealthState(streak, state.alert_open))


def first_time_live(history: Sequence[str]) -> bool:
    """Whether the latest entry of an alias history (oldest first) is its first appearance."""
    return bool(history) and history[-1] not in history[:-1]
