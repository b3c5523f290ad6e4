"""Secrets older than the rotation period (`[policy] rotation_days`, default 90: quarterly)."""

from __future__ import annotations

from collections.abc import Iterator

from ..variables import SHARED
from ._base import WARNING, Context, Finding

DAY = 86400.0


def check(ctx: Context) -> Iterator[Finding]:
    days = ctx.config.policy.rotation_days
    for env in ctx.environments():
        for name, r in ctx.vars(env).items():
            if not r.secret:
                continue
            age = (ctx.now - r.set_at) / DAY
            if age > days:
                where = "--all" if r.scope == SHARED else f"--env {r.scope}"
                branch = f" --branch {r.branch}" if r.branch else ""
                yield Finding(
                    "rotation.overdue",
                    WARNING,
                    env,
                    name,
                    f"last set {int(age)} days ago (rotation period: {days} days); rotate it "
                    f"at its provider and run: tristage env set {name} {where}{branch} --secret",
                )
