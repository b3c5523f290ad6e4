"""Token commands: create, ls, revoke (API tokens for the HTTP API and the dashboard)."""

from __future__ import annotations

import time

import typer

from ..api import Role, TokenService
from .common import age, console, err_console, get_api, print_json
from .tables import print_table

token_app = typer.Typer(
    help="API tokens for the HTTP API and the dashboard (roles: viewer, deployer, admin).",
    no_args_is_help=True,
)


def _tokens() -> TokenService:
    return get_api().tokens


@token_app.command("create")
def create(
    name: str = typer.Argument(..., help="A name for the token; the audit log shows token:NAME."),
    role: Role = typer.Option(
        Role.viewer,
        "--role",
        "-r",
        help="viewer: read; deployer: also promote/rollback/redeploy/replay; admin: everything.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the token and its facts as JSON."),
) -> None:
    """Create a token and print it once (only its hash is stored)."""
    new = _tokens().create(name, role)
    if as_json:
        print_json({**new.info.as_json(), "token": new.token})
        return
    console.print(new.token, markup=False, soft_wrap=True)
    err_console.print(
        f"token {name!r} ({role.value}) created: store it now, it is not shown again",
        markup=False,
    )


@token_app.command("ls")
def ls(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List tokens: name, role, creator, last use (never the secret)."""
    items = _tokens().list()
    if as_json:
        print_json([t.as_json() for t in items])
        return
    if not items:
        err_console.print("no tokens: create one with 'tristage token create NAME --role R'")
        return
    now = time.time()
    print_table(
        console,
        ("name", "role", "created", "by", "last used"),
        [
            (
                t.name,
                t.role.value,
                age(now - t.created_at) + " ago",
                t.created_by,
                age(now - t.last_used_at) + " ago" if t.last_used_at else "never",
            )
            for t in items
        ],
    )


@token_app.command("revoke")
def revoke(name: str = typer.Argument(..., help="The token's name.")) -> None:
    """Revoke a token: its API calls and dashboard sessions stop at once."""
    info = _tokens().revoke(name)
    console.print(f"revoked token {info.name!r} ({info.role.value})", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
