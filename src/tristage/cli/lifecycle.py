"""Lifecycle commands: projects, gc, destroy."""

from __future__ import annotations

import typer
from rich.table import Table

from ..errors import EXIT_FAILED
from .common import console, current_project, err_console, get_api, print_json, state


def projects(as_json: bool = typer.Option(False, "--json")) -> None:
    """List the projects of this platform home (name, working copy, environments)."""
    api = get_api()
    refs = api.projects()
    if as_json:
        print_json(
            [
                {
                    "name": r.name,
                    "root": str(r.root) if r.root else None,
                    "environments": list(r.config.environments),
                }
                for r in refs
            ]
        )
        return
    if not refs:
        err_console.print("no projects yet: run 'tristage init' in a git working copy")
        return
    table = Table("project", "working copy", "environments", box=None)
    for r in refs:
        table.add_row(r.name, str(r.root or "-"), ", ".join(r.config.environments))
    console.print(table)


def gc(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be removed."),
    all_projects: bool = typer.Option(False, "--all", help="Every project of this home."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Remove old deployments with their artifacts and logs, by the `[cleanup]` policy
    of tristage.toml: never a live deployment, one in progress, or one production can
    roll back to. The control plane's scheduler runs it too."""
    api = get_api()
    name = None if all_projects else current_project().name
    reports = api.cleanup(name, dry_run)
    if as_json:
        print_json(
            [
                {
                    "project": r.project,
                    "dry_run": r.dry_run,
                    "removed": list(r.removed),
                    "running": list(r.running),
                    "retired": list(r.retired),
                    "freed_bytes": r.freed_bytes,
                    "kept": {k: list(v) for k, v in r.kept.items()},
                }
                for r in reports
            ]
        )
        return
    verb = "would remove" if dry_run else "removed"
    for r in reports:
        mib = r.freed_bytes / 1024**2
        console.print(
            f"{r.project}: {verb} {len(r.removed)} deployments ({mib:.1f} MiB), kept {len(r.kept)}",
            markup=False,
        )
        for dep in r.removed:
            console.print(f"  - {dep}", markup=False)
        for dep in r.running:
            console.print(f"  ~ {dep}: its release still runs; the next run removes it")
        for branch in r.retired:
            console.print(f"  {branch}: older than branch_max_age_days, retired", markup=False)


def destroy(
    project: str = typer.Argument(..., help="The project to remove (its name)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Skip the typed confirmation."),
) -> None:
    """Remove a project with everything it has (deployments, releases, variables, data,
    repository, logs), after a final backup of its data, which is kept."""
    api = get_api()
    ref = api.project(project)
    if yes:
        typed = project
    else:
        err_console.print(
            f"This stops and removes {project} ({', '.join(ref.config.environments)}) with "
            "its deployments, variables, data and hosted repository. A final backup of "
            "its data is taken first and kept.",
            markup=False,
        )
        typed = typer.prompt(f"Type {project} to confirm", default="", show_default=False)
    if typed != project:
        err_console.print("not confirmed: nothing was removed", markup=False)
        raise typer.Exit(EXIT_FAILED)
    report = api.destroy_project(project, typed)
    for line in report.backups:
        console.print(f"final backup kept: {line}", markup=False)
    for line in report.removed:
        console.print(f"removed {line}", markup=False)
    console.print(f"{project} is gone", markup=False)
    if state.project == project:
        state.project = None


def register(app: typer.Typer) -> None:
    app.command()(projects)
    app.command()(gc)
    app.command()(destroy)
