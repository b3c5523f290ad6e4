"""Monitoring commands: metrics (per deployment) and alerts."""

from __future__ import annotations

import time

import typer
from rich.table import Table

from .common import age, console, current_project, err_console, get_api, print_json


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def metrics(
    env: str | None = typer.Option(None, "--env", "-e", help="Only this environment."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Per deployment: requests, rate and error rate over the window, p50/p99, health."""
    ref = current_project()
    api = get_api()
    rows = api.monitor.metrics(ref.name, env)
    if as_json:
        print_json([m.as_json() for m in rows])
        return
    if api.deploys.controlplane() is None:
        err_console.print(
            "the control plane is not running ('tristage up'): figures are the last recorded",
            markup=False,
        )
    if not rows:
        console.print("no traffic recorded yet", markup=False)
        return
    window = rows[0].window_seconds
    table = Table(
        "deployment", "env", "", "requests", "2xx", "4xx", "5xx", "upstream err",
        f"req/s ({window:g}s)", "error rate", "p50 ms", "p99 ms", "health", box=None,
    )  # fmt: skip
    for m in rows:
        rate = "-" if m.error_rate is None else f"{m.error_rate:.1%}"
        style = "red" if m.health == "failing" else "green" if m.health == "healthy" else "dim"
        table.add_row(
            m.deployment, m.environment, "[bold green]live[/]" if m.live else "",
            str(m.requests), str(m.status_2xx), str(m.status_4xx), str(m.status_5xx),
            str(m.upstream_errors), f"{m.requests_per_second:.2f}", rate,
            _ms(m.p50_ms), _ms(m.p99_ms), f"[{style}]{m.health}[/]",
        )  # fmt: skip
    console.print(table)
    for m in rows:
        if m.health == "failing" and m.health_detail:
            console.print(f"[red]{m.deployment}[/]: health {m.health_detail}", soft_wrap=True)


def alerts(
    env: str | None = typer.Option(None, "--env", "-e", help="Only this environment."),
    open_only: bool = typer.Option(False, "--open", help="Only alerts still open."),
    limit: int = typer.Option(50, "--limit", "-n"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Alerts, newest first: error rate, failing health checks, automatic rollbacks."""
    ref = current_project()
    rows = get_api().monitor.alerts(ref.name, env, open_only, limit)
    if as_json:
        print_json([a.as_json() for a in rows])
        return
    if not rows:
        console.print("no alerts", markup=False)
        return
    now = time.time()
    table = Table("id", "age", "env", "deployment", "kind", "state", "message", box=None)
    for a in rows:
        state = "[red]open[/]" if a.open else f"[dim]{a.resolution or 'resolved'}[/]"
        table.add_row(
            str(a.id), age(now - a.at), a.environment, a.deployment, a.kind, state, a.message
        )
    console.print(table, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(metrics)
    app.command()(alerts)
