"""The promotion preflight: what differs between a deployment's environment (preview)
and production before `promote` moves production to it. Pure.

Findings carry a severity: an `error` refuses the promote (a rule production's
configuration breaks), a `warning` is printed and the promote goes on, `info` says
what will happen (a rebuild, a release command). Variables are compared by name only:
no value ever appears in a finding.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class PreflightFinding:
    severity: Severity
    kind: str  # variables | build | migrations | webhooks | rules
    message: str
    names: tuple[str, ...] = ()  # variable or webhook source names the finding is about
    output: tuple[str, ...] = ()  # a migration dry run's output (redacted)

    def as_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "kind": self.kind,
            "message": self.message,
            "names": list(self.names),
            "output": list(self.output),
        }


@dataclass(frozen=True)
class PromotionPreflight:
    project: str
    deployment: str
    source: str  # the deployment's environment
    target: str  # production
    findings: tuple[PreflightFinding, ...] = field(default_factory=tuple)

    @property
    def errors(self) -> list[PreflightFinding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[PreflightFinding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when the promote may go on (warnings do not stop it)."""
        return not self.errors

    def as_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "deployment": self.deployment,
            "source": self.source,
            "target": self.target,
            "ok": self.ok,
            "findings": [f.as_json() for f in self.findings],
        }


def compare(
    source: str,
    target: str,
    *,
    source_vars: Collection[str],
    target_vars: Collection[str],
    source_build_hash: str | None,
    target_build_hash: str,
    source_webhooks: Collection[str],
    target_webhooks: Collection[str],
    rule_errors: Sequence[str] = (),
    rule_warnings: Sequence[str] = (),
    release_command: str | None = None,
    dry_run: tuple[str, tuple[str, ...], bool] | None = None,
) -> tuple[PreflightFinding, ...]:
    """The findings of a promote from `source` to `target`.

    `source_build_hash`: the hash the deployment was built with; `dry_run`: (command,
    output lines, succeeded) of the release command's own dry run, when it has one."""
    out: list[PreflightFinding] = []
    for line in rule_errors:
        out.append(PreflightFinding("error", "rules", f"{target}: {line}"))
    for line in rule_warnings:
        out.append(PreflightFinding("warning", "rules", f"{target}: {line}"))
    only_source = tuple(sorted(set(source_vars) - set(target_vars)))
    only_target = tuple(sorted(set(target_vars) - set(source_vars)))
    if only_source:
        out.append(PreflightFinding(
            "warning", "variables",
            f"set in {source}, missing in {target}: {', '.join(only_source)}", only_source,
        ))  # fmt: skip
    if only_target:
        out.append(PreflightFinding(
            "warning", "variables",
            f"set in {target}, missing in {source} (untested there): {', '.join(only_target)}",
            only_target,
        ))  # fmt: skip
    if source_build_hash != target_build_hash:
        out.append(PreflightFinding(
            "info", "build",
            f"build-time variables differ from {target}'s (hash {source_build_hash or 'none'}"
            f" vs {target_build_hash}): the promote rebuilds the commit",
        ))  # fmt: skip
    hooks_source = tuple(sorted(set(source_webhooks) - set(target_webhooks)))
    hooks_target = tuple(sorted(set(target_webhooks) - set(source_webhooks)))
    if hooks_source:
        out.append(PreflightFinding(
            "warning", "webhooks",
            f"webhook sources declared in {source} and not in {target}: "
            f"{', '.join(hooks_source)}", hooks_source,
        ))  # fmt: skip
    if hooks_target:
        out.append(PreflightFinding(
            "warning", "webhooks",
            f"webhook sources declared in {target} and not in {source}: "
            f"{', '.join(hooks_target)}", hooks_target,
        ))  # fmt: skip
    if release_command:
        if dry_run is None:
            out.append(PreflightFinding(
                "info", "migrations",
                f"a release command will run against {target}'s data before it takes "
                f"traffic: {release_command}",
            ))  # fmt: skip
        else:
            command, lines, succeeded = dry_run
            out.append(PreflightFinding(
                "info" if succeeded else "warning", "migrations",
                f"pending migrations ({command}):" if succeeded
                else f"the dry run of the release command failed ({command})",
                output=lines,
            ))  # fmt: skip
    return tuple(out)


# Release commands with a dry run of their own: (pattern, how to make the dry run).
_DRY_RUNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bmanage\.py\s+migrate\b"), "append:--plan"),
    (re.compile(r"\balembic\b.*\bupgrade\b"), "append:--sql"),
    (
        re.compile(r"\bprisma\s+migrate\s+deploy\b"),
        "replace:prisma migrate deploy=prisma migrate status",
    ),
    (re.compile(r"\b(rails|rake)\s+db:migrate\b"), "replace:db:migrate=db:migrate:status"),
    (re.compile(r"\bmigrate\.py\b(?!.*--dry-run)"), "append:--dry-run"),
)


def migration_dry_run(command: str) -> str | None:
    """The dry run of a release/migrate command when the tool has one (Django's
    `migrate --plan`, Alembic's `upgrade --sql`, `prisma migrate status`, Rails'
    `db:migrate:status`, a `migrate.py` that takes `--dry-run`); None otherwise."""
    for pattern, how in _DRY_RUNS:
        if not pattern.search(command):
            continue
        kind, _, arg = how.partition(":")
        if kind == "append":
            return f"{command} {shlex.quote(arg)}"
        old, _, new = arg.partition("=")
        return command.replace(old, new, 1)
    return None
