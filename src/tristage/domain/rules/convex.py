"""Convex: deploy keys per environment, and the deployment name agreeing with its URL.

- A `CONVEX_DEPLOY_KEY` for a production deployment (`prod:...`) in a development
  environment is an error: never point local development at production.
- Environments that do not share instances must have distinct deploy keys.
- `CONVEX_DEPLOYMENT=dev:NAME` must agree with `NEXT_PUBLIC_CONVEX_URL=https://NAME.convex.cloud`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

from ..config import Tier
from ._base import ERROR, Context, Finding

DEPLOY_KEY = "CONVEX_DEPLOY_KEY"
DEPLOYMENT = "CONVEX_DEPLOYMENT"
URL = "NEXT_PUBLIC_CONVEX_URL"
_DEPLOYMENT_RE = re.compile(r"^\s*(?:(?P<kind>dev|prod|preview):)?(?P<name>[a-z0-9-]+)")


def deployment_name(value: str) -> str | None:
    """`dev:happy-otter-123 # team: x` -> `happy-otter-123`."""
    m = _DEPLOYMENT_RE.match(value)
    return m.group("name") if m else None


def url_name(url: str) -> str | None:
    host = (urlsplit(url.strip()).hostname or "").lower()
    if not host.endswith(".convex.cloud"):
        return None
    return host.removesuffix(".convex.cloud").split(".")[0] or None


def check(ctx: Context) -> Iterator[Finding]:
    for env in ctx.environments():
        values = ctx.vars(env)
        key = values.get(DEPLOY_KEY)
        if key and key.value.startswith("prod:") and ctx.tier(env) == Tier.development:
            yield Finding(
                "convex.prod-key-in-development",
                ERROR,
                env,
                DEPLOY_KEY,
                f"{env} holds a deploy key of a production Convex deployment; never point "
                "local development at production. Generate a development deploy key "
                f"(Convex dashboard > Settings > Deploy keys) and run: "
                f"{ctx.set_cmd(env, DEPLOY_KEY)}" + ctx.origin_note(env, DEPLOY_KEY),
            )
        dep, url = values.get(DEPLOYMENT), values.get(URL)
        if dep and url and dep.value and url.value:
            a, b = deployment_name(dep.value), url_name(url.value)
            if a is None or b is None or a != b:
                shown = "" if dep.secret or url.secret else f" ({a or '?'} vs {b or '?'})"
                yield Finding(
                    "convex.url-mismatch",
                    ERROR,
                    env,
                    URL,
                    f"does not name the same deployment as {DEPLOYMENT}{shown}; "
                    f"{URL} must be https://NAME.convex.cloud for {DEPLOYMENT}=dev:NAME. Run: "
                    f"{ctx.set_cmd(env, URL, secret=False)}",
                )
    for a, b in ctx.distinct_pairs():
        ka, kb = ctx.vars(a).get(DEPLOY_KEY), ctx.vars(b).get(DEPLOY_KEY)
        if ka and kb and ka.value and ka.value == kb.value:
            for env in ctx.blamed(a, b):
                other = b if env == a else a
                yield Finding(
                    "convex.shared-deploy-key",
                    ERROR,
                    env,
                    DEPLOY_KEY,
                    f"{env} and {other} use the same Convex deploy key; every environment "
                    "needs its own deployment and key. Run: "
                    f"{ctx.set_cmd(env, DEPLOY_KEY)}" + ctx.origin_note(env, DEPLOY_KEY),
                )
