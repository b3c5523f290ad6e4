"""Clerk: signed by Svix. Both `svix-*` and unbranded `webhook-*` headers are accepted
(the Svix libraries read either); the app gets `svix-*`, the names Clerk's SDK reads."""

from __future__ import annotations

from . import register
from .standard import SvixScheme

PROVIDER = register(SvixScheme("clerk", accept=("svix-", "webhook-"), forward="svix-"))
