"""The webhook provider registry: `kind = "…"` in tristage.toml names a registered
`WebhookProvider`.

The built-ins (`clerk`, `stripe`, `standard`) register themselves exactly as an
outside provider does: a module that calls `register(...)`, or a package that declares
an entry point in the `tristage.webhook_providers` group (loaded on first look-up).
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from ...errors import TristageError
from .base import (
    TOLERANCE_SECONDS,
    SecretFormatError,
    VerificationError,
    Verified,
    WebhookProvider,
)

log = logging.getLogger("tristage.webhooks")

ENTRY_POINT_GROUP = "tristage.webhook_providers"

_REGISTRY: dict[str, WebhookProvider] = {}
_entry_points_loaded = False

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


def register(provider: WebhookProvider, *, replace: bool = False) -> WebhookProvider:
    """Make `provider` available as `kind = provider.name`."""
    if not isinstance(provider, WebhookProvider):
        raise TypeError(f"{provider!r} does not implement WebhookProvider")
    if provider.name in _REGISTRY and not replace and _REGISTRY[provider.name] is not provider:
        raise ValueError(f"a webhook provider {provider.name!r} is already registered")
    _REGISTRY[provider.name] = provider
    return provider


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
            register(loaded() if isinstance(loaded, type) else loaded)
        except Exception as exc:  # one broken plug-in does not take the gateway down
            log.error("webhook provider %s (%s) could not be loaded: %s", ep.name, ep.value, exc)


def names() -> list[str]:
    _load_entry_points()
    return sorted(_REGISTRY)


def get(name: str) -> WebhookProvider:
    provider = _REGISTRY.get(name)
    if provider is None:
        _load_entry_points()
        provider = _REGISTRY.get(name)
    if provider is None:
        raise UnknownProvider(
            f"no webhook provider {name!r}",
            f"use one of {', '.join(names())} as kind, or register the provider "
            f"(entry point group {ENTRY_POINT_GROUP})",
        )
    return provider


from . import clerk, standard, stripe  # noqa: E402  (the built-ins register themselves)

del clerk, standard, stripe
