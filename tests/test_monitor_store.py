"""The monitor's records over a real state store, in process (no control plane)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tristage.api import Tristage
from tristage.domain import monitor as rules
from tristage.edges.router.stats import DeploymentStats
from tristage.services.monitor import Monitor


@pytest.fixture
def project(api: Tristage, repo: Path) -> str:
    api.init_project(repo, "professional")
    return api.open_project(repo).name


def _deployment(api: Tristage, project: str, env: str, dep: str, seq: int) -> None:
    now = time.time()
    api.store.execute(
        "INSERT INTO deployments (id, seq, project, environment, branch, commit_sha, trigger,"
        " status, created_at, updated_at) VALUES (?, ?, ?, ?, 'main', 'abc', 'push', 'ready',"
        " ?, ?)",
        (dep, seq, project, env, now, now),
    )


def _route(api: Tristage, project: str, env: str, dep: str | None) -> None:
    api.store.execute(
        "INSERT INTO aliases (project, environment, desired, routed, routed_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (project, environment) DO UPDATE SET"
        " desired=excluded.desired, routed=excluded.routed, routed_at=excluded.routed_at",
        (project, env, dep, dep, time.time()),
    )


def _stats(dep: str, requests: int) -> DeploymentStats:
    return DeploymentStats(dep, requests, requests, 0, 0, 0, 0, 1.0, 2.0, time.time())


def test_alerts_of_a_deployment_no_longer_live_close(api: Tristage, project: str) -> None:
    monitor = Monitor(api, dict, log=lambda line: None)
    cfg = api.config_for(project)
    for dep in ("1old", "2new"):
        _deployment(api, project, "production", dep, int(dep[0]))
        monitor.raise_alert(
            cfg, project, "production", dep, rules.Kind.health, "critical", f"{dep} sick", {}
        )
    _route(api, project, "production", "2new")
    monitor.evaluate(time.time())
    still_open = {a.deployment for a in api.monitor.alerts(project, open_only=True)}
    assert still_open == {"2new"}
    closed = [a for a in api.monitor.alerts(project) if a.deployment == "1old"]
    assert closed[0].resolution == "no longer live"
    _route(api, project, "production", None)  # nothing live: every alert closes
    monitor.evaluate(time.time())
    assert api.monitor.alerts(project, open_only=True) == []


def test_samples_of_known_deployments_are_stored_and_listed(api: Tristage, project: str) -> None:
    monitor = Monitor(api, dict, log=lambda line: None)
    _deployment(api, project, "production", "1live", 1)
    _deployment(api, project, "preview", "2prev", 2)
    _route(api, project, "production", "1live")
    now = time.time()
    monitor.sample(now, {d: _stats(d, 5) for d in ("1live", "2prev", "9unknown")})
    monitor.sample(now + 1, {d: _stats(d, 5) for d in ("1live", "2prev")})  # unchanged
    monitor.sample(now + 2, {"1live": _stats("1live", 8)})
    rows = api.store.query("SELECT deployment, requests FROM metric_samples ORDER BY id")
    assert [(r["deployment"], r["requests"]) for r in rows] == [
        ("1live", 5), ("2prev", 5), ("1live", 8),
    ]  # fmt: skip
    metrics = {m.deployment: m for m in api.monitor.metrics(project, now=now + 3)}
    assert set(metrics) == {"1live", "2prev"}
    assert metrics["1live"].live and metrics["1live"].requests == 8
    assert metrics["2prev"].environment == "preview" and not metrics["2prev"].live
    assert [m.deployment for m in api.monitor.metrics(project, "preview", now=now + 3)] == ["2prev"]


def test_health_probes_send_the_environments_host(api: Tristage, project: str) -> None:
    """A framework that checks the Host header (Django's ALLOWED_HOSTS) answers the probe."""
    import asyncio
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import httpx

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            host = self.headers.get("Host", "")
            seen.append(host)
            self.send_response(200 if host == f"{project}.localhost" else 400)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _deployment(api, project, "production", "1aaaaaaa", 1)
    _route(api, project, "production", "1aaaaaaa")
    monitor = Monitor(api, dict, log=lambda line: None)
    cfg = api.config_for(project)

    async def probe() -> None:
        monitor._client = httpx.AsyncClient(timeout=5.0, trust_env=False)
        try:
            monitor.probing.add("1aaaaaaa")
            await monitor._probe(cfg, project, "production", "1aaaaaaa", server.server_port)
        finally:
            await monitor._client.aclose()

    try:
        asyncio.run(probe())
    finally:
        server.shutdown()
    assert seen == [f"{project}.localhost"]
    assert monitor.health["1aaaaaaa"].streak == 0  # the probe passed
