"""Stripe: `sk_/pk_/rk_` keys in `live` or `test` mode.

Live keys only in production (error elsewhere), a test key in production is a
warning, mixed modes in one environment are an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from ._base import Context, Finding
from ._keys import KeyFamily, mode_findings, register

FAMILY = register(
    KeyFamily(
        provider="stripe",
        title="Stripe",
        marker="STRIPE",
        pattern=re.compile(r"^(?P<kind>sk|pk|rk)_(?P<mode>live|test)_"),
        where="Stripe dashboard > Developers > API keys, 'Test mode' toggle",
    )
)


def check(ctx: Context) -> Iterator[Finding]:
    yield from mode_findings(ctx, FAMILY)
