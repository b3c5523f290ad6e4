"""Which environment a branch deploys to, and the host label of a branch.

Rules are matched in declaration order: environments in the order of the file,
patterns in the order of each environment's `branches`. The first match wins.
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
