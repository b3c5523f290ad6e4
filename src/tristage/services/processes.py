"""Processes of the running releases (`tristage ps`) and replica counts set at run time
(`tristage scale web=3 --env production`), which the control plane's reconciler reads
over the `processes` of tristage.toml."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..domain.processes import WEB, ProcessName, parse_scale
from ..errors import NotFound

if TYPE_CHECKING:
    from ..api import Tristage


class ProcessService:
    def __init__(self, api: Tristage) -> None:
        self.api = api

    def scaled(self, project: str, environment: str) -> dict[str, int]:
        """The replica counts `tristage scale` set for an environment, by type."""
        return {
            r["process"]: int(r["count"])
            for r in self.api.store.query(
                "SELECT process, count FROM process_scale WHERE project=? AND environment=?",
                (project, environment),
            )
        }

    def scale(self, project: str, environment: str, args: list[str]) -> dict[str, int]:
        """Set replica counts (`["web=3", "worker=0"]`) for every deployment of the
        environment from now on; the control plane starts or stops processes to match.
        The counts in force afterwards, by type. Audited."""
        counts = parse_scale(args)
        cfg = self.api.config_for(project)
        cfg.env(environment)  # NotFound naming the environments
        live = self.api.deploys.live(project, environment)
        if live is not None:
            from .pipeline_steps import commit_process_types

            types = commit_process_types(self.api, self.api.deploys.get(live))
            missing = sorted(set(counts) - set(types))
            if missing:
                raise NotFound(
                    f"{environment}'s live deployment {live} has no process type "
                    f"{', '.join(missing)}",
                    f"its types: {', '.join(types)} (add a Procfile line for another)",
                )
        now = time.time()
        store = self.api.store
        with store.transaction():
            for kind, n in counts.items():
                store.execute(
                    "INSERT INTO process_scale (project, environment, process, count,"
                    " updated_at) VALUES (?,?,?,?,?) ON CONFLICT (project, environment,"
                    " process) DO UPDATE SET count=excluded.count,"
                    " updated_at=excluded.updated_at",
                    (project, environment, kind, n, now),
                )
            self.api.audit.record(
                "process.scale", project=project, environment=environment,
                target=environment, details={"counts": counts},
            )  # fmt: skip
        self.api.deploys.nudge()
        return {**self.scaled(project, environment)}

    def crashed(self, project: str) -> dict[str, list[str]]:
        """The processes in a crash loop (`crashed`) of the project's running releases,
        by deployment: a worker's loop leaves its deployment `ready` (web serves)."""
        out: dict[str, list[str]] = {}
        for r in self.api.store.query(
            "SELECT r.deployment, r.process FROM releases r JOIN deployments d"
            " ON d.id = r.deployment WHERE d.project=? AND r.status='crashed'",
            (project,),
        ):
            out.setdefault(r["deployment"], []).append(r["process"])
        return {dep: sorted(names, key=_order) for dep, names in out.items()}

    def list(self, project: str, environment: str | None = None) -> list[dict[str, Any]]:
        """Every running process of the project's releases (or one environment's):
        deployment, environment, process (`web.1`), status, port, restarts, since,
        last exit, and whether the deployment is its environment's live one."""
        cfg = self.api.config_for(project)
        if environment is not None:
            cfg.env(environment)
        rows = self.api.store.query(
            "SELECT r.*, d.environment AS env, d.branch, d.commit_sha, a.routed"
            " FROM releases r JOIN deployments d ON d.id = r.deployment"
            " LEFT JOIN aliases a ON a.project = d.project AND a.environment = d.environment"
            " WHERE d.project=? ORDER BY d.environment, d.seq DESC",
            (project,),
        )
        out = []
        for r in rows:
            if environment is not None and r["env"] != environment:
                continue
            out.append(
                {
                    "deployment": r["deployment"],
                    "environment": r["env"],
                    "live": r["routed"] == r["deployment"],
                    "process": r["process"],
                    "status": r["status"],
                    "port": r["port"] or None,
                    "restarts": r["restarts"],
                    "since": r["started_at"],
                    "last_exit": r["last_exit"],
                }
            )
        out.sort(key=lambda x: (x["environment"], not x["live"], x["deployment"],
                                _order(x["process"])))  # fmt: skip
        return out


def _order(name: str) -> tuple[bool, ProcessName]:
    p = ProcessName.parse(name)
    return (p.type != WEB, p)
