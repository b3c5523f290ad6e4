"""The promotion preflight (`domain/preflight.py`): gather what differs between a
deployment's environment and production, and run the release command's own dry run
(when it has one) in production's sandbox, with production's variables and data,
from the deployment's artifact."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ..domain.deployments import Status
from ..domain.preflight import PromotionPreflight, compare, migration_dry_run
from ..domain.rules import RuleViolation
from ..errors import Conflict, TristageError, UsageError
from . import pipeline_steps as steps
from .runtimes import Runtimes

if TYPE_CHECKING:
    from ..api import Tristage
    from ..domain.deployments import Deployment

DRY_RUN_TIMEOUT = 120.0
MAX_LINES = 200


def promote_preflight(
    api: Tristage, project: str, deployment: str, run_dry: bool = True
) -> PromotionPreflight:
    """What a promote of `deployment` to production would change and meet; `run_dry`
    runs the release command's dry run (else the finding only names the command)."""
    cfg = api.config_for(project)
    prod = cfg.production
    if prod is None:
        raise UsageError(
            "this project has no production environment",
            'declare one with tier = "production" in tristage.toml',
        )
    dep = api.deploys.get(deployment, project)
    if dep.status != Status.ready:
        raise Conflict(
            f"deployment {dep.id} is {dep.status.value}, not ready",
            "promote a ready deployment (see 'tristage deployments')",
        )
    source = dep.environment
    variables = api.variables
    errors: list[str] = []
    warnings: list[str] = []
    try:
        warnings = list(variables.enforce(project, prod, branch=dep.branch))
    except RuleViolation as exc:
        errors = [f"[{f.rule}] {f.variable or '-'}: {f.message}" for f in exc.findings]
    as_prod = dataclasses.replace(dep, environment=prod)
    # the release command (read from the commit, in git) is named only for a deployment
    # of another environment, and run only for the dry run: a rollback-like promote of a
    # production deployment does not read it
    release = steps.commit_settings(api, as_prod).migrate if run_dry or source != prod else None
    dry = None
    if release and run_dry and dep.artifact and Path(dep.artifact).is_dir():
        command = migration_dry_run(release)
        if command is not None:
            dry = _dry_run(api, as_prod, command)
    findings = compare(
        source,
        prod,
        source_vars=variables.resolve(project, source, dep.branch).keys(),
        target_vars=variables.resolve(project, prod, dep.branch).keys(),
        source_build_hash=dep.build_hash,
        target_build_hash=variables.build_hash(project, prod, dep.branch),
        source_webhooks=cfg.env(source).webhooks.keys(),
        target_webhooks=cfg.env(prod).webhooks.keys(),
        rule_errors=errors,
        rule_warnings=warnings,
        release_command=release if source != prod else None,
        dry_run=dry,
    )
    return PromotionPreflight(project, dep.id, source, prod, findings)


def _dry_run(api: Tristage, dep: Deployment, command: str) -> tuple[str, tuple[str, ...], bool]:
    """Run `command` as a one-off of `dep` (already set to production): its redacted
    output lines and whether it succeeded."""
    cfg = api.config_for(dep.project)
    choice = Runtimes().choose(cfg, dep.environment)
    spec = steps.one_off_spec(api, dep, ("sh", "-c", command), steps.commit_settings(api, dep))
    stream = api.variables.redactor(dep.project).stream()
    chunks: list[str] = []
    lock = threading.Lock()

    def out(text: str) -> None:
        with lock:
            chunks.append(stream.feed(text.rstrip("\n") + "\n"))

    api.audit.record(
        "deploy.preflight.dry_run",
        project=dep.project,
        environment=dep.environment,
        target=dep.id,
        details={"command": api.variables.redactor(dep.project)(command)},
    )
    try:
        status = choice.runtime.run(spec, out, DRY_RUN_TIMEOUT, lambda: False)
        ok = steps.exit_code_of(status) == 0
    except TristageError as exc:
        chunks.append(f"{exc}\n")
        ok = False
    chunks.append(stream.flush())
    lines = tuple("".join(chunks).splitlines()[-MAX_LINES:])
    return api.variables.redactor(dep.project)(command), lines, ok
