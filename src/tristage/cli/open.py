"""`tristage open`: the dashboard's URL (served by the running control plane)."""

from __future__ import annotations

import sys
import webbrowser

import typer

from ..errors import NotFound
from .common import console, get_api, print_json


def dashboard_url() -> str:
    info = get_api().deploys.controlplane()
    port = getattr(info, "dashboard_port", None) if info is not None else None
    if info is None or not port:
        raise NotFound(
            "the control plane is not running, so neither is the dashboard",
            "start it with 'tristage up'",
        )
    host = info.router_host if info.router_host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def open_dashboard(
    print_only: bool = typer.Option(
        False, "--print", help="Only print the URL (the default when not on a terminal)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print {'url': ...} as JSON."),
) -> None:
    """Print the dashboard URL and open it in a browser (sign in with an API token)."""
    url = dashboard_url()
    if as_json:
        print_json({"url": url})
        return
    console.print(url, markup=False, soft_wrap=True)
    if not print_only and sys.stdout.isatty():
        webbrowser.open(url)


def register(app: typer.Typer) -> None:
    app.command("open")(open_dashboard)
