"""Monitoring commands: metrics (per deployment) and alerts."""

from __future__ import annotations

import time

import typer
from rich.text import Text

from .common import age, console, current_project, err_console, get_api, print_json
from .tables import print_table


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
    # eight short columns fit 80 columns; the counts by status class are in --json
    print_table(
        console,
        ("deployment", "env", "requests", "req/s", "errors", "p50 ms", "p99 ms", "health"),
        [
            (
                m.deployment,
                Text(f"{m.environment}*", style="bold green") if m.live else m.environment,
                str(m.requests),
                f"{m.requests_per_second:.2f}",
                "-" if m.error_rate is None else f"{m.error_rate:.1%}",
                _ms(m.p50_ms),
                _ms(m.p99_ms),
                Text(m.health, style="red" if m.health == "failing"
                     else "green" if m.health == "healthy" else "dim"),
            )
            for m in rows
        ],
    )  # fmt: skip
    console.print(
        f"* live; req/s and errors (5xx, upstream) over {window:g}s; --json for all counts",
        style="dim",
        soft_wrap=True,
    )
    for m in rows:
        if m.health == "failing" and m.health_detail:
            line = Text(f"{m.deployment}", style="red")
            line.append(f": health {m.health_detail}")
            console.print(line, soft_wrap=True)


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
    print_table(
        console,
        ("id", "age", "env", "deployment", "kind", "state", "message"),
        [
            (
                str(a.id),
                age(now - a.at),
                a.environment,
                a.deployment,
                a.kind,
                Text("open", style="red")
                if a.open
                else Text(a.resolution or "resolved", style="dim"),
                a.message,
            )
            for a in rows
        ],
    )


def register(app: typer.Typer) -> None:
    app.command()(metrics)
    app.command()(alerts)
