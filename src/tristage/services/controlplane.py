"""The control plane (`tristage up`): reconciles the state store with the machine.

One asyncio loop hosts:

- the **router** (its route table is recomputed from the aliases on every change);
- the **deploy worker**: claims queued deployments, builds them in a thread
  (one build at a time), runs the migration, starts the release and
  health-checks it; only then is the deployment `ready` and its environment's
  alias moved to it;
- the **supervisor**: restarts crashed releases with backoff, marks a crash
  loop `crashed`, drains and stops releases nothing points at any more, and keeps
  the last N production releases warm for instant rollback;
- a **nudge socket** (UDP on loopback, port in `controlplane.json`): commands
  write their intent to the store and send a datagram so it is acted on at once;
- the backup scheduler and the webhook forwarder of the other services.

The loop never touches the state store itself: every read and write of the
control plane runs on one dedicated **store thread** (`_db`), in the order it was
issued, so a write lock held elsewhere (busy timeout up to 15 s) delays only the
control plane's bookkeeping, never a proxied request. Reconciling is split into
reading the desired state (store thread) and acting on it (loop: route table
swap, process start and stop, draining); reconciles run one at a time, and an
alias switch is recorded (`routed`) only after the router serves it.

The blocking build and migration steps and the process environments live in
`pipeline_steps.py`; the `Release` record and the supervisor's `Tuning` in
`releases.py`.

State lives in the store, never only in memory: after a `kill -9` a new control
plane re-adopts live releases (pid + kernel start time), restarts dead ones,
marks interrupted builds `error`, and serves the same aliases.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from ..domain import aliases as alias_domain
from ..domain.config import FILE_NAME, ProcessSettings, parse_config
from ..domain.deployments import Deployment, Status, warm_set
from ..edges.builders import BuildContext, BuildLog
from ..edges.router import Route, Router, RouteTable
from ..edges.runtime import Process, alive, free_port, proc_start, spawn, stop
from ..errors import TristageError
from . import pipeline_steps as steps
from .deploys import CONTROL_FILE
from .releases import (
    LOOPBACK,
    Adoption,
    DesiredState,
    ProjectRoutes,
    Release,
    StartFailed,
    Tuning,
    release_row,
)

if TYPE_CHECKING:
    from ..api import Tristage

T = TypeVar("T")


class ControlPlane:
    def __init__(
        self,
        api: Tristage,
        host: str = "127.0.0.1",
        port: int = 8080,
        tuning: Tuning | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.api = api
        self.svc = api.deploys
        self.host = host
        self.port = port
        self.tuning = tuning or Tuning.from_env()
        self._log = log or (lambda line: print(line, flush=True))
        self.table = RouteTable()
        self.router: Router | None = None
        self.releases: dict[str, Release] = {}
        self.bringing_up: set[str] = set()
        self.pipelines: dict[str, asyncio.Task[None]] = {}
        self.contexts: dict[str, BuildContext] = {}
        self.failed_starts: dict[str, float] = {}
        self.retiring: set[str] = set()
        self.wake = asyncio.Event()
        self.stopping = False
        self.build_slots = asyncio.Semaphore(self.tuning.builds)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._transport: asyncio.DatagramTransport | None = None
        self._settings: dict[str, ProcessSettings] = {}
        self.http: Any = None  # the HTTP API + dashboard server (http/app.py)
        self.dashboard_port: int | None = None
        # the control plane's store work, one call at a time in issue order
        self._store = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tristage-store")
        self._reconciling = asyncio.Lock()

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

    # -- lifecycle -------------------------------------------------------------
    async def run(
        self, stop_event: asyncio.Event, on_ready: Callable[[int], None] | None = None
    ) -> None:
        from ..http.internal import build_internal_app

        other = self.svc.controlplane()
        if other is not None and other.pid != os.getpid():
            raise TristageError(
                f"a control plane is already running (pid {other.pid}, port {other.router_port})",
                "stop it first, or use its router",
            )
        await self.recover()
        self.router = Router(self.table, internal_app=build_internal_app(self.api))
        await self.update_routes()
        bound = await self.router.start(self.host, self.port)
        from ..http.app import serve_for_control_plane

        self.http, self.dashboard_port = await serve_for_control_plane(
            self.api.home, self.router.stats, self.host, self.port and bound
        )
        self.port = bound
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Nudge(self.wake), local_addr=(LOOPBACK, 0)
        )
        self._transport = transport
        control_port = transport.get_extra_info("sockname")[1]
        self._write_control_file(control_port)
        self.log(f"router listening on http://{self.host}:{bound}")
        self.log(f"dashboard and HTTP API on http://{self.host}:{self.dashboard_port}/")
        if on_ready is not None:
            on_ready(bound)
        main = self._spawn_task(self._main_loop(stop_event), "reconcile")
        self._spawn_task(self._scheduler(stop_event), "scheduler")
        self._spawn_task(
            self.api.webhooks.run_forwarder(stop_event, self.svc.live_upstream), "forwarder"
        )
        self._spawn_task(
            self.api.monitor.monitor(self.router.stats, self.log).run(stop_event), "monitor"
        )
        try:
            await stop_event.wait()
        finally:
            await self.shutdown(main)

    async def shutdown(self, main: asyncio.Task[Any] | None = None) -> None:
        self.stopping = True
        self.log("stopping")
        if main is not None:
            main.cancel()
        for ctx in list(self.contexts.values()):
            ctx.cancel()
        for dep_id, task in list(self.pipelines.items()):
            task.cancel()
            await self._set_status(dep_id, Status.canceled, "canceled: the control plane stopped")
        if self.http is not None:
            await self.http.stop()
        if self.router is not None:
            await self.router.stop()
        await asyncio.gather(
            *(
                asyncio.to_thread(stop, r.proc, self.tuning.stop_grace)
                for r in self.releases.values()
            ),
            return_exceptions=True,
        )
        for r in self.releases.values():
            if r.popen is not None:
                r.popen.poll()
        await self._db(self.api.store.execute, "DELETE FROM releases")
        self.releases.clear()
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
        tmp.write_text(json.dumps(info))
        tmp.replace(path)

    async def recover(self) -> None:
        """After a crash: interrupted builds -> error; live releases re-adopted."""
        for found in await self._db(self._recover_store):
            rel = Release(found.dep, found.proc, found.port, None, status="healthy")
            self.releases[found.dep.id] = rel
            self.log(f"{found.dep.id} re-adopted (pid {found.proc.pid}, port {rel.port})")
            rel.task = self._spawn_task(self._supervise(rel), f"supervise-{found.dep.id}")

    def _recover_store(self) -> list[Adoption]:
        """(store thread) Mark interrupted builds, forget dead releases: what to re-adopt."""
        store = self.api.store
        for row in store.query(
            "SELECT id FROM deployments WHERE status IN (?, ?)",
            (Status.building.value, Status.starting.value),
        ):
            self._set_status_now(row["id"], Status.error, "interrupted: the control plane stopped")
        out: list[Adoption] = []
        for row in store.query("SELECT * FROM releases"):
            proc = Process(row["pid"], row["pgid"], row["proc_start"])
            dep_row = store.query_one("SELECT * FROM deployments WHERE id=?", (row["deployment"],))
            if dep_row is None or not alive(proc):
                store.execute("DELETE FROM releases WHERE deployment=?", (row["deployment"],))
                continue
            dep = Deployment.from_row(dep_row)
            if dep.status != Status.ready:
                self._spawn_stop(proc)
                store.execute("DELETE FROM releases WHERE deployment=?", (dep.id,))
                continue
            out.append(Adoption(dep, proc, row["port"]))
        return out

    def _spawn_stop(self, proc: Process) -> None:
        stop(proc, 0.5)

    # -- main loop ---------------------------------------------------------------
    async def _main_loop(self, stop_event: asyncio.Event) -> None:
        while not stop_event.is_set():
            self.wake.clear()
            try:
                await self.claim_queued()
                await self.reconcile()
            except Exception as exc:  # keep serving whatever happens
                self.log(f"reconcile failed: {type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.tuning.tick)

    async def _scheduler(self, stop_event: asyncio.Event) -> None:
        while not stop_event.is_set():
            try:
                ids = await asyncio.to_thread(
                    self.api.data.run_due_backups, dt.datetime.now(dt.UTC)
                )
                for backup in ids:
                    self.log(f"backup {backup} done")
            except Exception as exc:
                self.log(f"scheduled backups failed: {type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), 30.0)

    async def claim_queued(self) -> None:
        for dep in await self._db(self._claim_rows, 8 - len(self.pipelines)):
            self.pipelines[dep.id] = self._spawn_task(self._pipeline(dep), f"deploy-{dep.id}")

    def _claim_rows(self, slots: int) -> list[Deployment]:
        """(store thread) Move up to `slots` queued deployments to `building`, oldest first."""
        store = self.api.store
        claimed: list[Deployment] = []
        while len(claimed) < slots:
            if (
                store.query_one("SELECT 1 FROM deployments WHERE status=? LIMIT 1", ("queued",))
                is None
            ):
                break  # the common case on a nudge: no write transaction
            with store.transaction():
                row = store.query_one(
                    "SELECT * FROM deployments WHERE status=? ORDER BY seq LIMIT 1",
                    (Status.queued.value,),
                )
                if row is None:
                    break
                store.execute(
                    "UPDATE deployments SET status=?, updated_at=? WHERE id=?",
                    (Status.building.value, time.time(), row["id"]),
                )
            claimed.append(Deployment.from_row({**row, "status": Status.building.value}))
        return claimed

    # -- the deploy pipeline -------------------------------------------------------
    async def _pipeline(self, dep: Deployment) -> None:
        log = BuildLog(
            self.svc.log_path(dep.project, dep.id, build=True),
            await self._db(self.api.variables.redactor, dep.project),
        )
        self.log(
            f"{dep.id} {dep.project}/{dep.environment} {dep.branch}@{dep.commit[:7]}: building"
        )
        track = functools.partial(self._track, dep.id)
        try:
            async with self.build_slots:
                artifact, web, build_hash = await asyncio.to_thread(
                    steps.build_artifact, self.api, dep, log, self._settings_for, track
                )
            dep = await self._db(steps.mark_built, self.api, dep.id, artifact, web, build_hash)
            await asyncio.to_thread(
                steps.run_migration, self.api, dep, log, self._settings_for, track
            )
            log.line("> starting the release")
            started = time.monotonic()
            rel = await self._start_release(dep, log)
            log.line(f"  healthy in {time.monotonic() - started:.2f}s on port {rel.port}")
        except asyncio.CancelledError:
            log.line("canceled: the control plane stopped")
            raise
        except (TristageError, OSError) as exc:
            reason = str(exc)
            log.line(f"error: {reason}")
            await self._set_status(dep.id, Status.error, reason)
            self.log(f"{dep.id} error: {reason}")
            return
        finally:
            self.pipelines.pop(dep.id, None)
            self.contexts.pop(dep.id, None)
        rel.dep = await self._db(steps.mark_ready, self.api, dep)
        await self.reconcile()
        url = await self._db(self.svc.environment_url, dep.project, dep.environment)
        log.line(f"ready: {url}")
        log.close()
        self.log(f"{dep.id} ready: {url}")

    def _track(self, dep_id: str, ctx: BuildContext) -> None:
        """Remember a deployment's running build step so shutdown can cancel it."""
        self.contexts[dep_id] = ctx

    def _settings_for(self, dep: Deployment) -> ProcessSettings:
        cached = self._settings.get(dep.id)
        if cached is not None:
            return cached
        cfg = self.api.config_for(dep.project)
        if dep.artifact and (Path(dep.artifact) / FILE_NAME).is_file():
            text = (Path(dep.artifact) / FILE_NAME).read_text(encoding="utf-8")
            cfg = parse_config(text, f"{dep.commit[:7]}:{FILE_NAME}")
        settings = (
            cfg.settings(dep.environment)
            if dep.environment in cfg.environments
            else (self.api.config_for(dep.project).settings(dep.environment))
        )
        self._settings[dep.id] = settings
        return settings

    # -- releases ---------------------------------------------------------------
    async def _start_release(
        self, dep: Deployment, log: BuildLog | None = None, port: int | None = None
    ) -> Release:
        settings = await self._db(self._settings_for, dep)
        if not dep.artifact or not dep.web or not Path(dep.artifact).is_dir():
            raise StartFailed(f"deployment {dep.id} has no artifact", "redeploy it")
        port = port or free_port()
        env = await self._db(steps.runtime_env, self.api, dep, port)
        proc, popen = spawn(
            dep.web,
            Path(dep.artifact),
            env,
            self.svc.log_path(dep.project, dep.id, build=False),
            dep.project,
            self.api.home,
        )
        rel = Release(dep, proc, port, popen)
        await self._save_release(rel)
        ok, why = await self._health(rel, settings)
        if not ok:
            await asyncio.to_thread(stop, proc, 1.0)
            popen.poll()
            await self._forget_release(dep.id)
            raise StartFailed(why, f"see 'tristage logs {dep.id}'")
        rel.status = "healthy"
        old = self.releases.get(dep.id)
        self.releases[dep.id] = rel
        await self._save_release(rel)
        if old is None or old.task is None or old.task.done():
            rel.task = self._spawn_task(self._supervise(rel), f"supervise-{dep.id}")
        return rel

    async def _save_release(self, rel: Release) -> None:
        """Record the release as it is now (its row is taken on the loop, written after)."""
        await self._db(self._write_release, release_row(rel, time.time()))

    def _write_release(self, row: tuple[Any, ...]) -> None:
        self.api.store.execute(
            "INSERT INTO releases (deployment, pid, pgid, proc_start, port, status, restarts,"
            " started_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (deployment) DO UPDATE SET"
            " pid=excluded.pid, pgid=excluded.pgid, proc_start=excluded.proc_start,"
            " port=excluded.port, status=excluded.status, restarts=excluded.restarts",
            row,
        )

    async def _forget_release(self, dep_id: str) -> None:
        await self._db(self.api.store.execute, "DELETE FROM releases WHERE deployment=?", (dep_id,))

    async def _health(self, rel: Release, settings: ProcessSettings) -> tuple[bool, str]:
        path = settings.health_path or "/"
        timeout = settings.health_timeout or 30.0
        url = f"http://{LOOPBACK}:{rel.port}{path}"
        deadline = time.monotonic() + timeout
        last = "no answer"
        delay = 0.02
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if rel.exited():
                    code = rel.exit_code()
                    return False, (
                        f"the web process exited (code {code}) before answering its health check"
                    )
                try:
                    resp = await client.get(url)
                    if resp.status_code < 400:
                        return True, ""
                    last = f"HTTP {resp.status_code}"
                except httpx.HTTPError as exc:
                    last = type(exc).__name__
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 0.25)
        return (
            False,
            f"health check GET {path} did not answer 2xx/3xx within {timeout:g}s (last: {last})",
        )

    async def _supervise(self, rel: Release) -> None:
        tuning = self.tuning
        while not self.stopping:
            await asyncio.sleep(0.2)
            current = self.releases.get(rel.dep.id)
            if current is None or rel.status in ("draining", "stopped"):
                return
            if current is not rel:
                rel = current
            if not rel.exited():
                continue
            code = rel.exit_code()
            now = time.time()
            rel.crashes = [t for t in rel.crashes if now - t < tuning.crash_window] + [now]
            if len(rel.crashes) >= tuning.crash_limit:
                reason = (
                    f"crash loop: the web process exited {len(rel.crashes)} times within "
                    f"{tuning.crash_window:g}s (last exit code {code})"
                )
                self.releases.pop(rel.dep.id, None)
                await self._forget_release(rel.dep.id)
                await self._set_status(rel.dep.id, Status.crashed, reason)
                self.log(f"{rel.dep.id} crashed: {reason}")
                await self.reconcile()
                return
            backoff = tuning.restart_backoff[
                min(len(rel.crashes) - 1, len(tuning.restart_backoff) - 1)
            ]
            self.log(f"{rel.dep.id} exited (code {code}); restarting in {backoff:g}s")
            rel.status = "restarting"
            await asyncio.sleep(backoff)
            if self.stopping or self.releases.get(rel.dep.id) is not rel:
                return
            settings = await self._db(self._settings_for, rel.dep)
            env = await self._db(steps.runtime_env, self.api, rel.dep, rel.port)
            if self.stopping or self.releases.get(rel.dep.id) is not rel:
                return
            proc, popen = spawn(
                rel.dep.web or "",
                Path(rel.dep.artifact or "."),
                env,
                self.svc.log_path(rel.dep.project, rel.dep.id, build=False),
                rel.dep.project,
                self.api.home,
            )
            rel.proc, rel.popen = proc, popen
            await self._save_release(rel)
            ok, why = await self._health(rel, settings)
            if ok:
                rel.status = "healthy"
                await self._save_release(rel)
                self.log(f"{rel.dep.id} restarted (pid {proc.pid})")
            else:
                self.log(f"{rel.dep.id} restart failed: {why}")
                await asyncio.to_thread(stop, proc, 1.0)

    async def _bring_up(self, dep: Deployment) -> None:
        try:
            await self._start_release(dep)
            self.log(f"{dep.id} started (port {self.releases[dep.id].port})")
        except TristageError as exc:
            self.failed_starts[dep.id] = time.monotonic()
            self.log(f"{dep.id} could not start: {exc}")
        finally:
            self.bringing_up.discard(dep.id)
        self.wake.set()

    async def _retire(self, rel: Release, drain: float) -> None:
        """Let requests in flight finish on the old release, then stop it."""
        dep_id = rel.dep.id
        try:
            rel.status = "draining"
            await self._save_release(rel)
            deadline = time.monotonic() + drain
            await asyncio.sleep(min(0.2, drain))
            while (
                time.monotonic() < deadline and self.router and self.router.inflight(rel.upstream)
            ):
                await asyncio.sleep(0.05)
            if dep_id in self._wanted:
                rel.status = "healthy"
                await self._save_release(rel)
                return
            self.releases.pop(dep_id, None)
            await asyncio.to_thread(stop, rel.proc, self.tuning.stop_grace)
            if rel.popen is not None:
                rel.popen.poll()
            await self._forget_release(dep_id)
            self.log(f"{dep_id} stopped (drained)")
        finally:
            self.retiring.discard(dep_id)

    # -- reconcile ---------------------------------------------------------------
    _wanted: set[str] = set()

    async def reconcile(self) -> None:
        """Switch aliases whose target is healthy, start what should run, stop the rest.

        The desired state is read on the store thread; the switch, starts and stops
        happen on the loop. One reconcile at a time, so a table built from an older
        read never undoes a switch."""
        if self.stopping:
            return
        async with self._reconciling:
            began = time.perf_counter()
            state = await self._db(self._read_desired)
            if self.stopping:
                return
            await self._act(state, began)

    async def _act(self, state: DesiredState, began: float) -> None:
        ready = state.ready
        switched: list[dict[str, Any]] = []
        for row in state.aliases:
            desired, routed = row["desired"], row["routed"]
            if desired and desired != routed and desired in ready:
                rel = self.releases.get(desired)
                if rel is not None and rel.status == "healthy":
                    switched.append(row)
        self._wanted = state.wanted | set(self.pipelines)
        # 1. swap the router first, then record what it serves
        pending = {(r["project"], r["environment"]): r["desired"] for r in switched}
        self._install_routes(state.routes, pending)
        if switched:
            await self._db(self._record_switches, switched, time.time())
            took = (time.perf_counter() - began) * 1000
            for row in switched:
                self.log(
                    f"{row['project']}/{row['environment']} now serves {row['desired']}"
                    f" (was {row['routed'] or 'nothing'}; {took:.1f} ms)"
                )
        # 2. start what should run
        for dep_id in state.wanted:
            if dep_id in self.releases or dep_id in self.bringing_up or dep_id in self.pipelines:
                continue
            failed = self.failed_starts.get(dep_id)
            if failed is not None and time.monotonic() - failed < 30:
                continue
            self.bringing_up.add(dep_id)
            dep = Deployment.from_row(ready[dep_id])
            self._spawn_task(self._bring_up(dep), f"start-{dep_id}")
        # 3. drain and stop what nothing points at
        for dep_id, rel in list(self.releases.items()):
            if dep_id in self._wanted or dep_id in self.retiring or rel.status != "healthy":
                continue
            drain = state.drain_seconds.get(rel.dep.project)
            if drain is None:
                continue  # its project's configuration is unreadable: leave it running
            self.retiring.add(dep_id)
            self._spawn_task(self._retire(rel, drain), f"retire-{dep_id}")

    def _read_desired(self) -> DesiredState:
        """(store thread) What should be served and running, as the store says now."""
        store = self.api.store
        wanted: set[str] = set()
        ready = {
            r["id"]: r
            for r in store.query("SELECT * FROM deployments WHERE status=?", (Status.ready.value,))
        }
        aliases = store.query("SELECT * FROM aliases")
        for row in aliases:
            desired, routed = row["desired"], row["routed"]
            if routed:
                wanted.add(routed)
            if desired and desired != routed and desired in ready:
                wanted.add(desired)
        drain: dict[str, float] = {}
        for project in [r["name"] for r in store.query("SELECT name FROM projects")]:
            try:
                cfg = self.api.config_for(project)
            except TristageError:
                continue
            drain[project] = cfg.app.drain_seconds
            prod = cfg.production
            for row in store.query(
                "SELECT branch, id FROM deployments WHERE project=? AND status=? AND trigger != ?"
                " AND seq IN (SELECT MAX(seq) FROM deployments WHERE project=? AND status=?"
                " AND trigger != ? GROUP BY branch)",
                (project, Status.ready.value, "promote", project, Status.ready.value, "promote"),
            ):
                wanted.add(row["id"])
            if prod and cfg.app.keep_warm:
                history = self.svc.alias_history(project, prod, limit=200)
                current = next(
                    (r["routed"] for r in aliases
                     if r["project"] == project and r["environment"] == prod), None,
                )  # fmt: skip
                wanted.update(warm_set(history, current, cfg.app.keep_warm, set(ready)))
        wanted &= set(ready)
        return DesiredState(ready, aliases, wanted, self._read_routes(), drain)

    def _record_switches(self, switched: list[dict[str, Any]], now: float) -> None:
        """(store thread) The router serves these desired deployments now: record it."""
        store = self.api.store
        for row in switched:
            with store.transaction():
                store.execute(
                    "UPDATE aliases SET routed=?, routed_at=? WHERE project=? AND environment=?",
                    (row["desired"], now, row["project"], row["environment"]),
                )
                store.execute(
                    "INSERT INTO alias_history (project, environment, deployment, at)"
                    " VALUES (?,?,?,?)",
                    (row["project"], row["environment"], row["desired"], now),
                )
                self.api.audit.record(
                    "alias.switch",
                    project=row["project"],
                    environment=row["environment"],
                    target=row["desired"],
                    details={"from": row["routed"]},
                )

    async def update_routes(self) -> None:
        """Rebuild the router's table from the aliases as the store has them."""
        async with self._reconciling:
            self._install_routes(await self._db(self._read_routes), {})

    def _read_routes(self) -> list[ProjectRoutes]:
        """(store thread) Each project's hosts: aliases, branches and deployments."""
        store = self.api.store
        out: list[ProjectRoutes] = []
        for project in [r["name"] for r in store.query("SELECT name FROM projects")]:
            try:
                cfg = self.api.config_for(project)
            except TristageError:
                continue
            live: dict[str, str | None] = {
                r["environment"]: r["routed"]
                for r in store.query("SELECT * FROM aliases WHERE project=?", (project,))
            }
            deps = [
                alias_domain.DeploymentRef(r["id"], r["environment"], r["branch"])
                for r in store.query(
                    "SELECT id, environment, branch FROM deployments WHERE project=? AND status=?"
                    " ORDER BY seq DESC LIMIT 200",
                    (project, Status.ready.value),
                )
            ]
            branch_latest: dict[str, alias_domain.DeploymentRef] = {}
            for r in store.query(
                "SELECT id, environment, branch FROM deployments WHERE project=? AND status=?"
                " AND trigger != 'promote' ORDER BY seq",
                (project, Status.ready.value),
            ):
                branch_latest[r["branch"]] = alias_domain.DeploymentRef(
                    r["id"], r["environment"], r["branch"]
                )
            out.append(
                ProjectRoutes(
                    project, cfg.production, tuple(cfg.environments), live, branch_latest, deps
                )
            )
        return out

    def _install_routes(
        self, routes: list[ProjectRoutes], pending: dict[tuple[str, str], str]
    ) -> None:
        """(loop) Swap the router's table: each host to its running, undrained release."""
        table: dict[str, Route] = {}
        for pr in routes:
            live = dict(pr.live)
            for (p, env), dep_id in pending.items():
                if p == pr.project:
                    live[env] = dep_id
            hosts = alias_domain.host_table(
                pr.project, pr.production, list(pr.environments), live, pr.branch_latest, pr.deps
            )
            for host, target in hosts.items():
                rel = self.releases.get(target.deployment) if target.deployment else None
                upstream = rel.upstream if rel is not None and rel.status != "draining" else None
                table[host] = Route(pr.project, target.environment, target.deployment, upstream)
        self.table.replace(table)

    # -- store helpers -------------------------------------------------------------
    async def _set_status(self, dep_id: str, status: Status, reason: str | None = None) -> None:
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


class _Nudge(asyncio.DatagramProtocol):
    def __init__(self, wake: asyncio.Event) -> None:
        self.wake = wake

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.wake.set()


def run_foreground(
    api: Tristage, host: str, port: int, log: Callable[[str], None] | None = None
) -> None:
    """`tristage up`: run until SIGINT/SIGTERM, then stop children and exit cleanly."""
    import signal

    async def main() -> None:
        stop_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_event.set)
        await ControlPlane(api, host, port, log=log).run(stop_event)

    asyncio.run(main())
