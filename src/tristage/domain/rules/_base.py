"""The vocabulary of rules: findings, the context they read, the deploy-blocking error."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Literal

from ...errors import TristageError
from ..config import PipelineConfig, Tier
from ..variables import SHARED, Resolved

Severity = Literal["error", "warning"]
ERROR: Severity = "error"
WARNING: Severity = "warning"


@dataclass(frozen=True)
class Finding:
    rule: str  # e.g. "stripe.live-outside-production"
    severity: Severity
    environment: str
    variable: str | None
    message: str  # what is wrong and how to fix it; never a secret value

    def line(self) -> str:
        var = f" {self.variable}" if self.variable else ""
        return f"{self.severity} [{self.rule}] {self.environment}{var}: {self.message}"

    def as_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "environment": self.environment,
            "variable": self.variable,
            "message": self.message,
        }


class RuleViolation(TristageError):
    """A deploy (or a strict variable change) refused: a rule with severity `error` failed."""

    def __init__(
        self, environment: str, errors: list[Finding], *, action: str | None = None
    ) -> None:
        self.environment = environment
        self.findings = errors
        n = len(errors)
        lines = "\n".join(f"  [{f.rule}] {f.variable or '-'}: {f.message}" for f in errors)
        what = action or f"deploy to {environment} refused"
        super().__init__(
            f"{what}: {n} rule error{'s' if n != 1 else ''}\n{lines}",
            f"fix the above, then run 'tristage check --env {environment}'",
        )


@dataclass(frozen=True)
class DatabaseAuth:
    """What an environment's PostgreSQL server did with its role and a wrong password."""

    server: str  # host:port, no credentials
    role: str
    # password: refused for the password; trust: accepted anyway; other: refused for
    # another reason (no pg_hba.conf line, ident, ...); unreachable: no answer
    outcome: Literal["password", "trust", "other", "unreachable"]
    detail: str = ""  # what the server (or the client) said; never a secret


@dataclass(frozen=True)
class Context:
    """Everything rules read: the configuration, every environment's resolved variables,
    and the facts the services gathered about the data stores."""

    config: PipelineConfig
    values: Mapping[str, Mapping[str, Resolved]]  # environment -> name -> resolved
    now: float
    # owner environment -> how its PostgreSQL server answered the password probe
    databases: Mapping[str, DatabaseAuth] = field(default_factory=dict)

    # -- views -------------------------------------------------------------
    @property
    def production(self) -> str | None:
        return self.config.production

    def tier(self, environment: str) -> Tier:
        return self.config.environments[environment].tier

    def is_production(self, environment: str) -> bool:
        return self.tier(environment) == Tier.production

    def environments(self) -> list[str]:
        return [e for e in self.config.environments if e in self.values]

    def vars(self, environment: str) -> Mapping[str, Resolved]:
        return self.values.get(environment, {})

    def distinct_pairs(self) -> Iterator[tuple[str, str]]:
        """Pairs of environments that do not share instances (so must not share secrets)."""
        for a, b in combinations(self.environments(), 2):
            if self.config.owner(a) != self.config.owner(b):
                yield a, b

    def blamed(self, a: str, b: str) -> list[str]:
        """Which of two environments must change when they collide: never production."""
        out = [e for e in (a, b) if not self.is_production(e)]
        return out or [a, b]

    # -- fixes ---------------------------------------------------------------
    def set_cmd(self, environment: str, name: str, secret: bool = True) -> str:
        """The command that gives `environment` its own value of `name`."""
        flag = " --secret" if secret else ""
        return f"tristage env set {name} --env {self.config.owner(environment)}{flag}"

    def origin_note(self, environment: str, name: str) -> str:
        """Where the offending value comes from, when that is not the environment itself."""
        r = self.vars(environment).get(name)
        if r is None:
            return ""
        if r.scope == SHARED:
            return (
                f" (the value is shared by all environments: remove it with "
                f"'tristage env rm {name} --all' and set it per environment)"
            )
        if r.scope != environment:
            return f" (inherited from {r.origin}, which {environment} shares)"
        if r.branch:
            return f" (set for branch {r.branch})"
        return ""
