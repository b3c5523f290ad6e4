"""`tristage dev`: run the app locally with a development environment's configuration."""

from __future__ import annotations

import typer

from .common import console, current_project, get_api


def dev(
    command: list[str] | None = typer.Argument(
        None, help="The command to run (after --); default: the web command or Procfile's web:."
    ),
    env: str | None = typer.Option(
        None, "--env", "-e", help="A non-production environment (default: development)."
    ),
    port: int | None = typer.Option(None, "--port", "-p", help="PORT (default: $PORT or 3000)."),
) -> None:
    """Run the app from this working copy with development's variables and database.

    Refuses to start when the result would reach production: production's data
    store, one of production's secret values, or a live provider key.
    """
    ref = current_project()
    assert ref.root is not None
    svc = get_api().localdev
    plan = svc.plan(ref.name, ref.root, env, port, command)
    shown = plan.command if isinstance(plan.command, str) else " ".join(plan.command)
    console.print(
        f"tristage dev: {plan.project}/{plan.environment} ({plan.variables} variables, "
        f"database {plan.describe_database()}) on {plan.url}: {shown}",
        markup=False,
        soft_wrap=True,
    )
    raise typer.Exit(svc.run(plan))


def register(app: typer.Typer) -> None:
    app.command(context_settings={"ignore_unknown_options": True})(dev)
