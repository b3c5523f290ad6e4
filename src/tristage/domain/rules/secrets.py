"""App secrets (CSRF, session) equal between production and another environment.

The guide allows sharing them, so this is a warning; under `[policy] strict = true`
it is an error.
"""

from __future__ import annotations

from collections.abc import Iterator

from ._base import ERROR, WARNING, Context, Finding

NAMES = ("CSRF_SECRET", "SESSION_SECRET")


def check(ctx: Context) -> Iterator[Finding]:
    prod = ctx.production
    if prod is None or prod not in ctx.values:
        return
    severity = ERROR if ctx.config.policy.strict else WARNING
    for env in ctx.environments():
        if env == prod or ctx.config.owner(env) == prod:
            continue
        for name in NAMES:
            mine, theirs = ctx.vars(env).get(name), ctx.vars(prod).get(name)
            if mine and theirs and mine.value and mine.value == theirs.value:
                yield Finding(
                    "secrets.shared-with-production",
                    severity,
                    env,
                    name,
                    f"{env} uses production's {name}: a token issued by one is accepted by "
                    f"the other. Generate a new one (e.g. `openssl rand -hex 32`) and run: "
                    f"{ctx.set_cmd(env, name)}" + ctx.origin_note(env, name),
                )
