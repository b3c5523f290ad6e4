"""`tristage doctor`: can this machine run tristage, its sandbox and its limits?"""

from __future__ import annotations

import typer
from rich.table import Table

from .common import console, get_api, print_json


def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
) -> None:
    """Check the sandbox (bubblewrap, user namespaces, cgroups) and the tools builds use."""
    findings = get_api().doctor()
    if as_json:
        print_json([f.as_json() for f in findings])
    else:
        table = Table("check", "status", "detail", "how to fix", box=None)
        colors = {"ok": "green", "warning": "yellow", "missing": "red"}
        for f in findings:
            table.add_row(f.check, f"[{colors[f.status]}]{f.status}[/]", f.detail, f.fix)
        console.print(table)
    if any(f.status == "missing" for f in findings):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
