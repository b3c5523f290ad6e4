"""Webhook signing secrets: one per environment, and present where a source is declared.

Webhook secrets are the variables named `*_WEBHOOK_SECRET`, holding a `whsec_...`
value, or declared as a source's `secret_var` in `tristage.toml`. Two environments
that do not share instances must never hold the same one: a delivery signed for
one would be accepted by the other.
"""

from __future__ import annotations

from collections.abc import Iterator

from ._base import ERROR, Context, Finding


def secret_vars(ctx: Context, env: str) -> dict[str, str]:
    declared = {s.secret_var for s in ctx.config.environments[env].webhooks.values()}
    out = {}
    for name, r in ctx.vars(env).items():
        webhook = name in declared or name.endswith("_WEBHOOK_SECRET")
        if r.value and (webhook or r.value.startswith("whsec_")):
            out[name] = r.value
    return out


def check(ctx: Context) -> Iterator[Finding]:
    for env in ctx.environments():
        values = ctx.vars(env)
        for source, cfg in ctx.config.environments[env].webhooks.items():
            r = values.get(cfg.secret_var)
            if r is None or not r.value:
                yield Finding(
                    "webhooks.missing-secret",
                    ERROR,
                    env,
                    cfg.secret_var,
                    f"the webhook source {source!r} of {env} needs its signing secret: copy "
                    f"it from the {cfg.kind} dashboard endpoint of {env} and run: "
                    f"{ctx.set_cmd(env, cfg.secret_var)}",
                )
    for a, b in ctx.distinct_pairs():
        sa, sb = secret_vars(ctx, a), secret_vars(ctx, b)
        by_value = {v: n for n, v in sb.items()}
        for name_a, value in sorted(sa.items()):
            name_b = by_value.get(value)
            if name_b is None:
                continue
            for env in ctx.blamed(a, b):
                name, other, other_name = (name_a, b, name_b) if env == a else (name_b, a, name_a)
                same = "" if other_name == name else f" ({other_name} there)"
                yield Finding(
                    "webhooks.shared-secret",
                    ERROR,
                    env,
                    name,
                    f"{env} uses the same webhook signing secret as {other}{same}; create a "
                    f"separate webhook endpoint for {env} in the provider's dashboard and "
                    f"set its own secret: {ctx.set_cmd(env, name)}" + ctx.origin_note(env, name),
                )
