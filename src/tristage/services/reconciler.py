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
import time
from typing import Any

from ..domain import aliases as alias_domain
from ..domain.deployments import Deployment, Status, warm_set
from ..edges.router import Route
from ..errors import TristageError
from .front_door import RouterProcess
from .plane_core import PlaneCore
from .project_records import project_names
from .releases import DesiredState, ProjectRoutes, Release


class Reconciler(PlaneCore):
    """The reconcile half of the control plane (mixed into `ControlPlane`)."""

    _wanted: set[str] = set()

    async def _bring_up(self, dep: Deployment) -> None:
        try:
            await self.start_release(dep)
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
            await self.save_release(rel)
            deadline = time.monotonic() + drain
            await asyncio.sleep(min(0.2, drain))
            while (
                time.monotonic() < deadline
                and self.router
                and await self.router.inflight_now(rel.upstream)
            ):
                await asyncio.sleep(0.05)
            if dep_id in self._wanted:
                rel.status = "healthy"
                await self.save_release(rel)
                return
            self.releases.pop(dep_id, None)
            await asyncio.to_thread(rel.runtime.stop, rel.handle, self.tuning.stop_grace)
            await self.forget_release(dep_id)
            self.log(f"{dep_id} stopped (drained)")
        finally:
            self.retiring.discard(dep_id)

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
        if switched and isinstance(self.router, RouterProcess):
            await self.router.synced()  # recorded as served once the router process has it
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
        for project in project_names(store):
            try:
                cfg = self.api.config_for(project)
            except TristageError:
                continue
            drain[project] = cfg.app.drain_seconds
            prod = cfg.production
            for row in store.query(
                "SELECT branch, id FROM deployments WHERE project=? AND status=? AND trigger != ?"
                " AND seq IN (SELECT MAX(seq) FROM deployments WHERE project=? AND status=?"
                " AND trigger != ? GROUP BY branch)"
                " AND branch NOT IN (SELECT branch FROM stopped_branches WHERE project=?)",
                (*(project, Status.ready.value, "promote") * 2, project),
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
                    cfg.public_names(),
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
                pr.project, pr.production, list(pr.environments), live, pr.branch_latest, pr.deps,
                pr.public,
            )  # fmt: skip
            for host, target in hosts.items():
                if host in table and table[host].project != pr.project:
                    self._claimed_twice(host, table[host].project, pr.project)
                    continue  # a public name two projects claim: the first (by name) keeps it
                rel = self.releases.get(target.deployment) if target.deployment else None
                upstream = rel.upstream if rel is not None and rel.status != "draining" else None
                table[host] = Route(pr.project, target.environment, target.deployment, upstream)
        self.table.replace(table)
        self.last_routes = routes
        if self.frontdoor is not None:
            self.frontdoor.routes_changed(routes)
