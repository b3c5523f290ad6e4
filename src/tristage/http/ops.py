"""The API's operations: one declaration per endpoint drives routing, auth and OpenAPI."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from ..api import Role, TokenInfo, Tristage
from ..domain.config import NAME_RE
from .models import (
    AuditOut,
    BackupIn,
    BackupOut,
    DeliveryOut,
    DeploymentOut,
    EnvironmentOut,
    LogOut,
    PreflightOut,
    ProjectOut,
    PromoteIn,
    RemovedOut,
    RestoreIn,
    RestoreOut,
    RollbackIn,
    SetOut,
    SwitchOut,
    TokenCreatedOut,
    TokenIn,
    TokenOut,
    Traffic,
    VariableIn,
    VariableOut,
    check_param,
    from_record,
)
from .views import (
    Http,
    audit_events,
    backups,
    deliveries,
    deployment_log,
    deployment_out,
    deployments,
    environments,
    live_ids,
    projects,
    replay,
    set_variable,
    switch_out,
    token_out,
    variables,
)


@dataclass(frozen=True)
class Query:
    name: str
    kind: Literal["string", "integer", "boolean"] = "string"
    doc: str = ""
    pattern: str | None = None
    maximum: int | None = None


@dataclass
class Call:
    http: Http
    token: TokenInfo
    api: Tristage
    path: dict[str, str]
    query: dict[str, Any]
    body: Any
    traffic: dict[str, Traffic]


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    name: str
    summary: str
    tag: str
    role: Role
    handler: Callable[[Call], Any]
    response: Any
    body: type[BaseModel] | None = None
    query: tuple[Query, ...] = ()
    status: int = 200
    needs_traffic: bool = False


ENV_Q = Query("environment", doc="one environment", pattern=NAME_RE.pattern)
LIMIT_Q = Query("limit", "integer", "at most this many (1-500)", maximum=500)


def _env_q(c: Call) -> str | None:
    env: str | None = c.query.get("environment")
    return env


OPS: list[Op] = [
    Op("GET", "/projects", "listProjects", "Projects and their environments", "projects",
       Role.viewer, lambda c: projects(c.api), list[ProjectOut]),
    Op("GET", "/projects/{project}/environments", "listEnvironments",
       "Each environment: live deployment, URL, health and traffic", "projects",
       Role.viewer, lambda c: environments(c.api, c.path["project"], c.traffic),
       list[EnvironmentOut], needs_traffic=True),
    Op("GET", "/projects/{project}/deployments", "listDeployments",
       "Deployments, newest first", "deployments", Role.viewer,
       lambda c: deployments(c.api, c.path["project"], _env_q(c), c.query.get("limit", 50)),
       list[DeploymentOut], query=(ENV_Q, LIMIT_Q)),
    Op("GET", "/projects/{project}/deployments/{deployment}", "getDeployment",
       "One deployment", "deployments", Role.viewer,
       lambda c: deployment_out(
           c.api, c.api.deploys.get(c.path["deployment"], c.path["project"]),
           live_ids(c.api, c.path["project"])),
       DeploymentOut),
    Op("GET", "/projects/{project}/deployments/{deployment}/log", "getDeploymentLog",
       "A deployment's build or runtime log (secrets redacted when stored)", "deployments",
       Role.viewer,
       lambda c: deployment_log(c.api, c.path["project"], c.path["deployment"],
                                c.query.get("kind", "build"), c.query.get("lines", 2000)),
       LogOut, query=(Query("kind", doc="build (default) or runtime", pattern="^(build|runtime)$"),
                      Query("lines", "integer", "the last N lines (1-10000)", maximum=10000))),
    Op("GET", "/projects/{project}/deployments/{deployment}/preflight", "promotePreflight",
       "Before a promote: what differs from production (variable names, build-variable hash,"
       " webhook sources, rules) and the pending migrations (the release command's dry run,"
       " run in production's sandbox unless migrations=false)", "deployments", Role.deployer,
       lambda c: PreflightOut(**c.api.promote_preflight(
           c.path["project"], check_param("deployment", c.path["deployment"]),
           c.query.get("migrations", True)).as_json()),
       PreflightOut, query=(Query("migrations", "boolean",
                                  "run the release command's dry run (default true)"),)),
    Op("POST", "/projects/{project}/deployments/{deployment}/promote", "promote",
       "Move production to a ready deployment (reusing its artifact when it can)",
       "deployments", Role.deployer,
       lambda c: switch_out(c.api, c.path["project"], c.api.deploys.promote(
           c.path["project"], c.path["deployment"], wait=c.body.wait)),
       SwitchOut, body=PromoteIn),
    Op("POST", "/projects/{project}/deployments/{deployment}/redeploy", "redeploy",
       "Build the same commit again as a new deployment", "deployments", Role.deployer,
       lambda c: deployment_out(c.api, c.api.deploys.redeploy(
           c.path["project"], c.path["deployment"]), set()),
       DeploymentOut, status=202),
    Op("POST", "/projects/{project}/rollback", "rollback",
       "Move production back to the previous (or a given) production deployment",
       "deployments", Role.deployer,
       lambda c: switch_out(c.api, c.path["project"], c.api.deploys.rollback(
           c.path["project"], check_param("deployment", c.body.to) if c.body.to else None,
           wait=c.body.wait)),
       SwitchOut, body=RollbackIn),
    Op("GET", "/projects/{project}/variables", "listVariables",
       "Stored variables; secret values are masked", "variables", Role.viewer,
       lambda c: variables(c.api, c.path["project"], _env_q(c)), list[VariableOut],
       query=(ENV_Q,)),
    Op("PUT", "/projects/{project}/variables/{name}", "setVariable",
       "Set a variable in environments (or all)", "variables", Role.admin,
       lambda c: set_variable(c.api, c.path["project"], c.path["name"], c.body),
       list[SetOut], body=VariableIn),
    Op("DELETE", "/projects/{project}/variables/{name}", "removeVariable",
       "Remove a variable from an environment (or from the value shared by all)",
       "variables", Role.admin,
       lambda c: RemovedOut(name=c.path["name"], removed_from=c.api.variables.remove(
           c.path["project"], c.path["name"],
           environments=[e for e in [_env_q(c)] if e],
           all_environments=bool(c.query.get("all")), branch=c.query.get("branch"))),
       RemovedOut, query=(ENV_Q, Query("all", "boolean", "the value shared by all"),
                          Query("branch", doc="a branch-scoped value"))),
    Op("GET", "/projects/{project}/webhooks/deliveries", "listDeliveries",
       "Webhook deliveries, newest first", "webhooks", Role.viewer,
       lambda c: deliveries(c.api, c.path["project"], _env_q(c), c.query.get("status"),
                            c.query.get("limit", 50)),
       list[DeliveryOut],
       query=(ENV_Q, Query("status", doc="pending, delivered, dead ..."), LIMIT_Q)),
    Op("POST", "/projects/{project}/webhooks/deliveries/{delivery}/replay", "replayDelivery",
       "Queue a delivery again with a fresh retry schedule", "webhooks", Role.deployer,
       lambda c: replay(c.api, c.path["project"], c.path["delivery"]), DeliveryOut),
    Op("GET", "/projects/{project}/environments/{environment}/backups", "listBackups",
       "Complete, verified backups of an environment's data store", "data", Role.viewer,
       lambda c: backups(c.api, c.path["project"], c.path["environment"]), list[BackupOut]),
    Op("POST", "/projects/{project}/environments/{environment}/backups", "createBackup",
       "Back up an environment's data store now", "data", Role.deployer,
       lambda c: from_record(BackupOut, c.api.data.backup(
           c.path["project"], c.path["environment"], note=c.body.note)),
       BackupOut, body=BackupIn, status=201),
    Op("POST", "/projects/{project}/environments/{environment}/restore", "restoreBackup",
       "Restore a backup all-or-nothing (what it replaces is kept for an undo)", "data", Role.admin,
       lambda c: _restore(c), RestoreOut, body=RestoreIn),
    Op("GET", "/audit", "listAudit", "Who changed what, when, where", "audit", Role.viewer,
       lambda c: audit_events(c.api, c.query.get("project"), _env_q(c), c.query.get("action"),
                              c.query.get("limit", 100)),
       list[AuditOut],
       query=(Query("project", pattern=NAME_RE.pattern), ENV_Q,
              Query("action", doc="e.g. deploy.* (a * matches anything)",
                    pattern=r"^[a-z.*_]{1,40}$"), LIMIT_Q)),
    Op("GET", "/whoami", "whoami", "The token this request uses", "tokens", Role.viewer,
       lambda c: token_out(c.token), TokenOut),
    Op("GET", "/tokens", "listTokens", "API tokens (never their secrets)", "tokens",
       Role.admin, lambda c: [token_out(t) for t in c.api.tokens.list()], list[TokenOut]),
    Op("POST", "/tokens", "createToken", "Create a token; the response shows it once",
       "tokens", Role.admin, lambda c: _create_token(c), TokenCreatedOut, body=TokenIn,
       status=201),
    Op("DELETE", "/tokens/{token}", "revokeToken", "Revoke a token and end its sessions",
       "tokens", Role.admin, lambda c: token_out(c.api.tokens.revoke(c.path["token"])),
       TokenOut),
]  # fmt: skip


def _restore(c: Call) -> RestoreOut:
    r = c.api.data.restore(
        c.path["project"], c.path["environment"], c.body.backup, yes=c.body.confirm
    )
    return RestoreOut(
        backup=r.backup, safety_backup=r.safety_backup, rows=r.rows, files=r.files, undo=r.undo
    )


def _create_token(c: Call) -> TokenCreatedOut:
    new = c.api.tokens.create(c.body.name, c.body.role)
    return TokenCreatedOut(**new.info.as_json(), token=new.token)
