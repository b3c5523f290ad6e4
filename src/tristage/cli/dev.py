"""`tristage dev`: run the app locally with a development environment's configuration."""

from __future__ import annotations

import typer

from .common import console, current_project, err_console, get_api


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

    It runs with the app's own environment: the virtualenv of development's last build
    (built now when there is none or the requirements changed) and the working copy's
    node_modules (else the last build's, copied in, else installed), and says which.

    Refuses to start when the result would reach production: production's data
    store, one of production's secret values, or a live provider key.
    """
    ref = current_project()
    assert ref.root is not None
    svc = get_api().localdev

    def say(line: str) -> None:
        console.print(line, markup=False, soft_wrap=True)

    plan = svc.plan(ref.name, ref.root, env, port, command, progress=say)
    shown = plan.command if isinstance(plan.command, str) else " ".join(plan.command)
    say(
        f"tristage dev: {plan.project}/{plan.environment} ({plan.variables} variables, "
        f"database {plan.describe_database()}) on {plan.url}: {shown}"
    )
    for using in plan.using:
        say(f"tristage dev: uses {using}")
    raise typer.Exit(svc.run(plan, on_hint=lambda text: err_console.print(
        text, markup=False, soft_wrap=True)))  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command(context_settings={"ignore_unknown_options": True})(dev)
