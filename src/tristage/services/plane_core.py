"""The control plane's shared state and its release operations (start, restart,
health, records), which the deploy pipeline, the reconciler and the supervisor use."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from ..domain.config import ProcessSettings
from ..domain.deployments import Deployment, Status
from ..domain.edge import EdgeOptions
from ..domain.monitor import Kind
from ..domain.processes import WEB_1, ProcessName
from ..edges.builders import BuildContext, BuildLog
from ..edges.homelock import HomeLock
from ..edges.router import Router, RouteTable
from ..edges.router.stats import DeploymentStats, merged
from ..edges.runtime import Runtime, free_port
from . import pipeline_steps as steps
from .front_door import RouterProcess
from .frontdoor import FrontDoor
from .frontdoor_haproxy import HAProxyFrontDoor
from .health import check_once, probe
from .release_records import ReleaseRecords
from .releases import ProjectRoutes, Release, StartFailed, Tuning, release_row
from .runtimes import Runtimes
from .supervisor import supervise

if TYPE_CHECKING:
    from ..api import Tristage

T = TypeVar("T")
STARTED_AFTER = 0.3  # a process without a port that still runs this long has started


class PlaneCore:
    """What every part of the control plane shares."""

    def __init__(
        self,
        api: Tristage,
        host: str = "127.0.0.1",
        port: int = 8080,
        tuning: Tuning | None = None,
        log: Callable[[str], None] | None = None,
        runtimes: Runtimes | None = None,
        edge: EdgeOptions | None = None,
        router_process: bool = False,
    ) -> None:
        """`router_process`: the router runs in a process of its own that outlives this
        one (`tristage up`), else inside this loop."""
        self.api = api
        self.router_process = router_process
        self.svc = api.deploys
        self.host = host
        self.port = port
        self.tuning = tuning or Tuning.from_env()
        self.runtimes = runtimes or Runtimes()
        self._log = log or (lambda line: print(line, flush=True))
        self.table = RouteTable()
        self.router: Router | RouterProcess | None = None
        self.last_routes: list[ProjectRoutes] = []  # what the table was last built from
        self._reported_claims: set[tuple[str, str]] = set()  # (host, project) warned about
        self.frontdoor: FrontDoor | HAProxyFrontDoor | None = None
        if edge is not None and edge.kind == "haproxy":
            self.frontdoor = HAProxyFrontDoor(api.home, edge, self.table, self._log)
        elif edge is not None and edge.tls:
            self.frontdoor = FrontDoor(api.home, edge, self.table, self._log)
        self.releases: dict[str, Release] = {}
        self.bringing_up: set[str] = set()
        self.pipelines: dict[str, asyncio.Task[None]] = {}
        self.contexts: dict[str, BuildContext] = {}
        self.cancel_reasons: dict[str, str] = {}  # pipelines canceled by a request
        self.failed_starts: dict[str, float] = {}
        self.retiring: set[str] = set()
        self.asleep: set[str] = set()  # idle previews stopped until a request comes
        self.waking: set[str] = set()  # woken, not serving yet
        self.awake_since: dict[str, float] = {}
        self.wake = asyncio.Event()
        self.stopping = False
        self.build_slots = asyncio.Semaphore(self.tuning.builds)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._transport: asyncio.DatagramTransport | None = None
        self._waiting: set[tuple[str, int]] = set()  # sent "wait": told after a reconcile
        self._settings: dict[str, ProcessSettings] = {}
        self._types: dict[str, dict[str, str]] = {}
        self.http: Any = None  # the HTTP API + dashboard server
        self.hooks: Any = None  # the hook socket (hook_server.HookServer)
        self.dashboard_port: int | None = None
        self.monitor_runner: Any = None
        self._lock = HomeLock(api.home)
        # the control plane's store work, one call at a time in issue order
        self._store = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tristage-store")
        self._reconciling = asyncio.Lock()

    @functools.cached_property
    def records(self) -> ReleaseRecords:
        # opened on first use, after `run` holds the home's lock (two `up` at once must
        # not race on creating the state store)
        return ReleaseRecords(self.api.store)

    def edge_stats(self) -> dict[str, DeploymentStats]:
        """Per-deployment counters of the front door: the router's, and the production
        edge's when it serves hosts itself (HAProxy)."""
        own = self.router.stats() if self.router is not None else {}
        if self.frontdoor is None:
            return own
        return merged(own, self.frontdoor.stats())

    async def inflight_now(self, upstream: tuple[str, int]) -> int:
        """Requests in flight to `upstream` through the router and the edge."""
        n = await self.router.inflight_now(upstream) if self.router is not None else 0
        if self.frontdoor is not None:
            n += await self.frontdoor.inflight_now(upstream)
        return n

    def log(self, msg: str) -> None:
        self._log(f"{time.strftime('%H:%M:%S')} {msg}")

    def _spawn_task(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._report)
        return task

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` (store work) on the store thread; the loop goes on meanwhile."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._store, functools.partial(fn, *args))

    def _report(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.log(f"internal error in {task.get_name()}: {type(exc).__name__}: {exc}")

    async def reconcile(self) -> None:
        """Make what runs and what is routed match the store (the reconciler's)."""
        raise NotImplementedError

    # -- releases ---------------------------------------------------------------
    async def choose_runtime(self, dep: Deployment, log: BuildLog | None = None) -> Runtime:
        """The runtime of `dep`'s environment by policy; a warning each time it is
        not sandboxed (logged and audited)."""
        cfg = await self._db(self.api.config_for, dep.project)
        choice = await asyncio.to_thread(self.runtimes.choose, cfg, dep.environment)
        if choice.warning:
            self.log(f"{dep.id} warning: {choice.warning}")
            if log is not None:
                log.line(f"warning: {choice.warning}")
            await self._db(functools.partial(
                self.api.audit.record, "release.unsandboxed", project=dep.project,
                environment=dep.environment, target=dep.id,
                details={"runtime": choice.runtime.name},
            ))  # fmt: skip
        return choice.runtime

    async def _spawn(
        self, dep: Deployment, port: int, process: ProcessName = WEB_1
    ) -> tuple[Runtime, dict[str, Any]]:
        settings = await self._db(self._settings_for, dep)
        command = None
        if not process.is_web:
            command = (await self._db(self._types_for, dep)).get(process.type)
            if command is None:
                raise StartFailed(
                    f"{dep.id} has no {process.type!r} process type",
                    "add a line for it to the Procfile",
                )
        runtime = await self.choose_runtime(dep)
        spec = await self._db(steps.release_spec, self.api, dep, port, settings, process, command)
        starting = asyncio.ensure_future(asyncio.to_thread(runtime.start, spec))
        try:
            handle = await asyncio.shield(starting)
        except asyncio.CancelledError:
            # canceled (the control plane stops) while the process was being started:
            # the start goes on in its thread, so wait for it and stop what it started
            with contextlib.suppress(Exception):
                await asyncio.to_thread(runtime.stop, await starting, 1.0)
            raise
        return runtime, handle

    async def start_release(
        self, dep: Deployment, port: int | None = None, process: ProcessName = WEB_1
    ) -> Release:
        """Start one process of `dep` (its `web.1` by default) and supervise it: a web
        process on a free port, healthy once its health check passes; another type
        without a port or an HTTP check."""
        if not dep.artifact or not dep.web or not os.path.isdir(dep.artifact):
            raise StartFailed(f"deployment {dep.id} has no artifact", "redeploy it")
        port = (port or free_port()) if process.is_web else 0
        runtime, handle = await self._spawn(dep, port, process)
        rel = Release(dep, handle, port, runtime, process=process)
        try:
            await self.save_release(rel)
            ok, why = await self._health(rel)
        except BaseException:  # never leave a started release running unsupervised
            await asyncio.to_thread(runtime.stop, handle, 1.0)
            await self.forget_release(dep.id, process)
            raise
        if not ok:
            await asyncio.to_thread(runtime.stop, handle, 1.0)
            await self.forget_release(dep.id, process)
            raise StartFailed(why, f"see 'tristage logs {dep.id}'")
        rel.status = "healthy"
        old = self.releases.get(rel.key)
        self.releases[rel.key] = rel
        await self.save_release(rel)
        if old is None or old.task is None or old.task.done():
            rel.task = self._spawn_task(supervise(self, rel), f"supervise-{rel.key}")
        self.reroute()
        return rel

    async def restart_in_place(self, rel: Release) -> tuple[bool, str]:
        """(supervisor) A new process for `rel` on its port; (healthy, why not)."""
        runtime, handle = await self._spawn(rel.dep, rel.port, rel.process)
        rel.runtime, rel.handle, rel.failed_checks = runtime, handle, 0
        await self.save_release(rel)
        ok, why = await self._health(rel)
        if ok:
            rel.status = "crashed" if rel.crash_loop else "healthy"
            await self.save_release(rel)
            self.reroute()
        else:
            await asyncio.to_thread(runtime.stop, handle, 1.0)
        return ok, why

    def reroute(self) -> None:
        """(loop) Rebuild the router's table from the last routes read (a replica
        became healthy or left): the reconciler's."""

    async def report_oom(self, rel: Release, how: str) -> None:
        """A release was killed for memory: say so in the monitor's alerts."""
        self.log(f"{rel.dep.id} {how}")
        if self.monitor_runner is None:
            return
        cfg = await self._db(self.api.config_for, rel.dep.project)
        await self._db(
            self.monitor_runner.raise_alert, cfg, rel.dep.project, rel.dep.environment,
            rel.dep.id, Kind.out_of_memory, "error",
            f"{rel.dep.project}/{rel.dep.environment}: {rel.dep.id} was {how}",
            {"deployment": rel.dep.id},
        )  # fmt: skip

    async def report_crash_loop(self, rel: Release, reason: str) -> Any:
        """A process is in a crash loop: an alert through the monitor's path (None when
        no monitor runs)."""
        if self.monitor_runner is None:
            return None
        cfg = await self._db(self.api.config_for, rel.dep.project)
        return await self._db(
            self.monitor_runner.raise_alert, cfg, rel.dep.project, rel.dep.environment,
            rel.dep.id, Kind.crash_loop, "error",
            f"{rel.dep.project}/{rel.dep.environment}: {rel.dep.id} {rel.process} {reason}",
            {"deployment": rel.dep.id, "process": str(rel.process)},
        )  # fmt: skip

    async def resolve_crash_loop(self, rel: Release, why: str) -> None:
        alert, rel.crash_alert = rel.crash_alert, None
        if alert is None or self.monitor_runner is None:
            return
        cfg = await self._db(self.api.config_for, rel.dep.project)
        await self._db(self.monitor_runner.resolve_alert, cfg, alert, why)

    async def save_release(self, rel: Release) -> None:
        """Record the release as it is now (its row is taken on the loop, written after)."""
        await self._db(self.records.save, release_row(rel, time.time()))

    async def forget_release(self, dep_id: str, process: ProcessName | None = WEB_1) -> None:
        await self._db(self.records.forget, dep_id, process)

    async def _health(self, rel: Release) -> tuple[bool, str]:
        if not rel.process.is_web:
            return await self._started(rel)
        settings = await self._db(self._settings_for, rel.dep)
        host = await self._db(self.svc.environment_host, rel.dep.project, rel.dep.environment)
        where = getattr(rel.runtime, "listening", None)
        return await probe(
            rel.port, settings.health_path or "/", settings.health_timeout or 30.0, host, rel.state,
            (lambda: where(rel.handle)) if where is not None else None,
        )  # fmt: skip

    async def check_once(self, rel: Release) -> tuple[bool, str]:
        """One health check of a running web process (its environment's host)."""
        settings = await self._db(self._settings_for, rel.dep)
        host = await self._db(self.svc.environment_host, rel.dep.project, rel.dep.environment)
        return await check_once(rel.port, settings.health_path or "/", host)

    # -- store helpers -------------------------------------------------------------
    async def set_status(self, dep_id: str, status: Status, reason: str | None = None) -> None:
        await self._db(self._set_status_now, dep_id, status, reason)

    def _set_status_now(self, dep_id: str, status: Status, reason: str | None = None) -> None:
        """(store thread) A deployment's new status, audited."""
        row = self.api.store.query_one(
            "SELECT project, environment FROM deployments WHERE id=?", (dep_id,)
        )
        self.api.store.execute(
            "UPDATE deployments SET status=?, reason=?, updated_at=? WHERE id=?",
            (status.value, reason, time.time(), dep_id),
        )
        if row is not None:
            self.api.audit.record(
                f"deploy.{status.value}",
                project=row["project"],
                environment=row["environment"],
                target=dep_id,
                details={"reason": reason} if reason else {},
            )

    async def _started(self, rel: Release) -> tuple[bool, str]:
        """A process without a port is up when it has not ended within a moment (its
        supervisor restarts it with backoff when it ends later)."""
        deadline = time.monotonic() + STARTED_AFTER
        while time.monotonic() < deadline:
            st = await asyncio.to_thread(rel.state)
            if st.gone:
                return False, f"{rel.process} {st.describe()} at start"
            await asyncio.sleep(0.05)
        return True, ""

    def _types_for(self, dep: Deployment) -> dict[str, str]:
        """(store thread) `dep`'s process types and commands, from its commit."""
        cached = self._types.get(dep.id)
        if cached is None:
            cached = self._types[dep.id] = steps.commit_process_types(self.api, dep)
        return cached

    def _settings_for(self, dep: Deployment) -> ProcessSettings:
        cached = self._settings.get(dep.id)
        if cached is not None:
            return cached
        settings = steps.commit_settings(self.api, dep)
        self._settings[dep.id] = settings
        return settings
