"""Sanitize rules: every `[sanitize]` entry must name a rule that exists.

A typo (`"kep"`) would otherwise surface only when a clone is refused; `tristage check`
names the entry and the closest rule.
"""

from __future__ import annotations

from collections.abc import Iterator

from .. import sanitize
from ._base import ERROR, Context, Finding


def check(ctx: Context) -> Iterator[Finding]:
    environment = ctx.production or next(iter(ctx.config.environments), "-")
    for ref, value in ctx.config.sanitize_columns.items():
        problem = None
        if ref.count(".") < 1 or ref.startswith(".") or ref.endswith("."):
            problem = f'{ref!r} must name a column as "table.column"'
        else:
            try:
                sanitize.parse_rule(value)
            except ValueError as exc:
                problem = str(exc)
        if problem:
            yield Finding(
                "sanitize.unknown-rule",
                ERROR,
                environment,
                None,
                f"[sanitize] {ref!r}: {problem}; fix it in tristage.toml",
            )
