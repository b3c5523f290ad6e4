"""Releases as the control plane keeps them: a running instance of a deployment
(process, port, health, crash history), the supervisor's timings, and the desired
state the reconciler reads from the store (on its store thread) before acting."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from typing import Any

from ..domain.access import Access
from ..domain.aliases import DeploymentRef, PublicNames
from ..domain.deployments import Deployment
from ..domain.processes import WEB_1, ProcessName
from ..edges.runtime import Handle, Runtime, Status
from ..errors import TristageError

LOOPBACK = "127.0.0.1"


def _floats(text: str | None, default: tuple[float, ...]) -> tuple[float, ...]:
    if not text:
        return default
    return tuple(float(x) for x in text.split(",") if x.strip())


@dataclass(frozen=True)
class Tuning:
    """Supervisor timings (environment overrides: TRISTAGE_RESTART_BACKOFF="0.5,1,2",
    TRISTAGE_CRASH_LIMIT, TRISTAGE_CRASH_WINDOW)."""

    restart_backoff: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0)
    crash_limit: int = 5
    crash_window: float = 120.0
    tick: float = 1.0
    stop_grace: float = 5.0
    builds: int = 1
    # a running web process is health-checked this often; after `replica_failures`
    # failures in a row it leaves the rotation (`unhealthy`) until it answers again
    replica_check: float = 5.0
    replica_failures: int = 3

    @classmethod
    def from_env(cls) -> Tuning:
        env = os.environ
        return cls(
            restart_backoff=_floats(env.get("TRISTAGE_RESTART_BACKOFF"), cls.restart_backoff),
            crash_limit=int(env.get("TRISTAGE_CRASH_LIMIT", cls.crash_limit)),
            crash_window=float(env.get("TRISTAGE_CRASH_WINDOW", cls.crash_window)),
            replica_check=float(env.get("TRISTAGE_REPLICA_CHECK", cls.replica_check)),
            replica_failures=int(env.get("TRISTAGE_REPLICA_FAILURES", cls.replica_failures)),
        )


class StartFailed(TristageError):
    pass


def process_key(dep_id: str, process: ProcessName) -> str:
    """The control plane's key of one process: the deployment id for `web.1` (what
    most of the platform means by "the release"), `ID/TYPE.N` for the others."""
    return dep_id if process == WEB_1 else f"{dep_id}/{process}"


@dataclass
class Release:
    """One process of a deployment's release (`web.1` unless said otherwise)."""

    dep: Deployment
    handle: Handle
    port: int  # 0: a process without a port (every type but web)
    runtime: Runtime
    status: str = "starting"  # starting healthy unhealthy restarting crashed draining stopped
    crashes: list[float] = field(default_factory=list)
    # a non-web process in a crash loop: `crashed` and retried at the longest backoff
    # until it runs a whole crash window; the alert raised for it (its id)
    crash_loop: bool = False
    crash_alert: Any = None  # services.monitor.Alert
    failed_checks: int = 0  # health checks failed in a row while running (web)
    task: asyncio.Task[None] | None = None
    process: ProcessName = WEB_1

    @property
    def key(self) -> str:
        return process_key(self.dep.id, self.process)

    @property
    def upstream(self) -> tuple[str, int]:
        return (LOOPBACK, self.port)

    def state(self) -> Status:
        return self.runtime.status(self.handle)


def release_row(rel: Release, now: float) -> tuple[Any, ...]:
    """The `releases` row of `rel` as it is at this moment (taken on the loop)."""
    return (
        rel.dep.id, str(rel.process), json.dumps(rel.handle), rel.port, rel.status,
        len(rel.crashes), now,
    )  # fmt: skip


@dataclass(frozen=True)
class Adoption:
    """A release left running by a previous control plane, ready: re-adopt it if it runs."""

    dep: Deployment
    handle: Handle
    port: int
    process: ProcessName = WEB_1


@dataclass(frozen=True)
class ProjectRoutes:
    """What a project's host table is built from (the routed alias per environment,
    the latest ready deployment per branch, recent ready deployments)."""

    project: str
    production: str | None
    environments: tuple[str, ...]
    live: dict[str, str | None]
    branch_latest: dict[str, DeploymentRef]
    deps: list[DeploymentRef]
    public: dict[str, PublicNames] = field(default_factory=dict)
    access: dict[str, Access] = field(default_factory=dict)  # environment -> sign-in


@dataclass(frozen=True)
class DesiredState:
    """One read of the store by the reconciler: ready deployments (rows by id), the
    aliases, the deployments that should run, the host tables' inputs, and each
    readable project's drain time."""

    ready: dict[str, dict[str, Any]]
    aliases: list[dict[str, Any]]
    wanted: set[str]
    routes: list[ProjectRoutes]
    drain_seconds: dict[str, float]
    # per wanted deployment: how many processes of each type it runs
    formations: dict[str, dict[str, int]] = field(default_factory=dict)
    sleepers: dict[str, float] = field(default_factory=dict)  # may sleep after N s idle
