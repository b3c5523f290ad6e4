"""The sandbox policy: `[policy] sandbox = "off"` lets preview and production run unsandboxed."""

from __future__ import annotations

from collections.abc import Iterator

from ..config import Tier
from ._base import WARNING, Context, Finding


def check(ctx: Context) -> Iterator[Finding]:
    if ctx.config.policy.sandbox != "off":
        return
    for env in ctx.config.environments:
        tier = ctx.config.env(env).tier
        if tier is Tier.development:
            continue
        yield Finding(
            "sandbox.off",
            WARNING,
            env,
            None,
            f'[policy] sandbox = "off": where the sandbox cannot run, this {tier.value} '
            "environment runs unsandboxed and its code can read the platform's files and "
            "other environments' data; make 'tristage doctor' pass, then remove the setting",
        )
