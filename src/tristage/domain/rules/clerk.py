"""Clerk: publishable `pk_test_/pk_live_` and secret `sk_test_/sk_live_` keys.

Besides the shared mode rules: an environment with one Clerk key needs both, and
the frontend API host encoded in the publishable key (base64 after the prefix,
ending in `$`) must match `NEXT_PUBLIC_CLERK_FRONTEND_API_URL` when both are set.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

from ._base import ERROR, Context, Finding
from ._keys import KeyFamily, keys, mode_findings, register

FAMILY = register(
    KeyFamily(
        provider="clerk",
        title="Clerk",
        marker="CLERK",
        pattern=re.compile(r"^(?P<kind>pk|sk)_(?P<mode>live|test)_"),
        where="Clerk dashboard > API keys of the development or production instance",
    )
)
PUBLISHABLE = "NEXT_PUBLIC_CLERK_PUBLISHABLE_KEY"
SECRET = "CLERK_SECRET_KEY"
FRONTEND_URL = "NEXT_PUBLIC_CLERK_FRONTEND_API_URL"


def frontend_host(publishable_key: str) -> str | None:
    """The frontend API host a publishable key encodes, or None if it is malformed."""
    m = re.match(r"^pk_(live|test)_([A-Za-z0-9+/=_-]+)$", publishable_key)
    if not m:
        return None
    data = m.group(2)
    try:
        text = base64.b64decode(
            data + "=" * (-len(data) % 4), altchars=b"-_" if "-" in data or "_" in data else None
        ).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not text.endswith("$") or len(text) < 2:
        return None
    return text[:-1].lower()


def _host(url: str) -> str:
    parts = urlsplit(url if "//" in url else f"//{url}")
    return (parts.hostname or "").lower()


def check(ctx: Context) -> Iterator[Finding]:
    yield from mode_findings(ctx, FAMILY)
    for env in ctx.environments():
        found = keys(ctx, FAMILY, env)
        kinds = {k.kind for k in found}
        if kinds == {"pk"}:
            yield Finding(
                "clerk.missing-key",
                ERROR,
                env,
                SECRET,
                f"{env} has a Clerk publishable key but no secret key; Clerk needs both. "
                f"Run: {ctx.set_cmd(env, SECRET)}",
            )
        elif kinds == {"sk"}:
            yield Finding(
                "clerk.missing-key",
                ERROR,
                env,
                PUBLISHABLE,
                f"{env} has a Clerk secret key but no publishable key; Clerk needs both. "
                f"Run: {ctx.set_cmd(env, PUBLISHABLE, secret=False)}",
            )
        values = ctx.vars(env)
        for k in found:
            if k.kind != "pk":
                continue
            r = values[k.variable]
            host = frontend_host(r.value)
            if host is None:
                yield Finding(
                    "clerk.malformed-key",
                    ERROR,
                    env,
                    k.variable,
                    "is not a Clerk publishable key (pk_test_/pk_live_ then the base64 of "
                    "the frontend API host followed by '$'); copy it again from the Clerk "
                    f"dashboard and run: {ctx.set_cmd(env, k.variable, secret=False)}",
                )
                continue
            url = values.get(FRONTEND_URL)
            if url is None or not url.value:
                continue
            if _host(url.value) != host:
                detail = "" if url.secret or r.secret else f" ({host} vs {_host(url.value)})"
                yield Finding(
                    "clerk.frontend-api-mismatch",
                    ERROR,
                    env,
                    FRONTEND_URL,
                    f"does not match the frontend API host encoded in {k.variable}{detail}; "
                    "both must come from the same Clerk instance: copy them together from "
                    f"the Clerk dashboard and run: {ctx.set_cmd(env, FRONTEND_URL, False)}",
                )
