"""`tristage doctor`: can this machine run tristage, its sandbox and its limits?"""

from __future__ import annotations

import typer
from rich.text import Text

from .common import console, get_api, print_json
from .tables import print_table


def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
) -> None:
    """Check the sandbox (bubblewrap, user namespaces, cgroups) and the tools builds use."""
    findings = get_api().doctor()
    if as_json:
        print_json([f.as_json() for f in findings])
    else:
        colors = {"ok": "green", "warning": "yellow", "missing": "red"}
        print_table(
            console,
            ("check", "status", "detail", "how to fix"),
            [(f.check, Text(f.status, style=colors[f.status]), f.detail, f.fix) for f in findings],
        )
    if any(f.status == "missing" for f in findings):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
