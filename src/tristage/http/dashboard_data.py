"""What the dashboard's pages show beyond the API's views: the pipeline's order,
deployments left by a rollback, a promotion's preflight, variables with the rule
findings about each, log lines without terminal escapes.

Plain calls on the Python API (they block: run them in worker threads).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..domain.config import PipelineConfig, Tier
from ..domain.deployments import Status
from ..errors import Conflict, NotFound
from . import views
from .models import DeploymentOut, EnvironmentOut, Traffic

if TYPE_CHECKING:
    from ..api import Tristage

RECENT_ROLLBACKS = 24 * 3600.0  # the overview shows automatic rollbacks of the last day
TIER_RANK = {Tier.development: 0, Tier.preview: 1, Tier.production: 2}
# CSI (colours, cursor moves), OSC (titles, links) and two-character escapes
ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def strip_ansi(line: str) -> str:
    """A log line as text: terminal escape sequences and other control characters removed."""
    return CONTROL_RE.sub("", ANSI_RE.sub("", line))


def pipeline_order(cfg: PipelineConfig) -> list[str]:
    """development → preview → production (the first environment of each tier), then the
    others by tier (file order within a tier)."""
    names = list(cfg.environments)
    path: list[str] = []
    for tier in (Tier.development, Tier.preview, Tier.production):
        first = next((n for n in names if cfg.environments[n].tier == tier), None)
        if first is not None:
            path.append(first)
    rest = [n for n in names if n not in path]
    rest.sort(key=lambda n: TIER_RANK[cfg.environments[n].tier])
    return path + rest


def path_environments(cfg: PipelineConfig) -> tuple[str | None, str | None]:
    """The preview environment that feeds production, and production (None if missing)."""
    order = pipeline_order(cfg)
    preview = next((n for n in order if cfg.environments[n].tier == Tier.preview), None)
    return preview, cfg.production


@dataclass
class EnvRow:
    env: EnvironmentOut
    alerts: int  # open alerts


@dataclass(frozen=True)
class RollbackMark:
    """A deployment that a rollback took out of its environment."""

    deployment: str
    to: str | None
    actor: str
    at: float
    automatic: bool
    reason: str | None


def rollback_marks(api: Tristage, project: str, limit: int = 500) -> dict[str, RollbackMark]:
    """Each deployment a rollback took out and that has not been made live again since
    (by a promote or another rollback), with the automatic rollback's reason."""
    reasons = {
        a.deployment: a.message
        for a in reversed(api.monitor.alerts(project, limit=limit))
        if a.kind == "auto_rollback"
    }
    marks: dict[str, RollbackMark] = {}
    live_again: set[str] = set()  # targets of switches newer than the event at hand
    for event in api.audit.events(project=project, action="deploy.*", limit=limit):
        if event.action not in ("deploy.rollback", "deploy.promote"):
            continue
        left = event.details.get("from")
        fresh = isinstance(left, str) and left not in marks and left not in live_again
        if event.action == "deploy.rollback" and isinstance(left, str) and fresh:
            automatic = event.actor == "tristage-monitor"
            marks[left] = RollbackMark(left, event.target, event.actor, event.at, automatic,
                                       reasons.get(left) if automatic else None)  # fmt: skip
        if event.target:
            live_again.add(event.target)
    return marks


def overview(
    api: Tristage, project: str, traffic: dict[str, Traffic]
) -> tuple[list[EnvRow], list[RollbackMark]]:
    """The environments in pipeline order with their open alerts, and recent automatic
    rollbacks (newest first)."""
    cfg = api.config_for(project)
    by_name = {e.environment: e for e in views.environments(api, project, traffic)}
    open_alerts: dict[str, int] = {}
    for alert in api.monitor.alerts(project, open_only=True, limit=200):
        open_alerts[alert.environment] = open_alerts.get(alert.environment, 0) + 1
    marks = rollback_marks(api, project)
    rows = [EnvRow(by_name[n], open_alerts.get(n, 0)) for n in pipeline_order(cfg) if n in by_name]
    recent = time.time() - RECENT_ROLLBACKS
    automatic = sorted(
        (m for m in marks.values() if m.automatic and m.at >= recent), key=lambda m: -m.at
    )
    return rows, automatic[:5]


def deployment_rows(
    api: Tristage, project: str, environment: str | None, limit: int = 100
) -> list[tuple[DeploymentOut, RollbackMark | None]]:
    api.config_for(project)  # a clear 404 for an unknown project
    marks = rollback_marks(api, project)
    live = views.live_ids(api, project)
    return [
        (views.deployment_out(api, d, live), None if d.id in live else marks.get(d.id))
        for d in api.deploys.list_deployments(project, environment, limit)
    ]


# -- promotion preflight -------------------------------------------------------


@dataclass
class VarChange:
    name: str
    change: str  # only in SOURCE | only in PRODUCTION | differs
    secret: bool
    build: bool
    candidate: str | None  # the value shown (secrets masked)
    production: str | None


@dataclass
class Preflight:
    project: str
    source: str
    production: str
    candidate: DeploymentOut | None
    current: DeploymentOut | None
    changes: list[VarChange] = field(default_factory=list)
    rebuild: bool = False
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.candidate is not None and not self.problems


def _shown(value: str | None, secret: bool) -> str | None:
    if value is None:
        return None
    return "••••••" if secret else value


def preflight(
    api: Tristage, project: str, source: str | None = None, deployment: str | None = None
) -> Preflight:
    """What promoting `deployment` (default: the live deployment of `source`, default
    preview) to production would do: the candidate, the variables that differ, whether
    it rebuilds, the rule errors."""
    cfg = api.config_for(project)
    preview, production = path_environments(cfg)
    picked = api.deploys.get(deployment, project) if deployment is not None else None
    source = picked.environment if picked is not None else source or preview
    if production is None:
        raise Conflict("this project has no production environment",
                       'declare one with tier = "production" in tristage.toml')  # fmt: skip
    if source is None or source not in cfg.environments or source == production:
        raise NotFound(f"{project} has no environment to promote from",
                       "promote from a preview environment")  # fmt: skip
    live = views.live_ids(api, project)
    out = Preflight(project, source, production, None, None)
    cand_id = picked.id if picked is not None else api.deploys.live(project, source)
    prod_id = api.deploys.live(project, production)
    if prod_id:
        out.current = views.deployment_out(api, api.deploys.get(prod_id, project), live)
    if cand_id is None:
        out.problems.append(f"{source} has no live deployment to promote")
        return out
    dep = picked or api.deploys.get(cand_id, project)
    out.candidate = views.deployment_out(api, dep, live)
    if dep.status != Status.ready:
        out.problems.append(f"{dep.id} is {dep.status.value}, not ready")
    if prod_id == cand_id:
        out.problems.append(f"production already serves {dep.id}")
    src_vars = api.variables.resolve(project, source, dep.branch)
    prod_vars = api.variables.resolve(project, production, dep.branch)
    for name in sorted(set(src_vars) | set(prod_vars)):
        a, b = src_vars.get(name), prod_vars.get(name)
        if a is not None and b is not None and a.value == b.value:
            continue
        secret = bool((a and a.secret) or (b and b.secret))
        build = bool((a and a.build) or (b and b.build))
        change = (
            f"only in {source}"
            if b is None
            else f"only in {production}"
            if a is None
            else "differs"
        )
        # what production's deployment receives is production's own values: show both sides
        out.changes.append(VarChange(
            name, change, secret, build,
            _shown(a.value if a else None, secret), _shown(b.value if b else None, secret),
        ))  # fmt: skip
    out.rebuild = dep.build_hash != api.variables.build_hash(project, production, dep.branch)
    for finding in api.variables.check(project, production, dep.branch):
        line = f"[{finding.rule}] {finding.variable or ''} {finding.message}".replace("  ", " ")
        (out.problems if finding.severity == "error" else out.warnings).append(line)
    return out


# -- variables -------------------------------------------------------------------


@dataclass
class VarRow:
    name: str
    value: str  # masked when secret
    secret: bool
    build: bool
    scope: str  # an environment, or "all"
    where: str
    branch: str | None
    set_at: float
    findings: list[str]


def variable_rows(
    api: Tristage, project: str, environment: str
) -> tuple[list[VarRow], list[str], str | None]:
    """The stored variables of an environment (and those all share), each with the rule
    findings about it; the findings about no stored variable; whose variables it shares."""
    cfg = api.config_for(project)
    env_cfg = cfg.env(environment)
    findings: dict[str, list[str]] = {}
    general: list[str] = []
    for f in api.variables.check(project, environment):
        text = f"{f.severity}: {f.message} [{f.rule}]"
        if f.variable:
            findings.setdefault(f.variable, []).append(text)
        else:
            general.append(text)
    rows: list[VarRow] = []
    for v in views.variables(api, project, None):
        if v.scope not in ("all", cfg.owner(environment)):
            continue
        rows.append(VarRow(v.name, v.value, v.secret, v.build, v.scope, v.where, v.branch,
                           v.set_at, findings.pop(v.name, [])))  # fmt: skip
    for name, texts in findings.items():  # about a variable that is not stored (missing)
        general.extend(f"{name}: {t}" for t in texts)
    return rows, general, env_cfg.shares
