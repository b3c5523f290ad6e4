"""Data isolation: a non-production environment never uses production's data store.

Compares each non-production environment's `DATABASE_URL` variable (if set) and its
`[environments.X.database]` with production's. URLs are compared by what they
point at (engine, host, port, database or file), not by spelling: credentials,
query strings and `postgres://` vs `postgresql://` do not matter.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

from ..config import DatabaseConfig
from ._base import ERROR, Context, Finding

VAR = "DATABASE_URL"
_LOOPBACK = {"localhost", "127.0.0.1", "::1", ""}

Target = tuple[str, ...]


def _host(host: str | None) -> str:
    h = (host or "").lower()
    return "loopback" if h in _LOOPBACK else h


def _norm(path: str) -> str:
    # normpath keeps a leading '//' (POSIX leaves it implementation-defined; on Linux
    # it is '/'), so every spelling of one file compares equal
    norm = posixpath.normpath(path)
    return "/" + norm.lstrip("/") if norm.startswith("//") else norm


def url_target(url: str) -> Target:
    """What a database URL points at, normalized."""
    text = url.strip()
    scheme, sep, _ = text.partition("://")
    scheme = scheme.lower().split("+")[0]
    if not sep:
        return ("sqlite", _norm(text))
    if scheme == "sqlite":
        path = text.split("://", 1)[1].split("?", 1)[0]
        # sqlite:///relative, sqlite:////absolute (SQLAlchemy style)
        path = path[1:] if path.startswith("/") else path
        return ("sqlite", _norm(unquote(path)) if path else ":memory:")
    if scheme in ("postgres", "postgresql"):
        parts = urlsplit(text)
        try:
            port = parts.port or 5432
        except ValueError:
            port = 5432
        db = unquote(parts.path.lstrip("/")) or (parts.username or "postgres")
        return ("postgres", _host(parts.hostname), str(port), db)
    return ("url", text.lower())


def config_target(project: str, env: str, db: DatabaseConfig) -> Target | None:
    """What an environment's `database` table points at, or None for its own default."""
    if db.engine == "sqlite":
        if not db.url:
            return None
        target = url_target(db.url)
        # a relative path lies inside the environment's own data directory: distinct
        return target if target[1].startswith(("/", "~")) else None
    if db.name is None:
        return None  # the default name includes the environment: distinct
    server = url_target(db.url or "postgresql://127.0.0.1:5432")
    return ("postgres", server[1], server[2], db.name)


def check(ctx: Context) -> Iterator[Finding]:
    prod = ctx.production
    if prod is None:
        return
    project = ctx.config.project.name
    prod_var = ctx.vars(prod).get(VAR)
    prod_cfg = config_target(project, prod, ctx.config.environments[prod].database)
    targets: dict[Target, str] = {}
    if prod_cfg is not None:
        targets[prod_cfg] = f"environments.{prod}.database"
    if prod_var is not None and prod_var.value:
        targets[url_target(prod_var.value)] = f"{prod}'s {VAR}"
    if not targets:
        return
    for env in ctx.environments():
        if ctx.is_production(env):
            continue
        mine = ctx.vars(env).get(VAR)
        if mine is not None and mine.value:
            hit = targets.get(url_target(mine.value))
            if hit:
                yield Finding(
                    "isolation.database",
                    ERROR,
                    env,
                    VAR,
                    f"points at production's data store (same as {hit}); {env} must never "
                    f"use production data. Point it at {env}'s own database, or remove it "
                    f"('tristage env rm {VAR} --env {ctx.config.owner(env)}') so {env} gets "
                    "its own store; fill it with 'tristage db clone' (sanitized)"
                    + ctx.origin_note(env, VAR),
                )
        owner = ctx.config.owner(env)
        cfg = config_target(project, owner, ctx.config.environments[owner].database)
        if cfg is not None and cfg in targets:
            yield Finding(
                "isolation.database",
                ERROR,
                env,
                None,
                f"environments.{owner}.database points at production's data store (same as "
                f"{targets[cfg]}); give {env} its own database in tristage.toml",
            )
