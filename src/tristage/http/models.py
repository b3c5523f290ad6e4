"""What the HTTP API accepts and returns: path parameters and Pydantic models.

Every user-provided id in a URL is checked against its pattern before it reaches a
service; the OpenAPI schemas are generated from these models.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any, Literal, TypeVar, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..api import TOKEN_NAME_RE, AuditEvent, BackupInfo, Delivery, Role
from ..domain.config import NAME_RE, VAR_RE
from ..domain.deployments import Deployment, is_deployment_id
from ..domain.rules import Finding
from ..domain.variables import MASK
from ..errors import UsageError

# -- path parameters: every user-provided id is checked before it reaches a service ---
PATH_PARAMS: dict[str, tuple[re.Pattern[str], str]] = {
    "project": (NAME_RE, "a project name"),
    "environment": (NAME_RE, "an environment name"),
    "deployment": (re.compile(r"^[0-9][0-9a-z]{7}\Z"), "a deployment id (e.g. 4k9x2m0q)"),
    "delivery": (re.compile(r"^whd_[0-9a-f]{16}\Z"), "a webhook delivery id (whd_...)"),
    "name": (VAR_RE, "a variable name"),
    "token": (TOKEN_NAME_RE, "a token name"),
}


def check_param(name: str, value: str) -> str:
    pattern, what = PATH_PARAMS[name]
    if not pattern.match(value) or (name == "deployment" and not is_deployment_id(value)):
        raise UsageError(f"{value[:80]!r} is not {what}", f"check the {name} in the URL")
    return value


# ---------------------------------------------------------------------------
# Models: what the API accepts and returns (the OpenAPI schemas come from these).


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class In(BaseModel):
    model_config = ConfigDict(extra="forbid")


M = TypeVar("M", bound=Out)


def mirrors(
    record: type[Any], *, without: tuple[str, ...] = (), **more: Any
) -> Callable[[type[M]], type[M]]:
    """Give a response model the fields of the dataclass `record` (but `without`), plus
    `more` (name=(type, default), which may also retype a field): the record stays the
    one description of the fields it shares with the API."""

    def build(cls: type[M]) -> type[M]:
        hints = get_type_hints(record)
        fields: dict[str, Any] = {
            f.name: (hints[f.name], ...)
            for f in dataclasses.fields(record)
            if f.name not in without
        }
        fields.update(more)
        model = create_model(cls.__name__, __base__=cls, __module__=cls.__module__, **fields)
        model.__doc__ = cls.__doc__
        return model

    return build


def from_record(model: type[M], record: Any, **more: Any) -> M:
    """`model` filled from the same-named attributes of `record`, then `more`."""
    values = {k: getattr(record, k) for k in model.model_fields if k not in more}
    return model(**values, **more)


class Health(Out):
    ok: bool
    version: str


class ErrorOut(Out):
    error: str = Field(description="unauthorized, forbidden, not_found, conflict, bad_request")
    message: str
    hint: str | None = None


class Problem(Out):
    at: str = Field(description="the path of the field in the body ('' for the body itself)")
    message: str


class InvalidBodyOut(ErrorOut):
    """A body that is not JSON or does not match its schema (`error`: invalid_body)."""

    problems: list[Problem]


class ProjectOut(Out):
    name: str
    environments: list[str]
    production: str | None


class Traffic(Out):
    """Router statistics of the deployment an environment serves (since `tristage up`)."""

    requests: int
    requests_per_minute: float | None = Field(description="over the last minute; None at first")
    errors: int = Field(description="5xx answers plus upstream failures")
    status_5xx: int
    upstream_errors: int
    p50_ms: float | None
    p99_ms: float | None


class EnvironmentOut(Out):
    environment: str
    tier: str
    branches: list[str]
    deployment: str | None
    pending: str | None
    branch: str | None
    commit: str | None
    url: str
    health: str
    since: float | None
    traffic: Traffic | None


@mirrors(
    Deployment,
    without=("build_hash", "artifact", "web", "snapshot", "updated_at"),
    status=(str, ...),
    url=(str, ...),
    live=(bool, ...),
)
class DeploymentOut(Out):
    """A deployment, its URL and whether the router serves it."""


class LogOut(Out):
    deployment: str
    kind: Literal["build", "runtime"]
    lines: list[str]
    truncated: bool


class SwitchOut(Out):
    deployment: DeploymentOut
    environment: str
    rebuilt: bool
    routed: bool = Field(description="True once the router serves it")
    elapsed_s: float
    message: str


class PreflightFindingOut(Out):
    severity: str = Field(description="error (refuses the promote), warning, info")
    kind: str = Field(description="variables, build, migrations, webhooks, rules")
    message: str
    names: list[str] = Field(description="variable or webhook source names (never values)")
    output: list[str] = Field(description="the release command's dry run output (redacted)")


class PreflightOut(Out):
    """What a promote to production would change and meet (`promote --dry-run`)."""

    project: str
    deployment: str
    source: str = Field(description="the deployment's environment")
    target: str = Field(description="production")
    ok: bool = Field(description="False when an error refuses the promote")
    findings: list[PreflightFindingOut]


class PromoteIn(In):
    wait: float = Field(30.0, ge=0, le=300, description="seconds to wait for the router")


class RollbackIn(In):
    to: str | None = Field(
        None,
        pattern=r"^[0-9][0-9a-z]{7}$",
        description="a production deployment id; default: previous",
    )
    wait: float = Field(30.0, ge=0, le=300)


class VariableOut(Out):
    name: str
    value: str = Field(description=f"'{MASK}' for secrets: values of secrets are never returned")
    secret: bool
    build: bool
    scope: str = Field(description="an environment name, or 'all'")
    branch: str | None
    where: str
    set_at: float


class VariableIn(In):
    value: str
    environments: list[str] = Field(default_factory=list)
    all: bool = Field(False, description="set it for every environment")
    branch: str | None = None
    secret: bool | None = Field(None, description="default: inferred from name and value")
    build: bool | None = Field(None, description="default: inferred (NEXT_PUBLIC_* ...)")
    strict: bool = Field(False, description="refuse the change (422) when a rule finds an error")


@mirrors(Finding)
class FindingOut(Out):
    """A rule's finding (`tristage check`): what is wrong and how to fix it."""


class SetOut(Out):
    name: str
    where: str
    change: str
    secret: bool
    build: bool
    findings: list[FindingOut] = Field(
        default_factory=list, description="what the rules found in the new value"
    )
    redeploys: list[str] = Field(
        default_factory=list,
        description="deployments queued because of `[app] redeploy_on_change`",
    )


class RemovedOut(Out):
    name: str
    removed_from: list[str]


@mirrors(Delivery, without=("project", "path"))
class DeliveryOut(Out):
    """A received webhook and its forwarding state (the stored body is not shown)."""


@mirrors(BackupInfo, without=("project",))
class BackupOut(Out):
    """A complete, verified backup."""


class BackupIn(In):
    note: str | None = Field(None, max_length=200)


class RestoreIn(In):
    backup: str = Field(pattern=r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{4}$")
    confirm: bool = Field(False, description="required for a production restore")


class RestoreOut(Out):
    backup: str
    safety_backup: str | None
    rows: dict[str, int]
    files: int | None = Field(
        None, description="files put back in the data directory (null: the backup holds none)"
    )
    undo: str | None = None


@mirrors(AuditEvent)
class AuditOut(Out):
    """One audit event: who changed what, when, where."""


class TokenOut(Out):
    name: str
    role: str
    created_at: float
    created_by: str
    last_used_at: float | None


class TokenIn(In):
    name: str = Field(pattern=TOKEN_NAME_RE.pattern.removesuffix("\\Z") + "$")
    role: Role


class TokenCreatedOut(TokenOut):
    token: str = Field(description="shown once: store it now")
