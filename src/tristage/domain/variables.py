"""Variables of a project: scopes, resolution and the defaults for new variables.

Pure. A stored variable (`Entry`) lives in one scope: one environment, optionally
narrowed to one branch, or `SHARED` (every environment). Resolution for a
deployment of `environment` from `branch` picks, for each name:

    branch-specific value  >  environment value  >  value shared by all environments

An environment that `shares` another (the `simple` preset's preview) resolves the
owner's values: `config.owner(environment)` is the scope that is read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from .config import VAR_RE, PipelineConfig
from .mask import MASK as MASK  # re-exported: where the faces import it from

SHARED = "*"  # the scope of a value shared by every environment

Source = Literal["branch", "environment", "shared"]

# Names that hold a secret unless said otherwise (`--no-secret`).
_SECRET_NAME = re.compile(
    r"(SECRET|PASSWORD|PASSWD|TOKEN|PRIVATE|CREDENTIAL|API_KEY|DEPLOY_KEY|_KEY$|^DATABASE_URL$|_DSN$)"
)
# Values that are secrets whatever their name (provider key formats).
_SECRET_VALUE = re.compile(r"^(sk_(live|test)_|rk_(live|test)_|whsec_|(prod|preview|dev):[^|]+\|)")
_PUBLIC_PREFIXES = ("NEXT_PUBLIC_", "VITE_", "PUBLIC_", "EXPO_PUBLIC_")


@dataclass(frozen=True)
class Entry:
    """One stored variable, its value in the clear (the service decrypts secrets)."""

    name: str
    scope: str  # an environment name, or SHARED
    branch: str | None
    value: str
    secret: bool
    build: bool
    set_at: float  # when the value last changed (rotation)


@dataclass(frozen=True)
class Resolved:
    """The value a deployment receives, and where it comes from."""

    name: str
    value: str
    secret: bool
    build: bool
    set_at: float
    source: Source
    scope: str
    branch: str | None

    @property
    def origin(self) -> str:
        return scope_label(self.scope, self.branch)


def scope_label(scope: str, branch: str | None) -> str:
    base = "all environments" if scope == SHARED else scope
    return f"{base} (branch {branch})" if branch else base


def valid_name(name: str) -> bool:
    return bool(VAR_RE.match(name))


def default_build(name: str) -> bool:
    """`NEXT_PUBLIC_*` (and other bundler-public prefixes) are inlined at build time."""
    return name.startswith(_PUBLIC_PREFIXES)


def looks_secret(name: str, value: str) -> bool:
    """Whether a variable is a secret when `--secret/--no-secret` is not given."""
    if _SECRET_VALUE.match(value):
        return True
    if name.startswith(_PUBLIC_PREFIXES):
        return False
    return bool(_SECRET_NAME.search(name))


def shown(value: str, secret: bool, reveal: bool = False) -> str:
    return value if reveal or not secret else MASK


def resolve(
    config: PipelineConfig,
    entries: Iterable[Entry],
    environment: str,
    branch: str | None = None,
) -> dict[str, Resolved]:
    """The variables a deployment of `environment` (built from `branch`) receives."""
    owner = config.owner(environment)
    rank: dict[str, tuple[int, Entry]] = {}
    for e in entries:
        if e.scope == owner and e.branch is not None:
            if branch is None or e.branch != branch:
                continue
            level = 2
        elif e.scope == owner:
            level = 1
        elif e.scope == SHARED and e.branch is None:
            level = 0
        else:
            continue
        best = rank.get(e.name)
        if best is None or level > best[0]:
            rank[e.name] = (level, e)
    sources: dict[int, Source] = {2: "branch", 1: "environment", 0: "shared"}
    return {
        name: Resolved(
            name=e.name,
            value=e.value,
            secret=e.secret,
            build=e.build,
            set_at=e.set_at,
            source=sources[level],
            scope=e.scope,
            branch=e.branch,
        )
        for name, (level, e) in sorted(rank.items())
    }


def resolve_all(
    config: PipelineConfig,
    entries: Iterable[Entry],
    branches: dict[str, str | None] | None = None,
) -> dict[str, dict[str, Resolved]]:
    """Resolution for every declared environment (`branches` narrows some to a branch)."""
    items = list(entries)
    return {
        env: resolve(config, items, env, (branches or {}).get(env)) for env in config.environments
    }
