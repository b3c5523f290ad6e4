"""The git host registry: `tristage connect NAME` names a registered `GitHost`.

The built-ins (`github`, `gitlab`, `gitea`) register themselves as an outside host
would: a module that calls `register(...)`, or a package with an entry point in the
`tristage.git_hosts` group (loaded on first look-up), like the webhook providers.
"""

from __future__ import annotations

import logging

from ...errors import UsageError
from ..plugins import Registry
from .base import GitHost, HostApi, HostApiError, VerificationError

ENTRY_POINT_GROUP = "tristage.git_hosts"

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


_registry: Registry[GitHost] = Registry(
    GitHost, ENTRY_POINT_GROUP, "git host", UnknownHost, logging.getLogger("tristage.git_hosts")
)
register = _registry.register
names = _registry.names
get = _registry.get


from . import gitea, github, gitlab  # noqa: E402  (the built-ins register themselves)

del gitea, github, gitlab
