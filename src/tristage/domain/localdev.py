"""Local development (`tristage dev`): the process environment, and the guard that
keeps production out of it.

Pure. The guide's rule is "never point local dev to production": the environment
a local run would get (the shell's variables, then the environment's resolved
variables, then its `DATABASE_URL` and `PORT`) is refused when

- `DATABASE_URL` points at production's data store (compared by what it points at:
  engine, host, port, database or file; not by spelling),
- any value equals one of production's secret values (whichever the name), or
- a provider key (Stripe, Clerk, ...) is in live mode.

A refusal names the variable, never its value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .rules import _keys, modules
from .rules.isolation import Target, url_target

MIN_SECRET = 6  # shorter production secret values are not compared (too likely to collide)
LOCAL_DEPLOYMENT = "local"


@dataclass(frozen=True)
class Refusal:
    variable: str
    why: str

    def __str__(self) -> str:
        return f"{self.variable} {self.why}"


def compose(
    shell: Mapping[str, str],
    resolved: Mapping[str, str],
    *,
    database_url: str,
    port: int,
    environment: str,
    branch: str | None,
    commit: str | None,
    path_prefix: tuple[str, ...] = (),
) -> dict[str, str]:
    """The local process environment: the environment's variables win over the shell's."""
    env = {**shell, **resolved}
    if not resolved.get("DATABASE_URL"):  # a DATABASE_URL variable overrides the store
        env["DATABASE_URL"] = database_url
    env.update(
        PORT=str(port),
        TRISTAGE_ENV=environment,
        TRISTAGE_DEPLOYMENT=LOCAL_DEPLOYMENT,
        PYTHONUNBUFFERED="1",
    )
    if branch:
        env["TRISTAGE_GIT_BRANCH"] = branch
    if commit:
        env["TRISTAGE_GIT_COMMIT"] = commit
    if path_prefix:
        env["PATH"] = ":".join([*path_prefix, shell.get("PATH", "/usr/local/bin:/usr/bin:/bin")])
    return env


def refusals(
    env: Mapping[str, str],
    production: str,
    production_stores: Mapping[Target, str],
    production_secrets: Mapping[str, str],
) -> list[Refusal]:
    """Why `env` must not run locally (empty: it may).

    `production_stores` maps what production's data store points at to where that is
    declared; `production_secrets` maps production's secret names to their values.
    """
    out: list[Refusal] = []
    url = env.get("DATABASE_URL")
    if url:
        stores = {_normal(t): where for t, where in production_stores.items()}
        hit = stores.get(_normal(url_target(url)))
        if hit:
            out.append(
                Refusal(
                    "DATABASE_URL",
                    f"points at {production}'s data store ({hit}): local development never "
                    "uses production data; use the environment's own store, filled with "
                    "'tristage db clone' (sanitized)",
                )
            )
    by_value: dict[str, str] = {}
    for name, value in production_secrets.items():
        if len(value) >= MIN_SECRET:
            by_value.setdefault(value, name)
    for name in sorted(env):
        value = env[name]
        source = by_value.get(value)
        if source is not None and name != "DATABASE_URL":
            same = "" if source == name else f" (the value of {source})"
            out.append(
                Refusal(
                    name,
                    f"holds {production}'s secret{same}: unset it in your shell or set a "
                    f"development value with 'tristage env set {name} --env development'",
                )
            )
            continue
        live = live_key(name, value)
        if live is not None:
            out.append(
                Refusal(
                    name,
                    f"holds a live {live} key: local development uses test keys "
                    f"('tristage env set {name} --env development')",
                )
            )
    return out


def _normal(target: Target) -> Target:
    """`sqlite:////abs` and `sqlite:///abs` name the same file ('//x' survives normpath)."""
    if target and target[0] == "sqlite" and len(target) > 1 and target[1].startswith("//"):
        return ("sqlite", "/" + target[1].lstrip("/"), *target[2:])
    return target


def live_key(name: str, value: str) -> str | None:
    """The provider title when `value` is a live-mode key of a registered provider."""
    modules()  # registers every provider's key family
    upper = name.upper()
    for family in _keys.FAMILIES.values():
        if family.marker not in upper:
            continue
        m = family.pattern.match(value)
        if m and m.group("mode") == "live":
            return family.title
    return None


_MISSING = (
    ("python", re.compile(r"ModuleNotFoundError: No module named '([^']+)'")),
    ("python", re.compile(r"ImportError: cannot import name '[^']+' from '([^']+)'")),
    ("node", re.compile(r"Cannot find (?:module|package) '([^']+)'")),
)


def missing_module(line: str) -> tuple[str, str] | None:
    """(language, module) when an app's output line says a module is not installed."""
    for kind, pattern in _MISSING:
        m = pattern.search(line)
        if m:
            return kind, m.group(1)
    return None


def missing_hint(kind: str, module: str, using: tuple[str, ...]) -> str:
    """What to do when the app could not import `module` in the environment `using`."""
    where = "; ".join(using) or "the shell's environment (no Python or Node app found)"
    if kind == "node":
        fix = f"add it to package.json ('npm install {module.split('/')[0]}'), or check the name"
    else:
        top = module.split(".")[0]
        fix = (
            f"add the package that provides '{top}' to requirements.txt or pyproject.toml "
            "and run 'tristage dev' again (it installs changed requirements), or check "
            "the name"
        )
    return f"tristage dev: the app could not import '{module}'; it ran with {where}. Fix: {fix}"
