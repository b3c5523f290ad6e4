"""Deploys: deployments, aliases, promote and rollback, as intents in the state store.

Every command here writes the desired state and nudges the running control plane
(`tristage up`, see `controlplane.py`), which carries it out: builds queued
deployments, starts and health-checks releases, and switches the router. When the
control plane is down the intent is kept and carried out when it comes up.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..domain import aliases as alias_domain
from ..domain import branches
from ..domain.deployments import ACTIVE, Deployment, Status, new_id, rollback_target
from ..domain.git_events import PULL_REQUEST
from ..domain.logs import keep
from ..domain.numbers import ascii_int
from ..domain.preflight import PromotionPreflight
from ..edges import git
from ..edges.runtime import proc_start
from ..errors import Conflict, NotFound, TristageError, UsageError

if TYPE_CHECKING:
    from ..api import Tristage

CONTROL_FILE = "controlplane.json"
READY_MARK = "ready: "  # the last line of a build log, once its deployment is routed
LOOPBACK = "127.0.0.1"
DEFAULT_ROUTER_PORT = 8080


@dataclass(frozen=True)
class ControlPlaneInfo:
    pid: int
    proc_start: str
    control_port: int
    router_host: str
    router_port: int
    started_at: float
    dashboard_port: int | None = None  # the HTTP API and dashboard (http/app.py)


@dataclass(frozen=True)
class Switch:
    """The outcome of promote / rollback."""

    deployment: Deployment
    environment: str
    rebuilt: bool
    routed: bool  # True when the router already serves it
    elapsed: float
    message: str


@dataclass(frozen=True)
class PushedRef:
    """What the pre-receive hook made of one pushed branch."""

    branch: str
    old: str  # the commit the branch was at (git.ZERO for a new branch)
    deployment: Deployment | None  # None: nothing to deploy (a deletion) or refused
    note: str  # warnings, or why nothing was deployed
    accepted: bool  # False: the push must be refused (no rule takes the branch)


class DeployService:
    def __init__(self, api: Tristage) -> None:
        self.api = api

    # -- paths -------------------------------------------------------------
    @property
    def home(self) -> Path:
        return self.api.home

    def bare_repo(self, project: str) -> Path:
        return self.home / "repos" / f"{project}.git"

    def artifact_dir(self, project: str, deployment: str) -> Path:
        return self.home / "artifacts" / project / deployment

    def log_path(self, project: str, deployment: str, build: bool) -> Path:
        kind = "build" if build else "runtime"
        return self.home / "logs" / project / f"{deployment}.{kind}.log"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    # -- git ---------------------------------------------------------------
    def setup_git(self, project: str, root: Path) -> list[str]:
        bare = self.bare_repo(project)
        created = git.ensure_bare(bare, self.home, project)
        what = git.ensure_remote(root, str(bare))
        lines = []
        if created:
            lines.append(f"created the hosted repository {bare}")
        if what != "unchanged":
            lines.append(f"git remote '{git.REMOTE}' {what}: {bare}")
        return lines

    def install_hooks(self) -> None:
        """(Re)write every hosted repository's hooks for the tristage running now
        (`tristage up`), so a push never runs an interpreter that moved or went."""
        for project in self.api.project_service.names():
            bare = self.bare_repo(project)
            if (bare / "HEAD").exists():
                git.install_hooks(bare, self.home, project)

    # -- control plane -----------------------------------------------------
    def controlplane(self) -> ControlPlaneInfo | None:
        """The running control plane, or None (a stale file after kill -9 is ignored)."""
        try:
            data = json.loads((self.home / CONTROL_FILE).read_text())
            info = ControlPlaneInfo(**data)
        except (OSError, ValueError, TypeError):
            return None
        if not _alive(info.pid, info.proc_start):
            return None
        return info

    def nudge(self) -> bool:
        info = self.controlplane()
        if info is None:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"wake", (LOOPBACK, info.control_port))
        return True

    def _nudge_waiting(self) -> socket.socket | None:
        """`nudge`, from a socket the control plane answers `reconciled` on once a
        reconcile that read the change is done (None: no control plane runs)."""
        info = self.controlplane()
        if info is None:
            return None
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((LOOPBACK, 0))
            s.setblocking(False)
            s.sendto(b"wait", (LOOPBACK, info.control_port))
        except OSError:
            s.close()
            return None
        return s

    def stop_controlplane(self, timeout: float = 30.0) -> ControlPlaneInfo | None:
        """Ask the running control plane to stop (SIGTERM: it stops its releases too).

        Returns what was running, or None when nothing was; raises if it outlives `timeout`.
        """
        info = self.controlplane()
        if info is None:
            return None
        try:
            os.kill(info.pid, signal.SIGTERM)
        except ProcessLookupError:
            return info
        deadline = time.monotonic() + timeout
        while _alive(info.pid, info.proc_start):
            if time.monotonic() > deadline:
                raise TristageError(
                    f"the control plane (pid {info.pid}) is still running after {timeout:.0f}s",
                    f"look at its output; 'kill -9 {info.pid}' stops it without stopping releases",
                )
            time.sleep(0.05)
        self.api.audit.record("controlplane.stop", details={"pid": info.pid})
        return info

    # -- urls --------------------------------------------------------------
    def router_address(self) -> tuple[str, int]:
        """Where the router listens: the running control plane's address, else
        `$TRISTAGE_PORT` (default 8080) on the loopback."""
        info = self.controlplane()
        if info is not None:
            host = info.router_host
            if host in ("", "0.0.0.0", "::"):
                host = LOOPBACK
            return host, info.router_port
        raw = os.environ.get("TRISTAGE_PORT", "").strip()
        if not raw:
            return LOOPBACK, DEFAULT_ROUTER_PORT
        port = ascii_int(raw)
        if port is None or not 0 < port < 65536:
            raise UsageError(
                f"TRISTAGE_PORT={raw!r} is not a port number",
                "set it to the router's port (e.g. 8080) or unset it",
            )
        return LOOPBACK, int(raw)

    def environment_host(self, project: str, environment: str) -> str:
        cfg = self.api.config_for(project)
        return alias_domain.environment_host(project, environment, cfg.production)

    def environment_url(self, project: str, environment: str) -> str:
        return alias_domain.url(
            self.environment_host(project, environment), self.router_address()[1]
        )

    def branch_url(self, project: str, branch: str) -> str:
        return alias_domain.url(alias_domain.branch_host(project, branch), self.router_address()[1])

    def home_url(self, dep: Deployment) -> str:
        """Where a deployment is meant to be seen: its environment's URL when it takes
        over the environment's host, else its branch host (a branch a glob caught, or a
        pull-request preview: `pr-N.APP…`)."""
        if dep.takes_host and dep.trigger != PULL_REQUEST:
            return self.environment_url(dep.project, dep.environment)
        return self.branch_url(dep.project, dep.branch)

    def deployment_url(self, dep: Deployment) -> str:
        host = alias_domain.deployment_host(dep.project, dep.id)
        return alias_domain.url(host, self.router_address()[1])

    # -- reading -----------------------------------------------------------
    def get(self, deployment: str, project: str | None = None) -> Deployment:
        row = self.api.store.query_one("SELECT * FROM deployments WHERE id=?", (deployment,))
        if row is None or (project is not None and row["project"] != project):
            raise NotFound(
                f"no deployment {deployment!r}" + (f" in project {project}" if project else ""),
                "list them with 'tristage deployments'",
            )
        return Deployment.from_row(row)

    def list_deployments(
        self, project: str, environment: str | None = None, limit: int = 50
    ) -> list[Deployment]:
        sql = "SELECT * FROM deployments WHERE project=?"
        params: list[Any] = [project]
        if environment is not None:
            self.api.config_for(project).env(environment)
            sql += " AND environment=?"
            params.append(environment)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        return [Deployment.from_row(r) for r in self.api.store.query(sql, params)]

    def aliases(self, project: str) -> dict[str, dict[str, Any]]:
        rows = self.api.store.query("SELECT * FROM aliases WHERE project=?", (project,))
        return {r["environment"]: r for r in rows}

    def alias_history(self, project: str, environment: str, limit: int | None = None) -> list[str]:
        """The deployments the environment served, oldest first (the last `limit`)."""
        sql = (
            "SELECT deployment FROM alias_history WHERE project=? AND environment=?"
            " ORDER BY id DESC"
        )
        params: tuple[object, ...] = (project, environment)
        if limit is not None:
            sql, params = sql + " LIMIT ?", (*params, limit)
        rows = self.api.store.query(sql, params)
        return [r["deployment"] for r in reversed(rows)]

    def ready_ids(self, project: str, environment: str) -> set[str]:
        """The environment's deployments that can serve (rollback candidates)."""
        return {
            r["id"]
            for r in self.api.store.query(
                "SELECT id FROM deployments WHERE project=? AND environment=? AND status=?",
                (project, environment, Status.ready.value),
            )
        }

    def live(self, project: str, environment: str) -> str | None:
        row = self.api.store.query_one(
            "SELECT routed FROM aliases WHERE project=? AND environment=?", (project, environment)
        )
        return row["routed"] if row else None

    def live_upstream(self, project: str, environment: str) -> str | None:
        """`http://127.0.0.1:PORT` of the release the environment serves, or None."""
        row = self.api.store.query_one(
            "SELECT r.port, r.status FROM aliases a"
            " JOIN releases r ON r.deployment = a.routed AND r.process = 'web.1'"
            " WHERE a.project=? AND a.environment=?",
            (project, environment),
        )
        if row is None or row["status"] != "healthy":
            return None  # the supervisor keeps the status true to the process
        return f"http://127.0.0.1:{row['port']}"

    def release(self, deployment: str) -> dict[str, Any] | None:
        """The `web.1` process of a deployment's release, if it runs."""
        return self.api.store.query_one(
            "SELECT * FROM releases WHERE deployment=? AND process='web.1'", (deployment,)
        )

    def status(self, project: str) -> list[dict[str, Any]]:
        """Each environment: its live deployment, URL and health."""
        cfg = self.api.config_for(project)
        al = self.aliases(project)
        out = []
        for env, ecfg in cfg.environments.items():
            row = al.get(env) or {}
            routed = row.get("routed")
            desired = row.get("desired")
            dep = self.get(routed) if routed else None
            rel = self.release(routed) if routed else None
            if dep is None:
                health = "no deployment"
            elif dep.status == Status.crashed:
                health = "crashed"
            elif rel is None:
                health = "down"
            else:
                health = "healthy" if rel["status"] == "healthy" else str(rel["status"])
                if rel.get("last_exit") and rel.get("restarts"):
                    health += f" (restarted {rel['restarts']}x, last {rel['last_exit']})"
            out.append(
                {
                    "environment": env,
                    "tier": ecfg.tier.value,
                    "deployment": routed,
                    "pending": desired if desired and desired != routed else None,
                    "branch": dep.branch if dep else None,
                    "commit": dep.commit[:7] if dep else None,
                    "url": self.environment_url(project, env),
                    "health": health,
                    "since": row.get("routed_at"),
                }
            )
        return out

    # -- creating deployments ----------------------------------------------
    def create(
        self,
        project: str,
        branch: str,
        commit: str,
        trigger: str,
        environment: str | None = None,
        source: str | None = None,
        *,
        takes_host: bool | None = None,
        objects: Path | None = None,
    ) -> tuple[Deployment, list[str]]:
        """Record a queued deployment (or an `error` one if a rule refuses it).

        `takes_host`: whether it takes over the environment's own host once ready
        (default: `domain.branches.moves_host`). `objects`: the quarantine directory of
        a push being decided (pre-receive), where its commit is until git accepts it;
        its ref is pinned by `received` after the push."""
        cfg = self.api.config_for(project)
        env = environment or self.api.resolve_branch(cfg, branch).environment
        if takes_host is None:
            takes_host = branches.moves_host(cfg, env, branch, trigger)
        bare = self.bare_repo(project)
        message = git.commit_message(bare, commit, objects) if bare.exists() else ""
        dep_id = new_id()
        status, reason = Status.queued, None
        warnings: list[str] = []
        try:
            warnings = list(self.api.variables.enforce(project, env, branch=branch))
        except TristageError as exc:
            status, reason = Status.error, str(exc)
        now = time.time()
        with self.api.store.transaction():
            seq_row = self.api.store.query_one(
                "SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM deployments"
            )
            seq = int(seq_row["n"]) if seq_row else 1
            self.api.store.execute(
                "INSERT INTO deployments (id, seq, project, environment, branch, commit_sha,"
                " message, trigger, source, status, reason, created_at, updated_at,"
                " takes_host, objects_dir)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (dep_id, seq, project, env, branch, commit, message, trigger, source,
                 status.value, reason, now, now, int(takes_host),
                 str(objects) if objects is not None else None),
            )  # fmt: skip
            self.api.store.execute(
                "DELETE FROM stopped_branches WHERE project=? AND branch=?", (project, branch)
            )
            self.api.audit.record(
                "deploy.create",
                project=project,
                environment=env,
                target=dep_id,
                details={"branch": branch, "commit": commit, "trigger": trigger,
                         "source": source, "status": status.value},
            )  # fmt: skip
        if bare.exists() and objects is None:
            git.keep_ref(bare, dep_id, commit)
        self.nudge()
        return self.get(dep_id), warnings

    def stop_branch(self, project: str, branch: str, reason: str) -> bool:
        """Stop a branch's release (a deleted branch, a closed pull request): its latest
        deployment no longer runs nor has a branch host, and its queued deployments are
        canceled. An environment that serves it keeps serving it. A new deployment of
        the branch starts it again. False when it was already stopped."""
        now = time.time()
        with self.api.store.transaction():
            if self.api.store.query_one(
                "SELECT 1 FROM stopped_branches WHERE project=? AND branch=?", (project, branch)
            ):
                return False
            self.api.store.execute(
                "INSERT INTO stopped_branches (project, branch, reason, at) VALUES (?,?,?,?)",
                (project, branch, reason, now),
            )
            self.api.store.execute(
                "UPDATE deployments SET status=?, reason=?, updated_at=?"
                " WHERE project=? AND branch=? AND status=?",
                (Status.canceled.value, f"canceled: {reason}", now, project, branch,
                 Status.queued.value),
            )  # fmt: skip
            self.api.audit.record(
                "branch.stop", project=project, target=branch, details={"reason": reason}
            )
        self.nudge()
        return True

    def stopped_branches(self, project: str) -> set[str]:
        rows = self.api.store.query(
            "SELECT branch FROM stopped_branches WHERE project=?", (project,)
        )
        return {r["branch"] for r in rows}

    def receive(
        self, project: str, lines: list[str], git_env: Mapping[str, str] | None = None
    ) -> list[PushedRef]:
        """The pre-receive hook: one deployment per pushed branch, built from git's
        quarantine (the objects of a push being decided; `git_env`: the hook's `GIT_*`
        variables when it runs in another process, else this one's); a branch no rule
        takes is refused. Deletions and other refs pass (the post-receive hook handles
        them)."""
        bare = self.bare_repo(project)
        objects = git.quarantine_dir(bare, git_env)
        out: list[PushedRef] = []
        for old, new, ref in _ref_updates(lines):
            if not ref.startswith("refs/heads/"):
                continue
            branch = ref.removeprefix("refs/heads/")
            if new == git.ZERO:
                out.append(PushedRef(branch, old, None, "deleted: its release stops", True))
                continue
            try:
                dep, warnings = self.create(project, branch, new, "push", objects=objects)
            except TristageError as exc:
                out.append(PushedRef(branch, old, None, str(exc), False))
                continue
            out.append(PushedRef(branch, old, dep, "\n".join(warnings), True))
        return out

    def pre_receive(
        self,
        project: str,
        lines: list[str],
        say: Callable[[str], None],
        *,
        git_env: Mapping[str, str] | None = None,
        interval: float = 0.05,
        stop: Callable[[], bool] = lambda: False,
        started: list[str] | None = None,
    ) -> int:
        """The whole pre-receive hook: a deployment per pushed branch, its build log
        followed (each line to `say`), and the exit code that accepts the push (0) or
        refuses it. `started` collects the ids of the deployments it queued; `stop`
        ends the following early (the pusher went away), refusing the push."""
        failed: list[str] = []
        for pushed in self.receive(project, lines, git_env):
            branch, dep = pushed.branch, pushed.deployment
            if dep is None:
                say(f"tristage: {branch}: {pushed.note}")
                if not pushed.accepted:
                    failed.append(branch)
                continue
            if dep.status == Status.error:
                say(f"tristage: {branch}: deploy refused: {dep.reason}")
                failed.append(branch)
                continue
            if started is not None:
                started.append(dep.id)
            say(f"tristage: {branch} -> {dep.environment}: deployment {dep.id} queued")
            for warning in filter(None, pushed.note.splitlines()):
                say(f"tristage: warning: {warning}")
            if stop() or not self.follow_deploy(dep, say, interval, stop):
                failed.append(branch)
        if failed:
            say(
                f"tristage: push refused: the deploy of {', '.join(failed)} failed, so the"
                " branch stays where it was; fix it and push again (or 'git push -o"
                " skip-deploy' to push without deploying)"
            )
            return 1
        return 0

    def follow_deploy(
        self,
        dep: Deployment,
        say: Callable[[str], None],
        interval: float = 0.05,
        stop: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Print `dep`'s build log until it settles, then its URL or why it failed;
        True when it is ready (or waits for a control plane that is not running)."""
        if self.controlplane() is None:
            status = self.get(dep.id).status
            if status == Status.queued:
                say(
                    "the control plane is not running: the deployment starts when "
                    "'tristage up' runs"
                )
            else:  # it had taken the deployment, then stopped before this looked
                say(self.stopped_message(status))
            return True
        last = ""
        for line in self.follow(dep.id, interval=interval, stop=stop):
            say(line)
            last = line
        if stop():
            return False
        final = self.get(dep.id)
        if final.status == Status.ready:
            where = (
                final.environment if final.takes_host else f"{final.environment} ({final.branch})"
            )
            say(f"{where}: {self.home_url(final)}  (deployment {self.deployment_url(final)})")
            return True
        reason = final.reason or ""
        if reason and reason in last:  # the log's last line said it: name the outcome only
            say(f"deployment {final.id} {final.status.value}")
        else:
            say(f"deployment {final.id} {final.status.value}: {reason}")
        return False

    def received(self, project: str, lines: list[str]) -> list[str]:
        """The post-receive hook of a push that deleted branches (the hook runs tristage
        only then): stop each (`branch_deleted`), and pin what the push deployed.
        Returns what it did, one line each."""
        done: list[str] = []
        for _old, new, ref in _ref_updates(lines):
            if ref.startswith("refs/heads/") and set(new) == {"0"}:
                done.extend(self.api.lifecycle.branch_deleted(project, ref[len("refs/heads/") :]))
        self.pin_pushed()
        return done

    def pin_pushed(self) -> int:
        """Pin the commits of pushed deployments once git has decided their push (its
        quarantine is gone): an accepted commit under `refs/tristage/deployments/ID`,
        so redeploys survive force pushes and gc; a refused one is forgotten. Run by
        the control plane's loop (and the post-receive hook); returns how many."""
        store = self.api.store
        if (
            store.query_one("SELECT 1 FROM deployments WHERE objects_dir IS NOT NULL LIMIT 1")
            is None
        ):
            return 0
        done = 0
        for row in store.query(
            "SELECT id, project, commit_sha, objects_dir FROM deployments"
            " WHERE objects_dir IS NOT NULL"
        ):
            if Path(row["objects_dir"]).exists():
                continue  # the hook is still deciding
            bare = self.bare_repo(row["project"])
            if bare.exists() and git.has_commit(bare, row["commit_sha"]):
                git.keep_ref(bare, row["id"], row["commit_sha"])
            store.execute("UPDATE deployments SET objects_dir=NULL WHERE id=?", (row["id"],))
            done += 1
        return done

    def deploy(
        self, project: str, root: Path, branch: str | None = None, commit: str | None = None
    ) -> tuple[Deployment, list[str]]:
        """Deploy a commit of the working copy without a push."""
        self.setup_git(project, root)
        branch = branch or git.current_branch(root)
        sha = git.rev_parse(root, commit or branch)
        git.push_commit(root, self.bare_repo(project), sha, f"wc-{sha[:12]}")
        return self.create(project, branch, sha, "deploy")

    def redeploy(
        self,
        project: str,
        deployment: str | None = None,
        *,
        environment: str | None = None,
        rebuild: bool = False,
    ) -> Deployment:
        """A new deployment of the same commit for the same environment.

        `environment` instead of `deployment` redeploys that environment's live deployment.
        The artifact is reused (a new release that re-reads the runtime variables) unless
        the build-time variables changed since it was built or `rebuild` is asked; the
        returned deployment's `source` is the reused deployment, or None for a rebuild.
        """
        if deployment is None:
            if environment is None:
                raise UsageError(
                    "name a deployment or an environment to redeploy",
                    "tristage redeploy ID, or tristage redeploy --env ENV",
                )
            self.api.config_for(project).env(environment)
            deployment = self.live(project, environment)
            if deployment is None:
                raise NotFound(
                    f"{environment} has no live deployment to redeploy",
                    "deploy one first: git push tristage BRANCH",
                )
        old = self.get(deployment, project)
        reusable = (
            not rebuild
            and old.status == Status.ready
            and old.artifact is not None
            and Path(old.artifact).is_dir()
            and old.build_hash
            == self.api.variables.build_hash(project, old.environment, old.branch)
        )
        dep, _ = self.create(
            project,
            old.branch,
            old.commit,
            "redeploy",
            old.environment,
            source=old.id if reusable else None,
            takes_host=old.takes_host or self.live(project, old.environment) == old.id,
        )
        return dep

    # -- promote and rollback ----------------------------------------------
    def _set_desired(self, project: str, environment: str, deployment: str) -> None:
        now = time.time()
        with self.api.store.transaction():
            self.api.store.execute(
                "INSERT INTO aliases (project, environment, desired, desired_at) VALUES (?,?,?,?)"
                " ON CONFLICT (project, environment) DO UPDATE SET desired=excluded.desired,"
                " desired_at=excluded.desired_at",
                (project, environment, deployment, now),
            )

    def promote(
        self,
        project: str,
        deployment: str,
        wait: float = 60.0,
        preflight: PromotionPreflight | None = None,
    ) -> Switch:
        """Move production to `deployment` (reusing its artifact unless build variables
        differ), after the promotion preflight (`preflight`: one the caller already ran
        and showed; else it runs here without the migration dry run). Refused when the
        preflight has errors."""
        started = time.monotonic()
        if preflight is None or preflight.deployment != deployment:
            from .preflight import promote_preflight

            preflight = promote_preflight(self.api, project, deployment, run_dry=False)
        if not preflight.ok:
            raise Conflict(
                "promote refused by the preflight: "
                + "; ".join(f.message for f in preflight.errors),
                "fix what it names ('tristage promote --dry-run ID' shows the preflight), "
                "then promote again",
            )
        cfg = self.api.config_for(project)
        prod = cfg.production
        if prod is None:
            raise UsageError(
                "this project has no production environment",
                'declare one with tier = "production" in tristage.toml',
            )
        dep = self.get(deployment, project)
        if dep.status != Status.ready:
            raise Conflict(
                f"deployment {dep.id} is {dep.status.value}, not ready",
                "promote a ready deployment (see 'tristage deployments')",
            )
        if dep.environment == prod:
            self._set_desired(project, prod, dep.id)
            self.api.audit.record(
                "deploy.promote", project=project, environment=prod, target=dep.id
            )
            routed = self._switch_now(project, prod, dep.id, wait)
            return Switch(dep, prod, False, routed, time.monotonic() - started,
                          f"production -> {dep.id}")  # fmt: skip
        prod_hash = self.api.variables.build_hash(project, prod, dep.branch)
        rebuilt = dep.build_hash != prod_hash
        new, _ = self.create(
            project, dep.branch, dep.commit, "promote", prod, source=None if rebuilt else dep.id
        )
        if new.status == Status.error:
            raise Conflict(
                f"promote refused: {new.reason}",
                f"fix what it names ('tristage check --env {prod}' lists it), then promote again",
            )
        self.api.audit.record(
            "deploy.promote",
            project=project,
            environment=prod,
            target=new.id,
            details={"from": dep.id, "rebuilt": rebuilt},
        )
        msg = (
            f"build-time variables differ from production's: rebuilding {dep.id} as {new.id}"
            if rebuilt
            else f"reusing the artifact of {dep.id} as production deployment {new.id}"
        )
        routed = self.wait_routed(project, prod, new.id, wait)
        return Switch(self.get(new.id), prod, rebuilt, routed, time.monotonic() - started, msg)

    def rollback(self, project: str, to: str | None = None, wait: float = 60.0) -> Switch:
        started = time.monotonic()
        cfg = self.api.config_for(project)
        prod = cfg.production
        if prod is None:
            raise UsageError(
                "this project has no production environment",
                'declare one with tier = "production" in tristage.toml',
            )
        current = self.live(project, prod)
        if to is not None:
            dep = self.get(to, project)
            if dep.environment != prod:
                raise Conflict(
                    f"{dep.id} is a {dep.environment} deployment",
                    f"use 'tristage promote {dep.id}' to move it to production",
                )
            if dep.status != Status.ready:
                raise Conflict(
                    f"deployment {dep.id} is {dep.status.value}, not ready",
                    f"roll back to a ready one (see 'tristage deployments --env {prod}')",
                )
            target = dep.id
        else:
            history = self.alias_history(project, prod)
            found = rollback_target(history, current, self.ready_ids(project, prod))
            if found is None:
                raise NotFound(
                    "no previous production deployment to roll back to",
                    "see 'tristage deployments --env " + prod + "'",
                )
            target = found
        self._set_desired(project, prod, target)
        self.api.audit.record(
            "deploy.rollback",
            project=project,
            environment=prod,
            target=target,
            details={"from": current},
        )
        routed = self._switch_now(project, prod, target, wait)
        return Switch(self.get(target), prod, False, routed, time.monotonic() - started,
                      f"production -> {target} (was {current})")  # fmt: skip

    def _switch_now(self, project: str, environment: str, deployment: str, wait: float) -> bool:
        """Nudge the control plane and wait until the router serves `deployment`."""
        told = self._nudge_waiting()
        try:
            return self.wait_routed(project, environment, deployment, wait, told)
        finally:
            if told is not None:
                told.close()

    def wait_routed(
        self,
        project: str,
        environment: str,
        deployment: str,
        timeout: float,
        told: socket.socket | None = None,
    ) -> bool:
        """Wait until the router serves `deployment` (False if the control plane is down).
        With `told` (from `_nudge_waiting`), each wait between two looks at the store ends
        early when the control plane says a reconcile is done."""
        if self.controlplane() is None:
            return False
        deadline = time.monotonic() + timeout
        delay = 0.001
        while time.monotonic() < deadline:
            row = self.api.store.query_one(
                "SELECT a.routed, d.status FROM deployments d LEFT JOIN aliases a"
                " ON a.project=d.project AND a.environment=? WHERE d.id=?",
                (environment, deployment),
            )
            if row and row["routed"] == deployment:
                return True
            if row and row["status"] in (Status.error.value, Status.crashed.value,
                                         Status.canceled.value):  # fmt: skip
                return False
            if told is None:
                time.sleep(delay)
                delay = min(delay * 1.5, 0.005)
                continue
            if select.select([told], [], [], delay)[0]:
                with contextlib.suppress(OSError):
                    while told.recv(64):
                        pass
            delay = min(delay * 1.5, 0.02)
        return False

    # -- following -----------------------------------------------------------
    @staticmethod
    def stopped_message(status: Status) -> str:
        """What a follower says when the control plane is gone, by how far the deployment
        got (a queued one starts when it is back; one it was building is interrupted)."""
        if status == Status.queued:
            return "the control plane stopped: the deployment starts when 'tristage up' runs"
        return (
            "the control plane stopped during the deployment, which is interrupted: run "
            "'tristage up', then deploy again"
        )

    def follow(
        self,
        deployment: str,
        timeout: float = 900.0,
        interval: float = 0.05,
        stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[str]:
        """Build log lines as they are written, until the deployment settles (or
        `stop` says so), looking every `interval` seconds."""
        dep = self.get(deployment)
        path = self.log_path(dep.project, dep.id, build=True)
        deadline = time.monotonic() + timeout
        pos = 0
        done = False
        ready_at: float | None = None
        while True:
            lines, pos = _new_lines(path, pos)
            yield from lines
            if stop():
                return
            done = done or any(line.startswith(READY_MARK) for line in lines)
            dep = self.get(deployment)
            if dep.status not in ACTIVE:
                if dep.status != Status.ready or done:
                    yield from _new_lines(path, pos)[0]  # what it wrote as it settled
                    return
                # ready: the pipeline routes it, then writes its last line (READY_MARK)
                ready_at = ready_at or time.monotonic()
                live = self.live(dep.project, dep.environment)
                desired = self.aliases(dep.project).get(dep.environment, {}).get("desired")
                routed = live == dep.id or desired != dep.id
                if self.controlplane() is None or (routed and time.monotonic() > ready_at + 2):
                    yield from _new_lines(path, pos)[0]
                    return
            if time.monotonic() > deadline:
                return
            if self.controlplane() is None:
                yield self.stopped_message(dep.status)
                return
            time.sleep(interval)

    def tail(self, deployment: str, build: bool, follow: bool) -> Iterator[str]:
        dep = self.get(deployment)
        if build and follow:
            yield from self.follow(deployment)
            return
        path = self.log_path(dep.project, dep.id, build=build)
        pos = 0
        while True:
            lines, pos = _new_lines(path, pos)
            yield from lines
            if not follow:
                return
            time.sleep(0.2)

    def read_log(
        self, deployment: str, build: bool, offset: int = 0, limit: int | None = None
    ) -> tuple[list[str], int]:
        """The whole lines of a deployment's build or runtime log from byte `offset` on
        (at most about `limit` bytes of them), and the offset to read on from."""
        dep = self.get(deployment)
        path = self.log_path(dep.project, dep.id, build=build)
        if limit is None:
            return _new_lines(path, offset)
        try:
            with path.open("rb") as fh:
                fh.seek(offset)
                chunk = fh.read(limit)
        except FileNotFoundError:
            return [], offset
        cut = chunk.rfind(b"\n") + 1
        if cut == 0 and len(chunk) == limit:  # one line longer than the limit: cut it
            cut = len(chunk)
        return chunk[:cut].decode("utf-8", "replace").splitlines(), offset + cut

    def live_deployment(self, project: str, environment: str) -> str:
        """The deployment an environment serves; NotFound (with what to do) if none."""
        environments = self.api.config_for(project).environments
        if environment not in environments:
            raise NotFound(
                f"{project} has no environment {environment!r}",
                f"use one of: {', '.join(environments)}",
            )
        live = self.live(project, environment)
        if live is None:
            raise NotFound(
                f"{environment} has no live deployment",
                f"deploy to it first (see 'tristage deployments --env {environment}')",
            )
        return live

    def tail_environment(
        self,
        project: str,
        environment: str,
        follow: bool,
        process: str | None = None,
        since: float | None = None,
    ) -> Iterator[str]:
        """The runtime log of the deployment an environment serves (only `process`'s
        lines, e.g. `web.1`, when given); with `since` (seconds), the lines of every
        deployment of the environment written that recently, each after its
        deployment's id; with `follow`, the log of each deployment that takes its place
        after it, announced by a line."""
        current = self.live_deployment(project, environment)
        stamp = None
        if since is not None:
            cutoff = time.time() - since
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(cutoff))
            for dep in reversed(self.list_deployments(project, environment, 200)):
                path = self.log_path(project, dep.id, build=False)
                try:
                    if path.stat().st_mtime < cutoff:
                        continue
                except FileNotFoundError:
                    continue
                lines, _ = _new_lines(path, 0)
                for line in lines:
                    if keep(line, process, stamp):
                        yield f"{dep.id} {line}"
            if not follow:
                return
        path = self.log_path(project, current, build=False)
        pos = 0 if since is None else _size(path)
        prefix = "" if since is None else f"{current} "
        while True:
            lines, pos = _new_lines(path, pos)
            yield from (prefix + x for x in lines if keep(x, process, stamp))
            if not follow:
                return
            time.sleep(0.2)
            now = self.live(project, environment)
            if now is not None and now != current:
                lines, pos = _new_lines(path, pos)
                yield from (prefix + x for x in lines if keep(x, process, stamp))
                yield f"tristage: {environment} now serves {now}"
                current, pos = now, 0
                path = self.log_path(project, current, build=False)
                prefix = "" if since is None else f"{current} "


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _ref_updates(lines: list[str]) -> Iterator[tuple[str, str, str]]:
    """`OLD NEW REF` lines as git hands them to a hook on stdin."""
    for line in lines:
        parts = line.split()
        if len(parts) == 3:
            yield parts[0], parts[1], parts[2]


def _new_lines(path: Path, pos: int) -> tuple[list[str], int]:
    """The whole lines written to `path` after byte offset `pos`, and the next offset
    (a partly written last line waits for its newline)."""
    try:
        with path.open("rb") as fh:
            fh.seek(pos)
            chunk = fh.read()
    except FileNotFoundError:
        return [], pos
    cut = chunk.rfind(b"\n") + 1
    return chunk[:cut].decode("utf-8", "replace").splitlines(), pos + cut


def _alive(pid: int, start: str) -> bool:
    try:
        return proc_start(pid) == start
    except OSError:
        return True  # cannot tell (out of file descriptors): assume it still runs
