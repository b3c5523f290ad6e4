"""Monitoring: request metrics, health probes, alerts and automatic rollback.

`MonitorService` (any process) reads what the monitor recorded: per-deployment
metrics and alerts. `Monitor` runs inside the control plane (`tristage up`):

- every tick (1 s) it samples `router.stats()`; samples stay in memory for the
  decisions and are written to `metric_samples` when they change (kept 24 h);
- every `health_interval` it probes the health path of each environment's live
  release; `health_failures` failures in a row raise an alert, a success resolves it;
- it judges each live deployment's error rate since it went live
  (`domain.monitor.judge_traffic`): an alert, or, for a production deployment in its
  watch period, an automatic rollback through the deploy service's rollback (actor
  `tristage-monitor`, audited like any rollback).

An alert is stored, audited, printed in the control plane log and, when
`[monitor] alert_url` is set, POSTed there as JSON (the outcome is stored with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import httpx

from ..domain import aliases
from ..domain import monitor as rules
from ..domain.config import MonitorConfig, PipelineConfig
from ..domain.deployments import rollback_target
from ..edges.router.stats import DeploymentStats
from ..edges.runtime.base import probe_path
from ..errors import TristageError
from .deploy_records import deployment_owner, routed_releases
from .project_records import project_names

if TYPE_CHECKING:
    from ..api import Tristage

RETENTION_SECONDS = 24 * 3600.0
PRUNE_EVERY = 60.0
LOOPBACK = "127.0.0.1"


def thresholds(cfg: MonitorConfig) -> rules.Thresholds:
    return rules.Thresholds(
        auto_rollback=cfg.auto_rollback,
        error_rate=cfg.error_rate,
        min_requests=cfg.min_requests,
        window_seconds=cfg.window_seconds,
        watch_seconds=cfg.watch_seconds,
        health_failures=cfg.health_failures,
    )


@dataclass(frozen=True)
class Alert:
    id: int
    at: float
    project: str
    environment: str
    deployment: str
    kind: str
    severity: str
    message: str
    details: dict[str, Any]
    resolved_at: float | None
    resolution: str | None
    delivery: str | None

    @property
    def open(self) -> bool:
        return self.resolved_at is None

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "open": self.open}

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> Alert:
        return cls(
            id=r["id"], at=r["at"], project=r["project"], environment=r["environment"],
            deployment=r["deployment"], kind=r["kind"], severity=r["severity"],
            message=r["message"], details=json.loads(r["details"]),
            resolved_at=r["resolved_at"], resolution=r["resolution"], delivery=r["delivery"],
        )  # fmt: skip


@dataclass(frozen=True)
class DeploymentMetrics:
    project: str
    environment: str
    deployment: str
    live: bool
    requests: int  # since the control plane started counting (`since`)
    status_2xx: int
    status_3xx: int
    status_4xx: int
    status_5xx: int
    upstream_errors: int
    p50_ms: float | None
    p99_ms: float | None
    since: float | None
    sampled_at: float | None
    window_seconds: float
    window_requests: int
    window_failures: int
    requests_per_second: float
    error_rate: float | None  # over the window; None without requests
    health: str  # healthy | failing | unknown
    health_detail: str | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class MonitorService:
    def __init__(self, api: Tristage) -> None:
        self.api = api

    # -- reading ---------------------------------------------------------------
    def alerts(
        self,
        project: str,
        environment: str | None = None,
        open_only: bool = False,
        limit: int = 50,
    ) -> list[Alert]:
        cfg = self.api.config_for(project)
        sql = "SELECT * FROM alerts WHERE project=?"
        params: list[Any] = [project]
        if environment is not None:
            cfg.env(environment)
            sql += " AND environment=?"
            params.append(environment)
        if open_only:
            sql += " AND resolved_at IS NULL"
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [Alert.from_row(r) for r in self.api.store.query(sql, params)]

    def metrics(
        self, project: str, environment: str | None = None, now: float | None = None
    ) -> list[DeploymentMetrics]:
        """Per deployment with recorded traffic (and each live one): counts, rates, health."""
        cfg = self.api.config_for(project)
        if environment is not None:
            cfg.env(environment)
        now = time.time() if now is None else now
        store = self.api.store
        routed = {
            env: r["routed"] for env, r in self.api.deploys.aliases(project).items() if r["routed"]
        }
        seen: dict[str, str] = {}
        for r in store.query(
            "SELECT deployment, environment, MAX(at) AS last FROM metric_samples WHERE project=?"
            " GROUP BY deployment, environment ORDER BY last DESC",
            (project,),
        ):
            seen[r["deployment"]] = r["environment"]
        for env, dep in routed.items():
            seen.setdefault(dep, env)
        order = {name: i for i, name in enumerate(cfg.environments)}
        t = cfg.monitor
        out: list[DeploymentMetrics] = []
        for dep, env in seen.items():
            if environment is not None and env != environment:
                continue
            out.append(self._one(project, env, dep, routed.get(env) == dep, t, now))
        out.sort(key=lambda m: (order.get(m.environment, 99), not m.live, -(m.sampled_at or 0)))
        return out

    def _one(
        self, project: str, env: str, dep: str, live: bool, t: MonitorConfig, now: float
    ) -> DeploymentMetrics:
        store = self.api.store
        start = now - t.window_seconds
        base = store.query(
            "SELECT * FROM metric_samples WHERE deployment=? AND at<=? ORDER BY at DESC, id DESC"
            " LIMIT 1",
            (dep, start),
        )
        rows = base + store.query(
            "SELECT * FROM metric_samples WHERE deployment=? AND at>? ORDER BY at, id", (dep, start)
        )
        samples = [
            rules.Sample(r["at"], r["requests"], r["status_5xx"], r["upstream_errors"], r["boot"])
            for r in rows
        ]
        win = rules.window(samples, now, t.window_seconds)
        last = rows[-1] if rows else None
        probe = store.query_one("SELECT * FROM health_probes WHERE deployment=?", (dep,))
        health = "unknown" if probe is None else ("healthy" if probe["ok"] else "failing")
        detail = None
        if probe is not None:
            detail = probe["detail"] if probe["ok"] else (
                f"{probe['detail']} ({probe['streak']} failed in a row)"
            )  # fmt: skip

        def count(key: str) -> int:
            return int(last[key]) if last else 0

        return DeploymentMetrics(
            project=project, environment=env, deployment=dep, live=live,
            requests=count("requests"), status_2xx=count("status_2xx"),
            status_3xx=count("status_3xx"), status_4xx=count("status_4xx"),
            status_5xx=count("status_5xx"), upstream_errors=count("upstream_errors"),
            p50_ms=last["p50_ms"] if last else None, p99_ms=last["p99_ms"] if last else None,
            since=last["boot"] if last else None, sampled_at=last["at"] if last else None,
            window_seconds=t.window_seconds, window_requests=win.requests,
            window_failures=win.failures, requests_per_second=round(win.per_second, 3),
            error_rate=None if win.error_rate is None else round(win.error_rate, 4),
            health=health, health_detail=detail,
        )  # fmt: skip

    # -- running -------------------------------------------------------------------
    def monitor(
        self,
        stats: Callable[[], dict[str, DeploymentStats]],
        log: Callable[[str], None] | None = None,
    ) -> Monitor:
        return Monitor(self.api, stats, log)


class Monitor:
    """The control plane's monitoring loop (one per control plane)."""

    def __init__(
        self,
        api: Tristage,
        stats: Callable[[], dict[str, DeploymentStats]],
        log: Callable[[str], None] | None = None,
        tick: float | None = None,
    ) -> None:
        self.api = api
        self.stats = stats
        self.log = log or (lambda line: print(line, flush=True))
        self.tick = tick or float(os.environ.get("TRISTAGE_MONITOR_TICK", "1.0"))
        self.boot = time.time()
        self.samples: dict[str, list[rules.Sample]] = {}
        self.written: dict[str, tuple[int, int, int]] = {}
        self.owners: dict[str, tuple[str, str]] = {}  # deployment -> (project, environment)
        self.health: dict[str, rules.HealthState] = {}
        self.probed_at: dict[str, float] = {}
        self.probing: set[str] = set()
        self._pruned = 0.0
        self._actor_api: Tristage | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # one tick or probe verdict at a time

    @property
    def actor_api(self) -> Tristage:
        """The API acting as `tristage-monitor` (so its rollbacks are audited as such)."""
        if self._actor_api is None:
            from ..api import Tristage

            self._actor_api = Tristage(self.api.home, actor=rules.ACTOR)
        return self._actor_api

    async def run(self, stop_event: asyncio.Event) -> None:
        """Tick until `stop_event`: the router's counters are read on the loop, the
        store work of a tick runs in a worker thread so the router never waits on it."""
        loop = self._loop = asyncio.get_running_loop()
        self._client = httpx.AsyncClient(timeout=5.0, trust_env=False)
        work: asyncio.Future[None] | None = None
        try:
            while not stop_event.is_set():
                now = time.time()
                try:
                    stats = self.stats()
                except Exception as exc:  # keep monitoring whatever happens
                    self.log(f"monitor: {type(exc).__name__}: {exc}")
                    stats = {}
                work = loop.run_in_executor(None, self._tick, now, stats)
                await asyncio.shield(work)  # a canceled wait lets the tick finish
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_event.wait(), self.tick)
        finally:
            if work is not None and not work.done():
                await asyncio.wait({work}, timeout=5.0)
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._client.aclose()
            if self._actor_api is not None:
                self._actor_api.close()

    def _tick(self, now: float, stats: dict[str, DeploymentStats]) -> None:
        with self._lock:
            try:
                self.sample(now, stats)
                self.evaluate(now)
                self.schedule_probes(now)
                if now - self._pruned > PRUNE_EVERY:
                    self.prune(now)
            except Exception as exc:  # keep monitoring whatever happens
                self.log(f"monitor: {type(exc).__name__}: {exc}")

    def _spawn(self, coro: Any, name: str) -> None:
        """Start `coro` on the monitor's loop (from the loop or from a tick's thread)."""
        loop = self._loop
        if loop is None:
            coro.close()
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._start(coro, name)
            return
        try:
            loop.call_soon_threadsafe(self._start, coro, name)
        except RuntimeError:  # the loop is closed: the control plane stopped
            coro.close()

    def _start(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- configuration -------------------------------------------------------------
    def _config(self, project: str) -> PipelineConfig | None:
        try:
            return self.api.config_for(project)
        except TristageError:
            return None

    def _owner(self, deployment: str) -> tuple[str, str] | None:
        owner = self.owners.get(deployment)
        if owner is None:
            owner = deployment_owner(self.api.store, deployment)
            if owner is None:
                return None
            self.owners[deployment] = owner
        return owner

    # -- metrics ---------------------------------------------------------------------
    def sample(self, now: float, stats: dict[str, DeploymentStats] | None = None) -> None:
        """Take one sample of every deployment the router counted (`stats`, default: read
        them now); store the changed ones."""
        changed: list[tuple[Any, ...]] = []
        keep: dict[str, float] = {}
        for dep, st in (self.stats() if stats is None else stats).items():
            owner = self._owner(dep)
            if owner is None:
                continue
            project, env = owner
            if project not in keep:
                cfg = self._config(project)
                keep[project] = (cfg.monitor.window_seconds if cfg else 60.0) + 2 * self.tick
            s = rules.Sample(now, st.requests, st.status_5xx, st.upstream_errors, self.boot)
            self.samples[dep] = [*rules.prune(self.samples.get(dep, []), now - keep[project]), s]
            key = (st.requests, st.status_5xx, st.upstream_errors)
            if self.written.get(dep) != key:
                self.written[dep] = key
                changed.append(
                    (now, self.boot, project, env, dep, st.requests, st.status_2xx,
                     st.status_3xx, st.status_4xx, st.status_5xx, st.upstream_errors,
                     st.p50_ms, st.p99_ms)
                )  # fmt: skip
        if changed:
            store = self.api.store
            with store.transaction():
                for row in changed:
                    store.execute(
                        "INSERT INTO metric_samples (at, boot, project, environment, deployment,"
                        " requests, status_2xx, status_3xx, status_4xx, status_5xx,"
                        " upstream_errors, p50_ms, p99_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        row,
                    )

    def prune(self, now: float) -> None:
        self._pruned = now
        self.api.store.execute(
            "DELETE FROM metric_samples WHERE at < ?", (now - RETENTION_SECONDS,)
        )

    # -- traffic decisions -----------------------------------------------------------
    def evaluate(self, now: float) -> None:
        for project in project_names(self.api.store):
            cfg = self._config(project)
            if cfg is None:
                continue
            t = thresholds(cfg.monitor)
            for row in self.api.deploys.aliases(project).values():
                env, dep = row["environment"], row["routed"]
                self._close_stale(project, env, dep, now)
                if not dep or (row["desired"] and row["desired"] != dep):
                    continue  # nothing live, or a switch is under way
                self._judge(cfg, t, project, env, dep, row["routed_at"] or now, now)

    def _judge(
        self,
        cfg: PipelineConfig,
        t: rules.Thresholds,
        project: str,
        env: str,
        dep: str,
        routed_at: float,
        now: float,
    ) -> None:
        store = self.api.store
        history = self.api.deploys.alias_history(project, env)
        production = env == cfg.production
        rolled_back = frozenset(
            r["deployment"]
            for r in store.query(
                "SELECT deployment FROM alerts WHERE project=? AND environment=? AND kind=?",
                (project, env, rules.Kind.auto_rollback.value),
            )
        )
        previous = None
        if production:
            usable = self.api.deploys.ready_ids(project, env)
            previous = rollback_target(history, dep, usable - rolled_back)
        live = rules.Live(
            deployment=dep,
            went_live_at=routed_at,
            first_time_live=bool(history) and history[-1] == dep and rules.first_time_live(history),
            previous=previous,
            production=production,
        )
        win = rules.window(self.samples.get(dep, []), now, t.window_seconds, since=routed_at)
        open_alert = self._open_alert(project, env, dep, rules.Kind.error_rate)
        decision = rules.judge_traffic(live, win, t, now, open_alert is not None, rolled_back)
        if decision.rollback_to:
            self._rollback(cfg, project, env, dep, decision.rollback_to, decision.reason, win)
        elif decision.open_alert:
            self.raise_alert(
                cfg, project, env, dep, rules.Kind.error_rate, "warning",
                f"{project}/{env} {dep}: {decision.reason}",
                {"requests": win.requests, "failures": win.failures,
                 "window_seconds": round(win.seconds, 3)},
            )  # fmt: skip
        elif decision.close_alert and open_alert is not None:
            self.resolve_alert(cfg, open_alert, decision.reason)

    def _rollback(
        self,
        cfg: PipelineConfig,
        project: str,
        env: str,
        dep: str,
        target: str,
        reason: str,
        win: rules.Window,
    ) -> None:
        try:
            self.actor_api.deploys.rollback(project, to=target, wait=0)
        except TristageError as exc:
            self.raise_alert(
                cfg, project, env, dep, rules.Kind.error_rate, "critical",
                f"{project}/{env} {dep}: {reason}; automatic rollback to {target} failed: {exc}",
                {"requests": win.requests, "failures": win.failures, "rollback_error": str(exc)},
            )  # fmt: skip
            return
        self.raise_alert(
            cfg, project, env, dep, rules.Kind.auto_rollback, "critical",
            f"{project}/{env} {dep}: {reason}; rolled back to {target} by {rules.ACTOR}",
            {"requests": win.requests, "failures": win.failures, "rolled_back_to": target,
             "window_seconds": round(win.seconds, 3)},
            resolution=f"rolled back to {target}",
        )  # fmt: skip

    def _close_stale(self, project: str, env: str, live: str | None, now: float) -> None:
        """Alerts about a deployment that is no longer live in its environment close."""
        sql = (
            "SELECT * FROM alerts WHERE project=? AND environment=? AND resolved_at IS NULL"
            " AND kind NOT IN (?, ?)"
        )
        params: tuple[str, ...] = (project, env, *(k.value for k in rules.WEBHOOK_KINDS))
        if live is not None:
            sql, params = sql + " AND deployment <> ?", (*params, live)
        for r in self.api.store.query(sql, params):
            cfg = self._config(project)
            if cfg is not None:
                self.resolve_alert(cfg, Alert.from_row(r), "no longer live")
                self.health.pop(r["deployment"], None)

    def _open_alert(self, project: str, env: str, dep: str, kind: rules.Kind) -> Alert | None:
        row = self.api.store.query_one(
            "SELECT * FROM alerts WHERE project=? AND environment=? AND deployment=? AND kind=?"
            " AND resolved_at IS NULL ORDER BY id DESC LIMIT 1",
            (project, env, dep, kind.value),
        )
        return Alert.from_row(row) if row else None

    # -- alerts ------------------------------------------------------------------------
    def raise_alert(
        self,
        cfg: PipelineConfig,
        project: str,
        env: str,
        dep: str,
        kind: rules.Kind,
        severity: str,
        message: str,
        details: dict[str, Any],
        resolution: str | None = None,
    ) -> Alert:
        now = time.time()
        store = self.api.store
        with store.transaction():
            alert_id = store.insert(
                "INSERT INTO alerts (at, project, environment, deployment, kind, severity,"
                " message, details, resolved_at, resolution) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (now, project, env, dep, kind.value, severity, message,
                 json.dumps(details, sort_keys=True), now if resolution else None, resolution),
            )  # fmt: skip
            self.api.audit.record(
                "monitor.alert",
                project=project,
                environment=env,
                target=dep,
                details={"alert": alert_id, "kind": kind.value, "message": message},
                actor=rules.ACTOR,
            )
        row = store.query_one("SELECT * FROM alerts WHERE id=?", (alert_id,))
        assert row is not None
        alert = Alert.from_row(row)
        self.log(f"ALERT [{severity}] {message}")
        self._deliver(cfg, alert, "raised")
        return alert

    def resolve_alert(self, cfg: PipelineConfig, alert: Alert, why: str) -> None:
        now = time.time()
        with self.api.store.transaction():
            self.api.store.execute(
                "UPDATE alerts SET resolved_at=?, resolution=? WHERE id=? AND resolved_at IS NULL",
                (now, why, alert.id),
            )
            self.api.audit.record(
                "monitor.resolve",
                project=alert.project,
                environment=alert.environment,
                target=alert.deployment,
                details={"alert": alert.id, "kind": alert.kind, "resolution": why},
                actor=rules.ACTOR,
            )
        self.log(f"resolved: {alert.project}/{alert.environment} {alert.deployment} "
                 f"{alert.kind}: {why}")  # fmt: skip
        row = self.api.store.query_one("SELECT * FROM alerts WHERE id=?", (alert.id,))
        if row is not None:
            self._deliver(cfg, Alert.from_row(row), "resolved")

    def _deliver(self, cfg: PipelineConfig, alert: Alert, event: str) -> None:
        url = cfg.monitor.alert_url
        if not url or self._client is None:
            return
        self._spawn(self._post(url, alert, event), f"alert-{alert.id}-{event}")

    async def _post(self, url: str, alert: Alert, event: str) -> None:
        assert self._client is not None
        payload = {"event": event, "alert": alert.as_json(), "source": "tristage"}
        try:
            resp = await self._client.post(url, json=payload)
            outcome = f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            outcome = f"{type(exc).__name__}"
        await asyncio.to_thread(
            self.api.store.execute,
            "UPDATE alerts SET delivery=? WHERE id=?",
            (f"{event}: {outcome}", alert.id),
        )
        if not outcome.startswith("HTTP 2"):
            self.log(f"alert {alert.id} not delivered to its alert_url: {outcome}")

    # -- health ------------------------------------------------------------------------
    def schedule_probes(self, now: float) -> None:
        for project in project_names(self.api.store):
            cfg = self._config(project)
            if cfg is None:
                continue
            for row in routed_releases(self.api.store, project):
                dep = row["routed"]
                if dep in self.probing:
                    continue
                if now - self.probed_at.get(dep, 0.0) < cfg.monitor.health_interval:
                    continue
                if row["status"] is not None and row["status"] != "healthy":
                    continue  # starting, restarting or draining: the supervisor's business
                self.probed_at[dep] = now
                self.probing.add(dep)
                self._spawn(
                    self._probe(cfg, project, row["environment"], dep, row["port"]),
                    f"probe-{dep}",
                )

    async def _probe(
        self, cfg: PipelineConfig, project: str, env: str, dep: str, port: int | None
    ) -> None:
        try:
            path = cfg.settings(env).health_path or "/"
            timeout = min(5.0, max(0.5, cfg.monitor.health_interval))
            if port is None:
                ok, detail = False, "no running release"
            else:
                try:
                    assert self._client is not None
                    # the environment's own host, as the router sends it (ALLOWED_HOSTS)
                    host = aliases.environment_host(project, env, cfg.production)
                    resp = await self._client.get(
                        f"http://{LOOPBACK}:{port}{probe_path(path)}", timeout=timeout,
                        headers={"Host": host},
                    )  # fmt: skip
                    ok, detail = resp.status_code < 400, f"HTTP {resp.status_code}"
                except httpx.HTTPError as exc:
                    ok, detail = False, type(exc).__name__
            await asyncio.to_thread(self._locked_probe, cfg, project, env, dep, path, ok, detail)
        finally:
            self.probing.discard(dep)

    def _locked_probe(
        self, cfg: PipelineConfig, project: str, env: str, dep: str, path: str, ok: bool,
        detail: str,
    ) -> None:  # fmt: skip
        with self._lock:
            self.record_probe(cfg, project, env, dep, path, ok, detail)

    def record_probe(
        self, cfg: PipelineConfig, project: str, env: str, dep: str, path: str, ok: bool,
        detail: str,
    ) -> None:  # fmt: skip
        t = thresholds(cfg.monitor)
        state = self.health.get(dep)
        if state is None:
            is_open = self._open_alert(project, env, dep, rules.Kind.health) is not None
            state = rules.HealthState(0, is_open)
        decision = rules.judge_health(state, ok, t)
        self.health[dep] = decision.state
        self.api.store.execute(
            "INSERT INTO health_probes (deployment, project, environment, at, ok, streak, detail)"
            " VALUES (?,?,?,?,?,?,?) ON CONFLICT (deployment) DO UPDATE SET at=excluded.at,"
            " ok=excluded.ok, streak=excluded.streak, detail=excluded.detail",
            (dep, project, env, time.time(), int(ok), decision.state.streak, detail),
        )
        if decision.open_alert:
            self.raise_alert(
                cfg, project, env, dep, rules.Kind.health, "critical",
                f"{project}/{env} {dep}: health check GET {path} failed "
                f"{decision.state.streak} times in a row (last: {detail})",
                {"path": path, "failures": decision.state.streak, "last": detail},
            )  # fmt: skip
        elif decision.close_alert:
            alert = self._open_alert(project, env, dep, rules.Kind.health)
            if alert is not None:
                self.resolve_alert(cfg, alert, f"health check answers again ({detail})")
