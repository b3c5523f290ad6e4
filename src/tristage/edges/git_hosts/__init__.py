"""The git host registry: `tristage connect NAME` names a registered `GitHost`.

The built-ins (`github`, `gitlab`, `gitea`) register themselves as an outside host
would: a module that calls `register(...)`, or a package with an entry point in the
`tristage.git_hosts` group (loaded on first look-up), like the webhook providers.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from ...errors import UsageError
from .base import GitHost, HostApi, HostApiError, VerificationError

log = logging.getLogger("tristage.git_hosts")

ENTRY_POINT_GROUP = "tristage.git_hosts"

_REGISTRY: dict[str, GitHost] = {}
_entry_points_loaded = False

__all__ = [
    "GitHost",
    "HostApi",
    "HostApiError",
    "UnknownHost",
    "VerificationError",
    "get",
    "names",
    "register",
]


class UnknownHost(UsageError):
    """A host name no registered git host answers to."""


def register(host: GitHost, *, replace: bool = False) -> GitHost:
    if not isinstance(host, GitHost):
        raise TypeError(f"{host!r} does not implement GitHost")
    if host.name in _REGISTRY and not replace and _REGISTRY[host.name] is not host:
        raise ValueError(f"a git host {host.name!r} is already registered")
    _REGISTRY[host.name] = host
    return host


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
            register(loaded() if isinstance(loaded, type) else loaded)
        except Exception as exc:  # one broken plug-in does not take the ingest down
            log.error("git host %s (%s) could not be loaded: %s", ep.name, ep.value, exc)


def names() -> list[str]:
    _load_entry_points()
    return sorted(_REGISTRY)


def get(name: str) -> GitHost:
    host = _REGISTRY.get(name)
    if host is None:
        _load_entry_points()
        host = _REGISTRY.get(name)
    if host is None:
        raise UnknownHost(
            f"no git host {name!r}",
            f"use one of {', '.join(names())}, or register the host "
            f"(entry point group {ENTRY_POINT_GROUP})",
        )
    return host


from . import gitea, github, gitlab  # noqa: E402  (the built-ins register themselves)

del gitea, github, gitlab
