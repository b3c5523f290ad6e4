"""`tristage open`: the dashboard (served by the running control plane), signed in.

Whoever can run the CLI on the platform home is its local owner: `open` mints a
one-time sign-in link for the owner's admin token (valid once, for five minutes;
only its hash is stored) and opens it in a browser. `--no-sign-in` prints the plain
URL, for signing in with an API token instead.
"""

from __future__ import annotations

import sys
import webbrowser

import typer

from ..errors import NotFound
from .common import console, err_console, get_api, print_json


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


def sign_in_url(base: str) -> str:
    """A one-time link that opens the dashboard signed in as the local owner."""
    code = get_api().tokens.sign_in_link()
    return f"{base}login/link?code={code}"


def open_dashboard(
    print_only: bool = typer.Option(
        False, "--print", help="Only print the link (the default when not on a terminal)."
    ),
    no_sign_in: bool = typer.Option(
        False, "--no-sign-in", help="The plain URL, without a sign-in link (sign in with a token)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print {'url': ..., 'sign_in_url': ...} as JSON."
    ),
) -> None:
    """Open the dashboard signed in: a one-time link (valid once, for five minutes)."""
    url = dashboard_url()
    link = None if no_sign_in else sign_in_url(url)
    if as_json:
        print_json({"url": url, "sign_in_url": link})
        return
    console.print(link or url, markup=False, soft_wrap=True)
    if link:
        err_console.print(
            f"a one-time sign-in link, valid for 5 minutes; the dashboard is {url}",
            markup=False, soft_wrap=True, style="dim",
        )  # fmt: skip
    if not print_only and sys.stdout.isatty():
        webbrowser.open(link or url)


def register(app: typer.Typer) -> None:
    app.command("open")(open_dashboard)
