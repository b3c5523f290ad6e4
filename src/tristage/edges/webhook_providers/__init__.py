"""The webhook provider registry: `kind = "…"` in tristage.toml names a registered
`WebhookProvider`.

The built-ins (`clerk`, `stripe`, `standard`) register themselves exactly as an
outside provider does: a module that calls `register(...)`, or a package that declares
an entry point in the `tristage.webhook_providers` group (loaded on first look-up).
"""

from __future__ import annotations

import logging

from ...errors import TristageError
from ..plugins import Registry
from .base import (
    TOLERANCE_SECONDS,
    SecretFormatError,
    VerificationError,
    Verified,
    WebhookProvider,
)

ENTRY_POINT_GROUP = "tristage.webhook_providers"

__all__ = [
    "TOLERANCE_SECONDS",
    "SecretFormatError",
    "UnknownProvider",
    "VerificationError",
    "Verified",
    "WebhookProvider",
    "get",
    "names",
    "register",
    "unregister",
]


class UnknownProvider(TristageError):
    """A source's `kind` that no registered provider answers to."""


_registry: Registry[WebhookProvider] = Registry(
    WebhookProvider,
    ENTRY_POINT_GROUP,
    "webhook provider",
    UnknownProvider,
    logging.getLogger("tristage.webhooks"),
    usage=" as kind",
)
register = _registry.register
unregister = _registry.unregister
names = _registry.names
get = _registry.get


from . import clerk, standard, stripe  # noqa: E402  (the built-ins register themselves)

del clerk, standard, stripe
