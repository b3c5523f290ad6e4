"""Views shared by the HTTP API and the dashboard, and the state one app holds.

View functions are plain calls on the Python API (they block: run them in worker
threads). `Faces` hands out one `Tristage` per actor, so the audit events services
write name the token; `TrafficMeter` turns the router's cumulative counters into
request rates.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..api import TokenInfo, TokenService, Tristage
from ..domain.deployments import Deployment
from ..domain.variables import MASK, SHARED, scope_label
from ..errors import NotFound, UsageError
from .models import (
    AuditOut,
    BackupOut,
    DeliveryOut,
    DeploymentOut,
    EnvironmentOut,
    FindingOut,
    LogOut,
    ProjectOut,
    SetOut,
    SwitchOut,
    TokenOut,
    Traffic,
    VariableIn,
    VariableOut,
    from_record,
)

if TYPE_CHECKING:
    from ..api import DeploymentStats, Switch

StatsSource = Callable[[], Mapping[str, "DeploymentStats"]]


class Faces:
    """One `Tristage` per actor (the audit log's `actor` is fixed per instance)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._by_actor: dict[str, Tristage] = {}
        self._lock = threading.Lock()
        self.system = self.for_actor("tristage-http")
        self.tokens: TokenService = self.system.tokens

    def for_actor(self, actor: str) -> Tristage:
        with self._lock:
            api = self._by_actor.get(actor)
            if api is None:
                api = self._by_actor[actor] = Tristage(self.home, actor=actor)
            return api

    def for_token(self, info: TokenInfo) -> Tristage:
        return self.for_actor(info.actor)

    def close(self) -> None:
        with self._lock:
            for api in self._by_actor.values():
                api.close()


class TrafficMeter:
    """Request rates from the router's cumulative counters, sampled over a minute."""

    WINDOW = 60.0

    def __init__(self, source: StatsSource | None) -> None:
        self.source = source
        self.samples: deque[tuple[float, dict[str, int]]] = deque()

    def read(self) -> dict[str, Traffic]:
        """Call on the event loop the router runs on."""
        if self.source is None:
            return {}
        snap = dict(self.source())
        now = time.monotonic()
        self.samples.append((now, {d: s.requests for d, s in snap.items()}))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.WINDOW:
            self.samples.popleft()
        first_t, first = self.samples[0]
        span = now - first_t
        out: dict[str, Traffic] = {}
        for dep, s in snap.items():
            rate = None
            if span >= 2.0:
                rate = round((s.requests - first.get(dep, 0)) * 60.0 / span, 1)
            out[dep] = Traffic(
                requests=s.requests,
                requests_per_minute=rate,
                errors=s.status_5xx + s.upstream_errors,
                status_5xx=s.status_5xx,
                upstream_errors=s.upstream_errors,
                p50_ms=None if s.p50_ms is None else round(s.p50_ms, 2),
                p99_ms=None if s.p99_ms is None else round(s.p99_ms, 2),
            )
        return out

    async def run(self, every: float = 5.0) -> None:
        while True:
            self.read()
            await asyncio.sleep(every)


@dataclass
class Http:
    faces: Faces
    traffic: TrafficMeter
    secure_cookies: bool = False


# ---------------------------------------------------------------------------
# Views shared by the API and the dashboard (run in worker threads).


def projects(api: Tristage) -> list[ProjectOut]:
    return [
        ProjectOut(
            name=p.name, environments=list(p.config.environments), production=p.config.production
        )
        for p in api.projects()
    ]


def environments(api: Tristage, project: str, traffic: dict[str, Traffic]) -> list[EnvironmentOut]:
    cfg = api.config_for(project)
    out = []
    for row in api.deploys.status(project):
        dep = row["deployment"]
        out.append(
            EnvironmentOut(
                **row,
                branches=list(cfg.environments[row["environment"]].branches),
                traffic=traffic.get(dep) if dep else None,
            )
        )
    return out


def live_ids(api: Tristage, project: str) -> set[str]:
    return {r["routed"] for r in api.deploys.aliases(project).values() if r.get("routed")}


def deployment_out(api: Tristage, dep: Deployment, live: set[str]) -> DeploymentOut:
    return from_record(DeploymentOut, dep, url=api.deploys.deployment_url(dep), live=dep.id in live)


def deployments(
    api: Tristage, project: str, environment: str | None = None, limit: int = 50
) -> list[DeploymentOut]:
    api.config_for(project)  # a clear 404 for an unknown project
    live = live_ids(api, project)
    return [
        deployment_out(api, d, live)
        for d in api.deploys.list_deployments(project, environment, limit)
    ]


def deployment_log(
    api: Tristage, project: str, deployment: str, kind: str = "build", lines: int = 2000
) -> LogOut:
    api.deploys.get(deployment, project)
    if kind not in ("build", "runtime"):
        raise UsageError(f"unknown log kind {kind!r}", "use build or runtime")
    tail: deque[str] = deque(maxlen=lines)
    total = 0
    for line in api.deploys.tail(deployment, build=kind == "build", follow=False):
        tail.append(line)
        total += 1
    return LogOut(
        deployment=deployment,
        kind="build" if kind == "build" else "runtime",
        lines=list(tail),
        truncated=total > len(tail),
    )


def switch_out(api: Tristage, project: str, sw: Switch) -> SwitchOut:
    return SwitchOut(
        deployment=deployment_out(api, sw.deployment, live_ids(api, project)),
        environment=sw.environment,
        rebuilt=sw.rebuilt,
        routed=sw.routed,
        elapsed_s=round(sw.elapsed, 3),
        message=sw.message,
    )


def variables(api: Tristage, project: str, environment: str | None) -> list[VariableOut]:
    return [
        VariableOut(
            name=e.name,
            value=MASK if e.secret else e.value,
            secret=e.secret,
            build=e.build,
            scope="all" if e.scope == SHARED else e.scope,
            branch=e.branch,
            where=scope_label(e.scope, e.branch),
            set_at=e.set_at,
        )
        for e in api.variables.entries(project, environment)
    ]


def set_variable(api: Tristage, project: str, name: str, body: VariableIn) -> list[SetOut]:
    """`PUT .../variables/{name}`: the write, the rules' findings, redeploys it started."""
    results = api.variables.set(
        project, name, body.value, environments=body.environments, all_environments=body.all,
        branch=body.branch, secret=body.secret, build=body.build, strict=body.strict,
    )  # fmt: skip
    redeploys = [
        d.id for d in api.variables.redeploy_after(project, api.variables.changed_scopes(results))
    ]
    return [
        SetOut(
            name=r.name,
            where=r.where,
            change=r.change,
            secret=r.secret,
            build=r.build,
            findings=[from_record(FindingOut, f) for f in r.findings],
            redeploys=redeploys,
        )
        for r in results
    ]


def deliveries(
    api: Tristage, project: str, environment: str | None, status: str | None, limit: int = 50
) -> list[DeliveryOut]:
    api.config_for(project)
    return [
        from_record(DeliveryOut, d)
        for d in api.webhooks.deliveries(
            project, environment=environment, status=status, limit=limit
        )
    ]


def replay(api: Tristage, project: str, delivery: str) -> DeliveryOut:
    if api.webhooks.show(delivery).delivery.project != project:
        raise NotFound(f"no webhook delivery {delivery!r} in project {project}")
    return from_record(DeliveryOut, api.webhooks.replay(delivery))


def backups(api: Tristage, project: str, environment: str) -> list[BackupOut]:
    return [from_record(BackupOut, b) for b in api.data.backups(project, environment)]


def audit_events(
    api: Tristage,
    project: str | None = None,
    environment: str | None = None,
    action: str | None = None,
    limit: int = 100,
) -> list[AuditOut]:
    return [
        from_record(AuditOut, e)
        for e in api.audit.events(
            project=project, environment=environment, action=action, limit=limit
        )
    ]


def token_out(info: TokenInfo) -> TokenOut:
    return TokenOut(**info.as_json())
