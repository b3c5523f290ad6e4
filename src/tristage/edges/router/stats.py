"""Per-deployment request metrics, cheap to record on the hot path.

Recording is a few integer increments and one append to a bounded deque;
percentiles are computed only when `snapshot()` is called.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

WINDOW = 1024  # recent latencies kept per deployment


@dataclass(frozen=True)
class DeploymentStats:
    """A snapshot of one deployment's traffic since the router started.

    Latency is measured from the request's arrival to the upstream's response
    headers (time to first byte), over the last `WINDOW` proxied requests.
    """

    deployment: str
    requests: int
    status_2xx: int
    status_3xx: int
    status_4xx: int
    status_5xx: int
    upstream_errors: int
    p50_ms: float | None
    p99_ms: float | None
    last_request_at: float | None  # unix time


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty list (q in 0..100)."""
    n = len(sorted_values)
    rank = max(1, min(n, math.ceil(q / 100.0 * n)))
    return sorted_values[rank - 1]


class Counter:
    __slots__ = ("classes", "errors", "last", "latencies", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.classes = [0, 0, 0, 0, 0, 0]  # index = status // 100
        self.errors = 0
        self.latencies: deque[float] = deque(maxlen=WINDOW)
        self.last = 0.0


class StatsRecorder:
    def __init__(self) -> None:
        self._by_deployment: dict[str, Counter] = {}

    def _counter(self, deployment: str) -> Counter:
        c = self._by_deployment.get(deployment)
        if c is None:
            c = self._by_deployment[deployment] = Counter()
        return c

    def record(self, deployment: str, status: int, latency_s: float | None) -> None:
        c = self._by_deployment.get(deployment)
        if c is None:
            c = self._counter(deployment)
        c.requests += 1
        cls = status // 100
        if 0 <= cls < 6:
            c.classes[cls] += 1
        if latency_s is not None:
            c.latencies.append(latency_s * 1000.0)
        c.last = time.time()

    def record_error(self, deployment: str, status: int) -> None:
        """An upstream failure (refused, reset, timed out) answered with `status`."""
        self._counter(deployment).errors += 1
        self.record(deployment, status, None)

    def count_error(self, deployment: str) -> None:
        """An upstream failure after the response started (the client sees a cut-off body)."""
        self._counter(deployment).errors += 1

    def snapshot(self) -> dict[str, DeploymentStats]:
        out: dict[str, DeploymentStats] = {}
        for dep, c in list(self._by_deployment.items()):
            lat = sorted(c.latencies)
            out[dep] = DeploymentStats(
                deployment=dep,
                requests=c.requests,
                status_2xx=c.classes[2],
                status_3xx=c.classes[3],
                status_4xx=c.classes[4],
                status_5xx=c.classes[5],
                upstream_errors=c.errors,
                p50_ms=percentile(lat, 50) if lat else None,
                p99_ms=percentile(lat, 99) if lat else None,
                last_request_at=c.last or None,
            )
        return out


def merged(*sources: dict[str, DeploymentStats]) -> dict[str, DeploymentStats]:
    """Counters of the same deployments from several edges (the router and HAProxy):
    counts added, the worse latency and the latest request kept."""
    out: dict[str, DeploymentStats] = {}
    for source in sources:
        for dep, s in source.items():
            o = out.get(dep)
            if o is None:
                out[dep] = s
                continue

            def worst(a: float | None, b: float | None) -> float | None:
                return b if a is None else a if b is None else max(a, b)

            out[dep] = DeploymentStats(
                dep, o.requests + s.requests, o.status_2xx + s.status_2xx,
                o.status_3xx + s.status_3xx, o.status_4xx + s.status_4xx,
                o.status_5xx + s.status_5xx, o.upstream_errors + s.upstream_errors,
                worst(o.p50_ms, s.p50_ms), worst(o.p99_ms, s.p99_ms),
                worst(o.last_request_at, s.last_request_at),
            )  # fmt: skip
    return out
