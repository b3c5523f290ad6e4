"""Branch and project lifecycle: deleted branches, the cleanup of old deployments,
and the removal of a project.

A deleted branch (a push deleting it from the hosted repository, or a git host
saying so) is stopped (`stopped_branches`): the reconciler no longer runs its latest
deployment nor gives it a branch host. An environment that serves one of its
deployments keeps serving it until its next deploy, so production is never taken
down by a branch deletion. A new push of the branch starts over.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from ..domain.cleanup import CleanupPlan, DeploymentFacts, expired_branches, select
from ..edges import git
from ..edges.store import Row
from ..errors import TristageError, UsageError
from .release_records import ReleaseRecords
from .runtimes import Runtimes

if TYPE_CHECKING:
    from ..api import Tristage


class LifecycleService:
    def __init__(self, api: Tristage) -> None:
        self.api = api

    @cached_property
    def cleanup(self) -> Cleanup:
        return Cleanup(self.api)

    def branch_deleted(
        self, project: str, branch: str, reason: str = "branch deleted"
    ) -> list[str]:
        """The branch is gone (deleted from the hosted repository or its git host): its
        latest deployment stops running and loses its branch host, its queued
        deployments are canceled (`DeployService.stop_branch`). An environment that
        serves one of its deployments keeps serving it; production is never touched.
        Idempotent; returns what it did, one line each. `reason`: why ("branch deleted",
        or "expired" when the cleanup retires a branch past its maximum age)."""
        self.api.config_for(project)  # NotFound for an unknown project
        stopped = self.api.deploys.stop_branch(project, branch, reason)
        if not stopped:
            return [f"{branch}: already stopped"]
        done = [f"{branch}: {reason}; its release stops and its branch host goes"]
        for env, dep_id in self._serving(project, branch):
            done.append(f"{env} keeps serving {dep_id} until its next deploy")
        return done

    def _serving(self, project: str, branch: str) -> list[tuple[str, str]]:
        rows = self.api.store.query(
            "SELECT a.environment, a.routed FROM aliases a JOIN deployments d"
            " ON d.id = a.routed WHERE a.project=? AND d.branch=?",
            (project, branch),
        )
        return [(r["environment"], r["routed"]) for r in rows]

    def destroy(self, project: str, confirm: str) -> DestroyReport:
        return _destroy(self.api, project, confirm)

    def deleted_branches(self, project: str) -> set[str]:
        """Branches whose releases are stopped (deleted, closed, expired)."""
        return self.api.deploys.stopped_branches(project)


@dataclass(frozen=True)
class CleanupReport:
    """What a cleanup of one project removed (or, with `dry_run`, would remove)."""

    project: str
    removed: tuple[str, ...]  # deployment ids, newest first
    kept: dict[str, tuple[str, ...]]  # id -> why it is kept
    running: tuple[str, ...]  # to remove, but a release still runs: the next run does
    retired: tuple[str, ...]  # branches past their maximum age, retired like deleted ones
    freed_bytes: int
    dry_run: bool


def _size(path: Path) -> int:
    total = 0
    if path.is_file():
        return path.stat().st_size
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).lstat().st_size
    return total


class Cleanup:
    """The retention of deployments (`[cleanup]` of tristage.toml, `domain/cleanup.py`):
    old deployment rows with their artifacts, logs, metrics and pinned commits."""

    def __init__(self, api: Tristage) -> None:
        self.api = api
        self.last_run: dict[str, float] = {}

    def plan(self, project: str, now: float) -> tuple[CleanupPlan, list[Row], list[str]]:
        cfg = self.api.config_for(project)
        store = self.api.store
        rows = store.query("SELECT * FROM deployments WHERE project=? ORDER BY seq", (project,))
        live: set[str] = set()
        for a in store.query("SELECT routed, desired FROM aliases WHERE project=?", (project,)):
            live.update(x for x in (a["routed"], a["desired"]) if x)
        prod = cfg.production
        history = self.api.deploys.alias_history(project, prod, limit=1000) if prod else []
        deleted = self.api.lifecycle.deleted_branches(project)
        facts = [
            DeploymentFacts(
                id=r["id"],
                seq=int(r["seq"]),
                environment=r["environment"],
                branch=r["branch"],
                status=r["status"],
                created_at=float(r["created_at"]),
                takes_host=bool(r["takes_host"]),
                source=r["source"],
            )
            for r in rows
        ]
        policy = cfg.cleanup.policy()
        plan = select(
            facts,
            policy,
            now=now,
            live=live,
            production=prod,
            production_history=history,
            deleted_branches=deleted,
        )
        retire = expired_branches(facts, policy, now=now, deleted_branches=deleted)
        return plan, rows, retire

    def run(self, project: str, dry_run: bool = False, now: float | None = None) -> CleanupReport:
        now = time.time() if now is None else now
        plan, rows, retire = self.plan(project, now)
        by_id = {r["id"]: r for r in rows}
        svc = self.api.deploys
        store = self.api.store
        running = {
            r["deployment"]
            for r in store.query("SELECT deployment FROM releases")
            if r["deployment"] in by_id
        }
        kept_artifacts = {by_id[k]["artifact"] for k in plan.keep if by_id[k]["artifact"]}
        removed: list[str] = []
        skipped: list[str] = []
        freed = 0
        for dep_id in plan.remove:
            if dep_id in running:
                skipped.append(dep_id)
                continue
            row = by_id[dep_id]
            paths = [svc.log_path(project, dep_id, build=True),
                     svc.log_path(project, dep_id, build=False)]  # fmt: skip
            own = svc.artifact_dir(project, dep_id)
            if row["artifact"] == str(own) and str(own) not in kept_artifacts:
                paths.append(own)
            freed += sum(_size(p) for p in paths if p.exists())
            removed.append(dep_id)
            if dry_run:
                continue
            for p in paths:
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
            with store.transaction():
                store.execute("DELETE FROM deployments WHERE id=?", (dep_id,))
                store.execute("DELETE FROM metric_samples WHERE deployment=?", (dep_id,))
                store.execute("DELETE FROM health_probes WHERE deployment=?", (dep_id,))
            bare = svc.bare_repo(project)
            if bare.exists():
                git.run(bare, "update-ref", "-d", f"refs/tristage/deployments/{dep_id}",
                        check=False)  # fmt: skip
        if not dry_run:
            for branch in retire:
                self.api.lifecycle.branch_deleted(project, branch, reason="expired")
            if removed or retire:
                self.api.audit.record(
                    "cleanup.run",
                    project=project,
                    details={"removed": len(removed), "retired": len(retire), "bytes": freed},
                )
            self.last_run[project] = now
        return CleanupReport(
            project, tuple(removed), plan.keep, tuple(skipped), tuple(retire), freed, dry_run
        )

    def run_due(self, now: float | None = None) -> list[CleanupReport]:
        """(the scheduler) Clean up each project whose `cleanup.interval_hours` passed
        since its last run (each project once when the control plane starts)."""
        now = time.time() if now is None else now
        out: list[CleanupReport] = []
        for project in self.api.project_service.names():
            try:
                interval = self.api.config_for(project).cleanup.interval_hours * 3600
                last = self.last_run.get(project)
                if last is not None and now - last < interval:
                    continue
                out.append(self.run(project, now=now))
            except TristageError:
                continue
        return out


@dataclass(frozen=True)
class DestroyReport:
    project: str
    backups: tuple[str, ...]  # where each environment's final backup is (kept)
    removed: tuple[str, ...]  # what was removed, one line each


# Every table with a `project` column, removed with the project (the audit log stays).
PROJECT_TABLES = (
    "deployments", "aliases", "alias_history", "stopped_branches", "variables",
    "data_backups", "data_backup_schedule", "data_roles", "webhook_deliveries",
    "webhook_rejections", "webhook_endpoint_state", "metric_samples", "health_probes",
    "alerts", "git_connections", "git_deliveries", "pull_requests", "data_jobs",
    "cron_runs", "cron_state", "process_scale", "data_undo",
)  # fmt: skip


def _destroy(api: Tristage, project: str, confirm: str, wait: float = 60.0) -> DestroyReport:
    """Stop and remove a project: releases, deployments, variables, webhooks, metrics,
    its hosted repository, artifacts, logs, caches, data directories and databases.
    Each environment that owns data gets a final backup first, kept where its backups
    go (the report says where)."""
    if confirm != project:
        raise UsageError(
            f"destroying {project} needs its name typed as the confirmation",
            f"type {project!r} when asked, or pass --yes",
        )
    cfg = api.config_for(project)  # NotFound for an unknown project
    backups: list[str] = []
    for env in cfg.environments:
        if cfg.owner(env) != env:
            continue
        info = api.data.backup(project, env, kind="final", note="before tristage destroy")
        backups.append(f"{env}: {api.data.target(project, env).describe()}/{info.id}")
    store = api.store
    with store.transaction():
        dep_ids = [r["id"] for r in store.query(
            "SELECT id FROM deployments WHERE project=?", (project,))]  # fmt: skip
        for table in PROJECT_TABLES:
            store.execute(f"DELETE FROM {table} WHERE project=?", (project,))
        api.audit.record("project.destroy", project=project, details={"backups": backups})
    removed = [f"{len(dep_ids)} deployments, their aliases, variables and webhook deliveries"]
    # the running control plane stops what nothing points at any more
    if api.deploys.nudge():
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            rows = store.query("SELECT deployment FROM releases")
            if not any(r["deployment"] in dep_ids for r in rows):
                break
            time.sleep(0.1)
    # what still runs (no control plane, or one that did not stop them in time: releases
    # outlive a kill -9 of the control plane) is stopped here, whole process groups
    records = ReleaseRecords(store)
    runtimes = Runtimes()
    for rel in records.all():
        if rel.deployment in dep_ids:
            with contextlib.suppress(TristageError, OSError):
                runtimes.for_handle(rel.handle).stop(rel.handle, 5.0)
            records.forget(rel.deployment)
    removed += [f"database {name}" for name in api.data.stores.drop_databases(project)]
    home = api.home
    for path in (
        api.deploys.bare_repo(project),
        home / "artifacts" / project,
        home / "logs" / project,
        home / "data" / project,
        home / "cache" / project,
    ):
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    store.execute("DELETE FROM projects WHERE name=?", (project,))
    api.project_service.forget(project)
    return DestroyReport(project, tuple(backups), tuple(removed))
