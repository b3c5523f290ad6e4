"""Rules: executable checks over a project's configuration and variables.

Pure. Each module of this package (whose name does not start with ``_``) holds one
provider's or one concern's rules and exposes ``check(ctx) -> Iterable[Finding]``;
adding a provider is adding one module. A finding names its rule id, severity,
environment and variable, and says how to fix it. No rule ever puts a secret
value in a message.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from types import ModuleType

from ._base import ERROR, WARNING, Context, DatabaseAuth, Finding, RuleViolation, Severity

__all__ = [
    "ERROR",
    "WARNING",
    "Context",
    "DatabaseAuth",
    "Finding",
    "RuleViolation",
    "Severity",
    "modules",
    "run",
]

Check = Callable[[Context], Iterable[Finding]]
_MODULES: list[ModuleType] | None = None


def modules() -> list[ModuleType]:
    """Every rule module of this package, in name order (imported once)."""
    global _MODULES
    if _MODULES is None:
        found = []
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            if info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{__name__}.{info.name}")
            if callable(getattr(module, "check", None)):
                found.append(module)
        _MODULES = found
    return _MODULES


def run(ctx: Context, environment: str | None = None) -> list[Finding]:
    """Every finding (of `environment` only, if given): errors first, then by env and rule."""
    findings: list[Finding] = []
    seen: set[Finding] = set()
    for module in modules():
        check: Check = module.check
        for f in check(ctx):
            if environment is not None and f.environment != environment:
                continue
            if f not in seen:
                seen.add(f)
                findings.append(f)
    order = list(ctx.config.environments)
    findings.sort(
        key=lambda f: (
            f.severity != ERROR,
            order.index(f.environment) if f.environment in order else len(order),
            f.rule,
            f.variable or "",
        )
    )
    return findings
