"""Project commands: init, resolve, audit."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

import typer

from ..domain.aliases import branch_host, environment_host
from ..domain.branches import follows_host
from ..domain.branches import resolve as resolve_branch
from ..errors import EXIT_FAILED
from .common import console, current_project, err_console, get_api, print_json, when
from .tables import print_table


class PresetName(StrEnum):
    simple = "simple"
    professional = "professional"


def init(
    preset: PresetName = typer.Option(
        PresetName.professional,
        "--preset",
        "-p",
        help="simple: preview shares development's instances; professional: separate staging.",
    ),
    name: str | None = typer.Option(None, "--name", "-n", help="Project name (a host label)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing tristage.toml."),
    directory: Path = typer.Option(Path("."), "--dir", help="The git working copy."),
) -> None:
    """Write a commented tristage.toml for a preset in this git working copy."""
    api = get_api()
    chosen: Literal["simple", "professional"] = (
        "simple" if preset is PresetName.simple else "professional"
    )
    result = api.init_project(directory, chosen, name, force)
    console.print(
        f"[green]wrote[/] {result.path} (preset {result.preset}, project {result.project})"
    )
    for line in result.notes:
        console.print(line, markup=False)
    console.print("\nnext:")
    console.print("  tristage up                 # control plane, router, scheduler")
    console.print("  tristage env set NAME --env development [--secret]")
    console.print("  git push tristage main      # deploy production")


def resolve(
    branch: str = typer.Argument(..., help="A git branch name."),
    as_json: bool = typer.Option(False, "--json", help="Print the match as JSON."),
) -> None:
    """Print the environment a branch deploys to (first matching rule wins) and the host
    it is served at: the environment's own host only for a branch its patterns name
    exactly (`dev`, `test`, `main`); a branch a glob caught (`feature/*`, `*`) gets its
    branch host."""
    ref = current_project()
    match = resolve_branch(ref.config, branch)
    if match is None:
        if as_json:
            print_json({"branch": branch, "environment": None})
        err_console.print(f"branch {branch!r} matches no environment", markup=False)
        raise typer.Exit(EXIT_FAILED)
    env = match.environment
    follows = follows_host(ref.config, env, branch)
    env_host = environment_host(ref.name, env, ref.config.production)
    host = env_host if follows else branch_host(ref.name, branch)
    if as_json:
        print_json(
            {
                "branch": branch,
                "environment": env,
                "pattern": match.pattern,
                "rule": match.rule_index,
                "tier": ref.config.environments[env].tier.value,
                "host": host,
                "follows_host": follows,
            }
        )
        return
    typer.echo(env)
    if follows:
        typer.echo(f"host: {env_host} ({env}'s branches name {branch!r})")
    else:
        typer.echo(
            f"host: {host} only (the glob {match.pattern!r} caught it: {env}'s variables and"
            f" data, never {env_host}, which follows only the branches {env} names exactly)"
        )


def audit(
    env: str | None = typer.Option(None, "--env", "-e", help="Only this environment."),
    action: str | None = typer.Option(None, "--action", help="Filter, e.g. 'env.*'."),
    limit: int = typer.Option(50, "--limit", "-n"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show the audit log: who changed what, when, where."""
    ref = current_project()
    events = get_api().audit.events(project=ref.name, environment=env, action=action, limit=limit)
    if as_json:
        print_json([e.as_json() for e in events])
        return
    print_table(
        console,
        ("when", "actor", "action", "env", "target", "details"),
        [
            (
                when(e.at),
                e.actor,
                e.action,
                e.environment or "",
                e.target or "",
                " ".join(f"{k}={v}" for k, v in e.details.items()),
            )
            for e in events
        ],
        whole=(),
    )


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(resolve)
    app.command()(audit)
