"""The control plane (`tristage up`): reconciles the state store with the machine.

One asyncio loop hosts the router, the HTTP API and dashboard (wired by the
composition root, `tristage.up`) and:

- the **deploy pipeline** (`deploy_pipeline.py`): claims queued deployments,
  builds them in a worker thread through the runtime's sandbox, runs the
  migration, starts the release and health-checks it (`health.py`); only then is
  the deployment `ready` and its environment's alias moved to it;
- the **reconciler** (`reconciler.py`): switches aliases whose target is healthy,
  starts what should run, drains and stops what nothing points at, keeps the last
  N production releases warm for instant rollback;
- the **supervisor** (`supervisor.py`): one task per release, restarting it with
  backoff when it ends, marking a crash loop `crashed`;
- a **nudge socket** (UDP on loopback, port in `controlplane.json`): commands
  write their intent to the store and send a datagram so it is acted on at once;
- the backup scheduler, the webhook forwarder and the monitor of other services.

Releases run in a `Runtime` (`edges/runtime`): the bubblewrap sandbox by default,
chosen per environment by policy (`runtimes.py`); a release is identified by the
runtime's opaque handle, stored in the `releases` table.

The loop never touches the state store itself: every read and write of the
control plane runs on one dedicated **store thread** (`_db`), in the order it was
issued, so a write lock held elsewhere delays only the control plane's
bookkeeping, never a proxied request.

State lives in the store, never only in memory: after a `kill -9` a new control
plane re-adopts live releases, restarts dead ones, marks interrupted builds
`error`, and serves the same aliases. One control plane runs per platform home
(an exclusive lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..domain.deployments import Deployment, Status
from ..domain.monitor import Kind
from ..edges.router import Router
from ..edges.runtime import proc_start
from . import pipeline_steps as steps
from .deploy_pipeline import DeployPipeline
from .deploys import CONTROL_FILE
from .front_door import RouterProcess
from .hook_server import HookServer
from .log_retention import sweep as sweep_logs
from .reconciler import Reconciler
from .releases import LOOPBACK, Adoption, Release, process_key
from .supervisor import supervise

if TYPE_CHECKING:
    from .lifecycle import CleanupReport

T = TypeVar("T")
HttpFactory = Callable[[Any, str, int], Awaitable[tuple[Any, int]]]


class ControlPlane(DeployPipeline, Reconciler):
    """The control plane: its lifecycle, recovery after a crash, and main loop."""

    # -- lifecycle -------------------------------------------------------------
    async def run(
        self,
        stop_event: asyncio.Event,
        on_ready: Callable[[int], None] | None = None,
        internal_app: Any = None,
        serve_http: HttpFactory | None = None,
    ) -> None:
        self._lock.acquire()
        try:
            await self._run(stop_event, on_ready, internal_app, serve_http)
        finally:
            self._lock.release()

    async def _run(
        self,
        stop_event: asyncio.Event,
        on_ready: Callable[[int], None] | None,
        internal_app: Any,
        serve_http: HttpFactory | None,
    ) -> None:
        await self.recover()
        await asyncio.to_thread(self.svc.install_hooks)
        if self.router_process:
            self.router = RouterProcess(self.api.home, self.table, self.log)
        else:
            self.router = Router(
                self.table,
                internal_app=internal_app,
                access_key=self.api.access_key,
                waker=self.wake_deployment,
            )
        await self.update_routes()
        bound = await self.router.start(self.host, self.port)
        if self.frontdoor is not None:
            try:
                await self.frontdoor.start(self.router, bound, self.last_routes)
            except BaseException:
                await self.router.stop()
                raise
        elif isinstance(self.router, RouterProcess):
            await self.router.trust_edge(None)  # one adopted from a run with the edge
        if serve_http is not None:
            self.http, self.dashboard_port = await serve_http(
                self.edge_stats, self.host, self.port and bound
            )
        self.port = bound
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Nudge(
                self.wake, self.api.webhooks.notify, self.wake_deployment, self._add_waiter
            ),
            local_addr=(LOOPBACK, 0),
        )
        self._transport = transport
        control_port = transport.get_extra_info("sockname")[1]
        self.hooks = HookServer(self.api, self.cancel_deployment, self.log)
        try:
            await self.hooks.start()
        except OSError as exc:  # pushes then run the in-process hook
            self.log(f"warning: the hook socket could not be served: {exc}")
            self.hooks = None
        self._write_control_file(control_port)
        self.log(f"router listening on http://{self.host}:{bound}")
        if self.dashboard_port:
            self.log(
                f"dashboard and HTTP API on http://{self.host}:{self.dashboard_port}/"
                " ('tristage open' opens it signed in)"
            )
        problem = await asyncio.to_thread(self.runtimes.sandbox_problem)
        if problem and not self.runtimes.forced:
            self.log(f"warning: the sandbox cannot run here: {problem} (see 'tristage doctor')")
        if on_ready is not None:
            on_ready(bound)
        # what startup built lives as long as the process: out of the collector's way, so
        # a full collection walks only what came since (it paused the loop for tens of ms)
        gc.freeze()
        main = self._spawn_task(self._main_loop(stop_event), "reconcile")
        self._spawn_task(asyncio.to_thread(self._warm_up), "warm-up")
        self._spawn_task(self._scheduler(stop_event), "scheduler")
        self._spawn_task(asyncio.to_thread(self._resume_git_hosts), "git-hosts")
        self.monitor_runner = self.api.monitor.monitor(self.edge_stats, self.log)
        self._spawn_task(
            self.api.webhooks.run_forwarder(
                stop_event, self.svc.live_upstream, monitor=self.monitor_runner
            ),
            "forwarder",
        )
        self._spawn_task(self.monitor_runner.run(stop_event), "monitor")
        if os.environ.get("TRISTAGE_CRON", "on") != "off":
            self._spawn_task(self._cron(stop_event), "cron")
        try:
            await stop_event.wait()
        finally:
            await self.shutdown(main)

    def _warm_up(self) -> None:
        """Import, once the control plane serves, what the first push needs: the data
        stores (`api.data`: psycopg and the rest, a second or more on a busy machine),
        which no module of the control plane imports at its top, so that starting does
        not wait for them and the first push does not either. Only imports: a push that
        comes first waits on the same modules' import locks and finds them loaded, and
        `api.data` is still made where a push first asks for it."""
        try:
            from .data import DataService  # noqa: F401
        except Exception as exc:  # the push imports it again and says what failed
            self.log(f"warm-up: {type(exc).__name__}: {exc}")

    def _resume_git_hosts(self, starting: bool = True) -> None:
        """Git host deliveries answered but not acted on (before a stop, or by a router
        process that stopped); when `starting`, also the previews still to report."""
        try:
            n = self.api.git_hosts.resume(reports=starting, min_age=0 if starting else 60)
        except Exception as exc:  # never keeps the control plane from serving
            self.log(f"git host deliveries could not be resumed: {type(exc).__name__}: {exc}")
            return
        if n:
            self.log(f"acted on {n} git host deliver{'y' if n == 1 else 'ies'} left from before")

    async def shutdown(self, main: asyncio.Task[Any] | None = None) -> None:
        self.stopping = True
        self.log("stopping")
        if main is not None:
            main.cancel()
        if self.hooks is not None:
            await self.hooks.stop()
        for ctx in list(self.contexts.values()):
            ctx.cancel()
        for dep_id, task in list(self.pipelines.items()):
            task.cancel()
            await self.set_status(dep_id, Status.canceled, "canceled: the control plane stopped")
        if self.http is not None:
            await self.http.stop()
        if self.frontdoor is not None:
            await self.frontdoor.stop()
        if self.router is not None:
            await self.router.stop()
        await asyncio.gather(
            *(
                asyncio.to_thread(r.runtime.stop, r.handle, self.tuning.stop_grace)
                for r in self.releases.values()
            ),
            return_exceptions=True,
        )
        await self._db(self.records.clear)
        self.releases.clear()
        await self.reap("shutdown")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self._store.shutdown)
        if self._transport is not None:
            self._transport.close()
        with contextlib.suppress(FileNotFoundError):
            (self.api.home / CONTROL_FILE).unlink()
        self.log("stopped")

    def _write_control_file(self, control_port: int) -> None:
        info = {
            "pid": os.getpid(),
            "proc_start": proc_start(os.getpid()) or "?",
            "control_port": control_port,
            "router_host": self.host,
            "router_port": self.port,
            "dashboard_port": self.dashboard_port,
            "started_at": time.time(),
        }
        path = self.api.home / CONTROL_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(info))
        tmp.replace(path)

    async def recover(self) -> None:
        """After a crash: interrupted builds -> error; live releases re-adopted, others
        (and any whose supervising pump died) stopped."""
        for found in await self._db(self._recover_store):
            runtime = self.runtimes.for_handle(found.handle)
            key = process_key(found.dep.id, found.process)
            if not await asyncio.to_thread(runtime.adopt, found.handle):
                await self._db(self.records.forget, found.dep.id, found.process)
                self.log(f"{key} was not running; it will be started again")
                continue
            rel = Release(
                found.dep, found.handle, found.port, runtime, status="healthy",
                process=found.process,
            )  # fmt: skip
            self.releases[key] = rel
            where = f"port {rel.port}" if rel.port else "no port"
            self.log(f"{key} re-adopted ({runtime.name}, {where})")
            rel.task = self._spawn_task(supervise(self, rel), f"supervise-{key}")
        await self.reap("recovery")

    async def reap(self, when: str) -> None:
        """Stop this home's process groups that no release record names (started by a
        control plane that died before it recorded them): never two copies, none left."""
        known = [r.handle for r in self.releases.values()]
        for runtime in self.runtimes.opened():
            try:
                n = await asyncio.to_thread(runtime.reap, steps.runtime_scope(self.api), known)
            except OSError as exc:
                self.log(f"could not look for unrecorded releases: {exc}")
                continue
            if n:
                self.log(f"{when}: stopped {n} unrecorded release process group(s)")

    def _recover_store(self) -> list[Adoption]:
        """(store thread) Mark interrupted builds; the releases rows to adopt or stop."""
        store = self.api.store
        for row in store.query(
            "SELECT id FROM deployments WHERE status IN (?, ?)",
            (Status.building.value, Status.starting.value),
        ):
            self._set_status_now(row["id"], Status.error, "interrupted: the control plane stopped")
        out: list[Adoption] = []
        for rel in self.records.all():
            dep_row = store.query_one("SELECT * FROM deployments WHERE id=?", (rel.deployment,))
            if dep_row is None or dep_row["status"] != Status.ready.value:
                with contextlib.suppress(Exception):
                    self.runtimes.for_handle(rel.handle).stop(rel.handle, 0.5)
                self.records.forget(rel.deployment, rel.process)
                continue
            out.append(Adoption(Deployment.from_row(dep_row), rel.handle, rel.port, rel.process))
        return out

    # -- main loop ---------------------------------------------------------------
    async def _main_loop(self, stop_event: asyncio.Event) -> None:
        while not stop_event.is_set():
            self.wake.clear()
            # those who sent "wait" before this turn: its reconcile read their change
            waiting, self._waiting = self._waiting, set()
            try:
                # the reconcile first: a promote or rollback that woke the loop is served
                # after one read of the store, not three
                await self.reconcile()
                self._tell(waiting)
                await self._db(self.svc.pin_pushed)
                await self.claim_queued()
            except Exception as exc:  # keep serving whatever happens
                self.log(f"reconcile failed: {type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.tuning.tick)

    def _add_waiter(self, addr: tuple[str, int]) -> None:
        # into the set of now: each turn of the main loop takes the set and starts another
        self._waiting.add(addr)

    def _tell(self, waiting: set[tuple[str, int]]) -> None:
        """Tell the commands that sent "wait" that a reconcile since is done."""
        if self._transport is not None:
            for addr in waiting:
                with contextlib.suppress(OSError):
                    self._transport.sendto(b"reconciled", addr)

    async def _scheduler(self, stop_event: asyncio.Event) -> None:
        while not stop_event.is_set():
            try:
                ids = await asyncio.to_thread(self._due_backups)
                for backup in ids:
                    self.log(f"backup {backup} done")
            except Exception as exc:
                self.log(f"scheduled backups failed: {type(exc).__name__}: {exc}")
            try:
                for report in await asyncio.to_thread(self._due_cleanups):
                    if report.removed or report.retired:
                        self.log(
                            f"cleanup {report.project}: removed {len(report.removed)} "
                            f"deployments ({report.freed_bytes} bytes), retired "
                            f"{len(report.retired)} branches"
                        )
            except Exception as exc:
                self.log(f"scheduled cleanup failed: {type(exc).__name__}: {exc}")
            running = {r.dep.id for r in self.releases.values()} | set(self.pipelines)
            with contextlib.suppress(OSError):
                if n := await asyncio.to_thread(sweep_logs, self.api.home / "logs", running):
                    self.log(f"{n} log file(s) past their retention deleted")
            await asyncio.to_thread(self._resume_git_hosts, False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), 30.0)

    # `api.data` and `api.lifecycle` looked up in the thread too: made first, the data
    # stores are imported (seconds on a busy machine), which would stop the loop
    def _due_backups(self) -> list[str]:
        return self.api.data.run_due_backups(dt.datetime.now(dt.UTC))

    def _due_cleanups(self) -> list[CleanupReport]:
        return self.api.lifecycle.cleanup.run_due()

    async def _cron(self, stop_event: asyncio.Event) -> None:
        """Scheduled jobs: start the due ones every few seconds (services/cron.py)."""
        cron = self.api.cron
        monitor = self.monitor_runner

        def alert(project: str, env: str, dep: str, message: str) -> None:
            cfg = self.api.config_for(project)
            monitor.raise_alert(cfg, project, env, dep, Kind.cron_failed, "error", message, {})

        cron.alert = alert
        if n := await asyncio.to_thread(cron.recover):
            self.log(f"{n} cron run(s) interrupted by the last stop")
        every = float(os.environ.get("TRISTAGE_CRON_TICK", "10"))
        while not stop_event.is_set():
            try:
                for run in await asyncio.to_thread(cron.tick):
                    self.log(f"cron run {run} started")
            except Exception as exc:
                self.log(f"scheduled jobs failed: {type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), every)


class _Nudge(asyncio.DatagramProtocol):
    """A command changed the desired state, or the router process stored a webhook
    delivery: reconcile, and look for deliveries to forward, now. A command that sent
    `wait` (a promote, a rollback) is sent `reconciled` once a reconcile that started
    after it is done, so it looks at the store then instead of polling it."""

    def __init__(
        self,
        wake: asyncio.Event,
        deliveries: Callable[[], None],
        wake_deployment: Callable[[str], None],
        waiter: Callable[[tuple[str, int]], None],
    ) -> None:
        self.wake = wake
        self.deliveries = deliveries
        self.wake_deployment = wake_deployment
        self.waiter = waiter

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if data == b"wait":
            self.waiter((str(addr[0]), int(addr[1])))
        elif data.startswith(b"wake ") and len(data) < 128:
            # the router holds a request for a sleeping deployment
            self.wake_deployment(data[5:].decode("ascii", "replace").strip())
        self.wake.set()
        self.deliveries()
