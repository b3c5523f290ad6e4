"""A fake `Edge` for tests: a dict route table, counters, and a forwarder over httpx.

It keeps the contract of the embedded router where a test needs an edge without a
listening socket: the table is replaced whole (built first, then one assignment), an
unknown host gets a 404 page naming it, a route without an upstream a 503, a dead
upstream a 502; requests in flight are counted per upstream and answers per deployment.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from html import escape

import httpx

from tristage.edges.router import DeploymentStats, Route, normalize_host


class FakeEdge:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.counts: dict[tuple[str, int], int] = {}
        self.answers: dict[str, list[tuple[int, float | None, float]]] = {}
        self.errors: dict[str, int] = {}
        self.client = httpx.AsyncClient(timeout=10)

    async def close(self) -> None:
        await self.client.aclose()

    def replace(self, routes: Mapping[str, Route]) -> None:
        table = {normalize_host(host): route for host, route in routes.items()}
        self.routes = table

    def snapshot(self) -> Mapping[str, Route]:
        return self.routes

    def inflight(self, upstream: tuple[str, int]) -> int:
        return self.counts.get(upstream, 0)

    def stats(self) -> dict[str, DeploymentStats]:
        out = {}
        for dep, answers in self.answers.items():
            by_class = [sum(1 for s, _, _ in answers if s // 100 == c) for c in range(6)]
            lat = sorted(ms for _, ms, _ in answers if ms is not None)
            out[dep] = DeploymentStats(
                deployment=dep,
                requests=len(answers),
                status_2xx=by_class[2],
                status_3xx=by_class[3],
                status_4xx=by_class[4],
                status_5xx=by_class[5],
                upstream_errors=self.errors.get(dep, 0),
                p50_ms=lat[(len(lat) - 1) // 2] if lat else None,
                p99_ms=lat[-1] if lat else None,
                last_request_at=max(at for _, _, at in answers),
            )
        return out

    def _answer(self, dep: str | None, status: int, ms: float | None) -> None:
        if dep is not None:
            self.answers.setdefault(dep, []).append((status, ms, time.time()))

    async def handle(self, host: str, path: str) -> tuple[int, bytes]:
        route = self.routes.get(normalize_host(host))
        if route is None:
            return 404, f"No deployment is served at <code>{escape(host)}</code>.".encode()
        if route.upstream is None:
            self._answer(route.deployment, 503, None)
            return 503, f"<code>{escape(host)}</code> has no running deployment.".encode()
        upstream = route.upstream
        self.counts[upstream] = self.counts.get(upstream, 0) + 1
        started = time.perf_counter()
        try:
            r = await self.client.get(f"http://{upstream[0]}:{upstream[1]}{path}")
        except httpx.TransportError:
            if route.deployment is not None:
                self.errors[route.deployment] = self.errors.get(route.deployment, 0) + 1
            self._answer(route.deployment, 502, None)
            return 502, f"The deployment behind <code>{escape(host)}</code> failed.".encode()
        finally:
            self.counts[upstream] -= 1
            if not self.counts[upstream]:
                del self.counts[upstream]
        self._answer(route.deployment, r.status_code, (time.perf_counter() - started) * 1000)
        return r.status_code, r.content
