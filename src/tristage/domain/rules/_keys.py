"""API keys with a test/live mode in their prefix (Stripe, Clerk, ...), described as data.

A provider module declares a `KeyFamily` and calls `register`; `mode_findings` then
gives the three mode rules every such provider shares: a live key outside
production (error), a test key in production (warning), mixed modes in one
environment (error).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from ._base import ERROR, WARNING, Context, Finding


@dataclass(frozen=True)
class KeyFamily:
    provider: str  # rule id prefix and display name, e.g. "stripe"
    title: str  # "Stripe"
    marker: str  # variables whose name contains this belong to the provider
    pattern: re.Pattern[str]  # named groups `kind` and `mode` (live|test)
    where: str  # where to find the keys of the other mode


@dataclass(frozen=True)
class Key:
    variable: str
    kind: str  # sk, pk, rk...
    mode: str  # live | test


FAMILIES: dict[str, KeyFamily] = {}


def register(family: KeyFamily) -> KeyFamily:
    FAMILIES[family.provider] = family
    return family


def keys(ctx: Context, family: KeyFamily, environment: str) -> list[Key]:
    out = []
    for name, r in ctx.vars(environment).items():
        if family.marker not in name.upper():
            continue
        m = family.pattern.match(r.value)
        if m:
            out.append(Key(name, m.group("kind"), m.group("mode")))
    return out


def claimed(name: str) -> bool:
    """Whether a variable name belongs to a registered provider."""
    upper = name.upper()
    return any(f.marker in upper for f in FAMILIES.values())


def mode_findings(ctx: Context, family: KeyFamily) -> Iterator[Finding]:
    p, title = family.provider, family.title
    for env in ctx.environments():
        found = keys(ctx, family, env)
        for k in found:
            if k.mode == "live" and not ctx.is_production(env):
                yield Finding(
                    f"{p}.live-outside-production",
                    ERROR,
                    env,
                    k.variable,
                    f"a live {title} key in {env} ({ctx.tier(env).value} tier); live keys "
                    f"belong only in production. Use the test-mode key ({family.where}) "
                    f"and run: {ctx.set_cmd(env, k.variable, k.kind != 'pk')}"
                    + ctx.origin_note(env, k.variable),
                )
            elif k.mode == "test" and ctx.is_production(env):
                yield Finding(
                    f"{p}.test-in-production",
                    WARNING,
                    env,
                    k.variable,
                    f"a test-mode {title} key in production: switch to the live key after "
                    f"validation ({family.where}) with: "
                    f"{ctx.set_cmd(env, k.variable, k.kind != 'pk')}",
                )
        modes = {k.mode for k in found}
        if len(modes) > 1:
            live = sorted(k.variable for k in found if k.mode == "live")
            test = sorted(k.variable for k in found if k.mode == "test")
            fix_vars = test if ctx.is_production(env) else live
            yield Finding(
                f"{p}.mixed-modes",
                ERROR,
                env,
                ", ".join(fix_vars),
                f"{title} keys of {env} mix modes (live: {', '.join(live)}; test: "
                f"{', '.join(test)}); all keys of one environment must come from the same "
                f"mode ({family.where}). Run: "
                + "; ".join(
                    ctx.set_cmd(env, v, not v.startswith("NEXT_PUBLIC_")) for v in fix_vars
                ),
            )
