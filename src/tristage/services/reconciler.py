"""The reconciler: makes what runs and what the router serves match the store.

A reconcile reads the desired state on the store thread (ready deployments,
aliases, what should run, each project's host table) and acts on the loop:
swap the router's table first, then record the switches it now serves; start
the releases that should run; drain and stop those nothing points at any more.
Reconciles run one at a time, so a table built from an older read never undoes a
switch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from typing import Any

from ..domain import aliases as alias_domain
from ..domain.access import PASSWORD_VARIABLE, Access, hash_password
from ..domain.config import parse_duration
from ..domain.deployments import Deployment, Status, warm_set
from ..domain.processes import WEB, WEB_1, ProcessName, formation, replicas
from ..edges.router import Route
from ..errors import TristageError
from .plane_core import PlaneCore
from .project_records import project_names
from .releases import DesiredState, ProjectRoutes, Release, process_key


def switch_now(healthy: list[bool], ready_at: float | None, desired_at: float | None) -> bool:
    """Whether an alias moves to its desired deployment now, given which of the web
    processes it is to run are healthy.

    A deployment that just became ready (a deploy: the alias is asked to move the moment
    it is ready) takes the traffic once all its web processes are healthy, so the switch
    never lowers the capacity serving. One that was ready before the move was asked for
    (a rollback or a promote within production, to a warm release running one web
    process) takes it as soon as one is healthy: the switch is instant and the missing
    replicas come up behind it. Keeping every replica of each rollback target warm
    instead would run `keep_warm` times the formation for releases that rarely serve."""
    if healthy and all(healthy):
        return True
    moved_to_earlier = ready_at is not None and desired_at is not None and ready_at < desired_at
    return moved_to_earlier and any(healthy)


class Reconciler(PlaneCore):
    """The reconcile half of the control plane (mixed into `ControlPlane`)."""

    _wanted: set[str] = set()
    _wanted_keys: set[str] = set()
    _routes_cache: list[ProjectRoutes] | None = None

    async def _bring_up(self, dep: Deployment, process: ProcessName = WEB_1) -> None:
        key = process_key(dep.id, process)
        try:
            rel = await self.start_release(dep, process=process)
            where = f"port {rel.port}" if rel.port else "no port"
            self.log(f"{key} started ({where})")
        except TristageError as exc:
            self.failed_starts[key] = time.monotonic()
            self.waking.discard(dep.id)  # held requests get the 503 now
            self.log(f"{key} could not start: {exc}")
        finally:
            self.bringing_up.discard(key)
        self.wake.set()

    async def _retire(self, rel: Release, drain: float) -> None:
        """Let requests in flight finish on the old process, then stop it."""
        key = rel.key
        try:
            rel.status = "draining"
            self.reroute()
            if self.frontdoor is not None:
                await self.frontdoor.flush()  # HAProxy sends it no new request from here on
            await self.save_release(rel)
            deadline = time.monotonic() + drain
            if rel.process.is_web:
                await asyncio.sleep(min(0.2, drain))
                while time.monotonic() < deadline and await self.inflight_now(rel.upstream):
                    await asyncio.sleep(0.05)
            if key in self._wanted_keys:
                rel.status = "healthy"
                await self.save_release(rel)
                self.reroute()
                return
            self.releases.pop(key, None)
            await asyncio.to_thread(rel.runtime.stop, rel.handle, self.tuning.stop_grace)
            await self.forget_release(rel.dep.id, rel.process)
            self.log(f"{key} stopped (drained)")
        finally:
            self.retiring.discard(key)

    async def _flush_edges(self) -> None:
        """Wait until the router process and the edge in front of it (each working on
        the new table since `_install_routes`) both serve it: at the same time, so a
        switch takes the slower of the two, not their sum."""
        waits: list[tuple[str, Any]] = []
        if self.router is not None:
            waits.append(("the router process", self.router.flush()))
        if self.frontdoor is not None:
            waits.append(("the edge", self.frontdoor.flush()))
        done = await asyncio.gather(*(w for _, w in waits))
        for (who, _), ok in zip(waits, done, strict=True):
            if not ok:
                self.log(f"{who} did not take the new routes in time")

    def reroute(self) -> None:
        if self._routes_cache is not None:
            self._install_routes(self._routes_cache, {})

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
        wanted = state.wanted - self._fall_asleep(state)
        wanted_procs = {
            dep_id: formation(state.formations.get(dep_id, {WEB: 1})) for dep_id in wanted
        }
        switched: list[dict[str, Any]] = []
        for row in state.aliases:
            desired, routed = row["desired"], row["routed"]
            if desired and desired != routed and desired in ready:
                webs = [p for p in wanted_procs.get(desired, [WEB_1]) if p.is_web]
                rels = [self.releases.get(process_key(desired, p)) for p in webs]
                up = [r is not None and r.status == "healthy" for r in rels]
                if switch_now(up, ready[desired].get("ready_at"), row.get("desired_at")):
                    switched.append(row)
        self._wanted = wanted | set(self.pipelines)
        self._wanted_keys = {
            process_key(dep_id, p) for dep_id, procs in wanted_procs.items() for p in procs
        } | set(self.pipelines)
        # 1. swap the router first, then record what it serves
        pending = {(r["project"], r["environment"]): r["desired"] for r in switched}
        self._install_routes(state.routes, pending)
        if switched:
            await self._flush_edges()
        if switched:
            await self._db(self._record_switches, switched, time.time())
            took = (time.perf_counter() - began) * 1000
            for row in switched:
                self.log(
                    f"{row['project']}/{row['environment']} now serves {row['desired']}"
                    f" (was {row['routed'] or 'nothing'}; {took:.1f} ms)"
                )
        # 2. start what should run: web.1 first, the other processes once it runs, web
        # replicas one at a time (each health-checked before the next starts)
        for dep_id, procs in wanted_procs.items():
            if dep_id in self.pipelines:
                continue
            web_starting = any(
                process_key(dep_id, p) in self.bringing_up for p in procs if p.is_web
            )
            for p in procs:
                key = process_key(dep_id, p)
                if key in self.releases or key in self.bringing_up:
                    continue
                if p != WEB_1 and dep_id not in self.releases:
                    break
                if p.is_web and web_starting:
                    continue
                failed = self.failed_starts.get(key)
                if failed is not None and time.monotonic() - failed < 30:
                    continue
                web_starting = web_starting or p.is_web
                self.bringing_up.add(key)
                dep = Deployment.from_row(ready[dep_id])
                self._spawn_task(self._bring_up(dep, p), f"start-{key}")
        # 3. drain and stop what nothing points at (a deployment, or a scaled-down process)
        for key, rel in list(self.releases.items()):
            if key in self._wanted_keys or key in self.retiring:
                continue
            if rel.status not in ("healthy", "unhealthy", "crashed"):  # these stop too
                continue
            drain = state.drain_seconds.get(rel.dep.project)
            if drain is None:
                continue  # its project's configuration is unreadable: leave it running
            self.retiring.add(key)
            self._spawn_task(self._retire(rel, drain), f"retire-{key}")

    def _fall_asleep(self, state: DesiredState) -> set[str]:
        """(loop) The branch and pull-request previews that sleep now: those idle (no
        request, by the router's counters) for their environment's `sleep_after`."""
        now = time.time()
        self.asleep &= set(state.sleepers)  # one that became an environment's: awake
        stats = self.edge_stats()
        for dep_id, after in state.sleepers.items():
            rel = self.releases.get(dep_id)
            if dep_id in self.asleep or rel is None or rel.status != "healthy":
                continue
            since = self.awake_since.setdefault(dep_id, now)
            seen = stats.get(dep_id)
            last = seen.last_request_at if seen is not None else None
            idle = now - max(since, last or 0.0)
            if idle >= after:
                self.asleep.add(dep_id)
                self.log(f"{dep_id} sleeps (no request for {idle:.0f} s)")
        return self.asleep

    def wake_deployment(self, dep_id: str) -> None:
        """(loop) A request came for a sleeping deployment: start it again now."""
        if dep_id in self.asleep:
            self.asleep.discard(dep_id)
            self.waking.add(dep_id)  # its host holds requests until it serves
            self.awake_since[dep_id] = time.time()
            self.log(f"{dep_id} wakes (a request came)")
            self.wake.set()

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
        sleepers: dict[str, float] = {}
        aliased = {r["routed"] for r in aliases} | {r["desired"] for r in aliases}
        for project in project_names(store):
            try:
                cfg = self.api.config_for(project)
            except TristageError:
                continue
            drain[project] = cfg.app.drain_seconds
            prod = cfg.production
            for row in store.query(
                "SELECT branch, id, environment FROM deployments"
                " WHERE project=? AND status=? AND trigger != ?"
                " AND seq IN (SELECT MAX(seq) FROM deployments WHERE project=? AND status=?"
                " AND trigger != ? GROUP BY branch)"
                " AND branch NOT IN (SELECT branch FROM stopped_branches WHERE project=?)",
                (*(project, Status.ready.value, "promote") * 2, project),
            ):
                wanted.add(row["id"])
                env_cfg = cfg.environments.get(row["environment"])
                if env_cfg is not None and env_cfg.sleep_after and row["id"] not in aliased:
                    sleepers[row["id"]] = parse_duration(env_cfg.sleep_after)
            if prod and cfg.app.keep_warm:
                history = self.svc.alias_history(project, prod, limit=200)
                current = next(
                    (r["routed"] for r in aliases
                     if r["project"] == project and r["environment"] == prod), None,
                )  # fmt: skip
                wanted.update(warm_set(history, current, cfg.app.keep_warm, set(ready)))
        wanted &= set(ready)
        # the deployments an environment serves or is about to: they run every process
        live = {r["routed"] for r in aliases if r["routed"]} | {
            r["desired"] for r in aliases if r["desired"] in ready
        }
        formations = {
            dep_id: self._formation_now(Deployment.from_row(ready[dep_id]), dep_id in live)
            for dep_id in wanted
        }
        return DesiredState(
            ready, aliases, wanted, self._read_routes(), drain, formations, sleepers
        )

    def _formation_now(self, dep: Deployment, live: bool) -> dict[str, int]:
        """(store thread) How many processes of each type `dep` runs now."""
        try:
            settings = self._settings_for(dep)
            types = self._types_for(dep)
        except TristageError:
            return {WEB: 1}
        scaled = self.api.processes.scaled(dep.project, dep.environment)
        return replicas(types, settings.processes, scaled, live)

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

    def _claimed_twice(self, host: str, kept: str, other: str) -> None:
        if (host, other) not in self._reported_claims:
            self._reported_claims.add((host, other))
            self.log(
                f"warning: {host} is a domain of projects {kept} and {other}; {kept} keeps "
                f"it (remove it from one tristage.toml)"
            )

    def _read_routes(self) -> list[ProjectRoutes]:
        """(store thread) Each project's hosts: aliases, branches and deployments."""
        store = self.api.store
        out: list[ProjectRoutes] = []
        for project in project_names(store):
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
                " AND trigger != 'promote'"
                " AND branch NOT IN (SELECT branch FROM stopped_branches WHERE project=?)"
                " ORDER BY seq",
                (project, Status.ready.value, project),
            ):
                branch_latest[r["branch"]] = alias_domain.DeploymentRef(
                    r["id"], r["environment"], r["branch"]
                )
            out.append(
                ProjectRoutes(
                    project,
                    cfg.production,
                    tuple(cfg.environments),
                    live,
                    branch_latest,
                    deps,
                    public=cfg.public_names(),
                    access=self._access(project, cfg),
                )
            )
        return out

    def _access(self, project: str, cfg: Any) -> dict[str, Access]:
        """(store thread) Each protected environment's sign-in: its password's hash (hashed
        once per password, kept in memory; the password itself never reaches the router)."""
        out: dict[str, Access] = {}
        cache: dict[tuple[str, str, str], str] = self.__dict__.setdefault("_password_hashes", {})
        for env, ec in cfg.environments.items():
            if not ec.protect:
                continue
            password_hash = None
            if ec.protect == "password":
                try:
                    value = self.api.variables.get(project, PASSWORD_VARIABLE, env).value
                except TristageError:
                    value = ""
                if value:
                    fp = hashlib.sha256(value.encode()).hexdigest()
                    key = (project, env, fp)
                    if key not in cache:
                        cache[key] = hash_password(value)
                    password_hash = cache[key]
            out[env] = Access(ec.protect, password_hash)
        return out

    def _install_routes(
        self, routes: list[ProjectRoutes], pending: dict[tuple[str, str], str]
    ) -> None:
        """(loop) Swap the router's table: each host to the web processes of its
        deployment that are healthy (else any that is not draining)."""
        table: dict[str, Route] = {}
        webs: dict[str, list[Release]] = {}
        for rel in self.releases.values():
            if rel.process.is_web and rel.status != "draining":
                webs.setdefault(rel.dep.id, []).append(rel)
        cache: list[ProjectRoutes] = []
        for pr in routes:
            live = dict(pr.live)
            for (p, env), dep_id in pending.items():
                if p == pr.project:
                    live[env] = dep_id
            cache.append(dataclasses.replace(pr, live=live))
            hosts = alias_domain.host_table(
                pr.project, pr.production, list(pr.environments), live, pr.branch_latest, pr.deps,
                pr.public,
            )  # fmt: skip
            for host, target in hosts.items():
                if host in table and table[host].project != pr.project:
                    self._claimed_twice(host, table[host].project, pr.project)
                    continue  # a public name two projects claim: the first (by name) keeps it
                procs = sorted(webs.get(target.deployment or "", []), key=lambda r: r.process)
                healthy = [r for r in procs if r.status == "healthy"] or procs
                addresses = tuple(r.upstream for r in healthy)
                if target.deployment in self.asleep:
                    addresses = ()  # stopping for being idle: its next request wakes it
                elif addresses:
                    self.waking.discard(target.deployment or "")
                table[host] = Route(
                    pr.project, target.environment, target.deployment,
                    addresses[0] if addresses else None, replicas=addresses[1:],
                    access=pr.access.get(target.environment),
                    asleep=not addresses
                    and (target.deployment in self.asleep or target.deployment in self.waking),
                )  # fmt: skip
        self._routes_cache = cache
        self.table.replace(table)
        self.last_routes = routes
        if self.frontdoor is not None:
            self.frontdoor.routes_changed(routes)
