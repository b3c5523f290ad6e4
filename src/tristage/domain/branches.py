"""Which environment a branch deploys to, and the host label of a branch.

Rules are matched in declaration order: environments in the order of the file,
patterns in the order of each environment's `branches`. The first match wins.

An environment's own host (`ENV.P.localhost`, and `P.localhost` for production) follows
only the branches its exact patterns name (`dev`, `test`, `staging`, `main`). A branch
caught by a glob (`feature/*`, `*`) deploys with that environment's variables and data
but is served only at its branch host (`feature-x.P.localhost`) and deployment host:
a feature branch never takes over `development.P.localhost`, nor an unrelated branch
`preview.P.localhost`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

from .config import PipelineConfig


@dataclass(frozen=True)
class Match:
    branch: str
    environment: str
    pattern: str
    rule_index: int  # position of the pattern across all rules, in declaration order


def rules(config: PipelineConfig) -> list[tuple[str, str]]:
    """(environment, pattern) pairs in declaration order."""
    return [(env, pat) for env, cfg in config.environments.items() for pat in cfg.branches]


GLOB_CHARS = frozenset("*?[")


def is_glob(pattern: str) -> bool:
    """True for a pattern with a wildcard (`*`, `?`, `[...]`), False for a branch name."""
    return any(c in GLOB_CHARS for c in pattern)


def host_branches(config: PipelineConfig, environment: str) -> list[str]:
    """The branches whose deployments the environment's own host follows: the names
    its exact (non-glob) patterns give, in declaration order."""
    env = config.environments.get(environment)
    if env is None:
        return []
    return [p for p in env.branches if not is_glob(p)]


def follows_host(config: PipelineConfig, environment: str, branch: str) -> bool:
    """True when a deployment of `branch` for `environment` moves the environment's own
    host (its exact patterns name the branch); False for a branch a glob caught."""
    return branch in host_branches(config, environment)


# Triggers that name the environment outright: they move its host whatever the branch.
EXPLICIT_TRIGGERS = frozenset({"promote"})


def moves_host(config: PipelineConfig, environment: str, branch: str, trigger: str) -> bool:
    """Whether a deployment that became ready takes over its environment's own host:
    a promote always does; a push, deploy or redeploy only for a branch the
    environment's exact patterns name."""
    return trigger in EXPLICIT_TRIGGERS or follows_host(config, environment, branch)


def pattern_matches(pattern: str, branch: str) -> bool:
    # '*' matches across '/' too: `*` is the catch-all, `feature/*` takes `feature/a/b`.
    return fnmatchcase(branch, pattern)


def resolve(config: PipelineConfig, branch: str) -> Match | None:
    for i, (env, pat) in enumerate(rules(config)):
        if pattern_matches(pat, branch):
            return Match(branch=branch, environment=env, pattern=pat, rule_index=i)
    return None


_SLUG_RE = re.compile(r"[^a-z0-9]+")


def slug(branch: str, max_len: int = 50) -> str:
    """A DNS label for a branch: `feature/Login_Page` -> `feature-login-page`."""
    s = _SLUG_RE.sub("-", branch.lower()).strip("-")
    s = s[:max_len].rstrip("-")
    return s or "branch"
