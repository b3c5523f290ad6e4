"""Live API keys in variables no provider module claims (e.g. `SECRET_KEY=sk_live_...`)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from ._base import ERROR, Context, Finding
from ._keys import claimed

LIVE = re.compile(r"^(sk|pk|rk)_live_[A-Za-z0-9]")


def check(ctx: Context) -> Iterator[Finding]:
    for env in ctx.environments():
        if ctx.is_production(env):
            continue
        for name, r in ctx.vars(env).items():
            if claimed(name) or not LIVE.match(r.value):
                continue
            yield Finding(
                "keys.live-outside-production",
                ERROR,
                env,
                name,
                f"holds a live-mode API key in {env}; live keys belong only in production. "
                f"Use the provider's test-mode key and run: {ctx.set_cmd(env, name)}"
                + ctx.origin_note(env, name),
            )
