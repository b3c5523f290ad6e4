"""Process commands: ps (every process of the running releases), scale (replicas), cron
(scheduled jobs and their runs)."""

from __future__ import annotations

import time

import typer
from rich.text import Text

from .common import age, console, current_project, get_api, print_json
from .tables import print_table

STYLES = {"healthy": "green", "crashed": "red"}


def ps(
    env: str | None = typer.Option(None, "--env", "-e", help="Only this environment's."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Every process of the running releases: web replicas, workers and other Procfile
    types, with their status, port and restarts (the live deployment's first)."""
    ref = current_project()
    rows = get_api().processes.list(ref.name, env)
    if as_json:
        print_json(rows)
        return
    now = time.time()
    print_table(
        console,
        ("environment", "deployment", "live", "process", "status", "port", "restarts", "up",
         "last exit"),
        [
            (
                r["environment"], r["deployment"], "live" if r["live"] else "", r["process"],
                Text(r["status"], style=STYLES.get(r["status"], "yellow")),
                str(r["port"] or "-"), str(r["restarts"]), age(now - r["since"]),
                r["last_exit"] or "",
            )
            for r in rows
        ],
    )  # fmt: skip


def scale(
    counts: list[str] = typer.Argument(..., help="TYPE=COUNT, e.g. web=3 worker=1."),
    env: str = typer.Option(..., "--env", "-e", help="The environment to scale."),
) -> None:
    """Set how many processes of each type an environment's live deployment runs
    (over `processes` in tristage.toml); replicas start and stop without a deploy."""
    ref = current_project()
    now = get_api().processes.scale(ref.name, env, counts)
    shown = ", ".join(f"{k}={v}" for k, v in sorted(now.items()))
    console.print(f"{env}: {shown}", markup=False)


cron_app = typer.Typer(
    help="Scheduled jobs ([environments.X.cron]): the entries and their runs.",
    no_args_is_help=True,
)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


@cron_app.command("ls")
def cron_ls(
    env: str | None = typer.Option(None, "--env", "-e", help="Only this environment's."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Each scheduled job: its schedule, command, next run and last result."""
    rows = get_api().cron.jobs(current_project().name, env)
    if as_json:
        print_json(rows)
        return
    print_table(
        console,
        ("environment", "schedule", "command", "next", "last"),
        [
            (r["environment"], r["schedule"], r["command"], _when(r["next"]),
             "-" if r["last_status"] is None else f"{r['last_status']} ({r['last_exit_code']})")
            for r in rows
        ],
        whole=("schedule", "command"),
    )  # fmt: skip


@cron_app.command("runs")
def cron_runs(
    env: str | None = typer.Option(None, "--env", "-e", help="Only this environment's."),
    limit: int = typer.Option(20, "--limit", "-n", help="How many, newest first."),
    log: int | None = typer.Option(None, "--log", help="Print the output of this run."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The latest runs: exit code, duration, status (ok, failed, skipped while the last
    run was still going, interrupted) and last output line; --log ID prints one's output."""
    api = get_api()
    project = current_project().name
    if log is not None:
        typer.echo(api.cron.output(project, log), nl=False)
        return
    rows = api.cron.runs(project, env, limit)
    if as_json:
        print_json(rows)
        return
    styles = {"ok": "green", "failed": "red", "running": "yellow"}
    print_table(
        console,
        ("id", "environment", "command", "started", "status", "exit", "took", "last line"),
        [
            (
                str(r["id"]), r["environment"], r["command"], _when(r["started"] or r["due"]),
                Text(r["status"], style=styles.get(r["status"], "dim")),
                "-" if r["exit_code"] is None else str(r["exit_code"]),
                "-" if r["duration"] is None else f"{r['duration']:.1f}s",
                r["reason"] or r["last_line"] or "",
            )
            for r in rows
        ],
    )  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command()(ps)
    app.command()(scale)
    app.add_typer(cron_app, name="cron")
