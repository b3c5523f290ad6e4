"""Variables an environment declares as `required` in `tristage.toml` must be set."""

from __future__ import annotations

from collections.abc import Iterator

from ..variables import looks_secret
from ._base import ERROR, Context, Finding


def check(ctx: Context) -> Iterator[Finding]:
    for env in ctx.environments():
        values = ctx.vars(env)
        for name in ctx.config.environments[env].required:
            r = values.get(name)
            if r is not None and r.value != "":
                continue
            what = "is empty" if r is not None else "is not set"
            yield Finding(
                "required.missing",
                ERROR,
                env,
                name,
                f"{what}, and environments.{env}.required lists it. Run: "
                f"{ctx.set_cmd(env, name, looks_secret(name, ''))}",
            )
