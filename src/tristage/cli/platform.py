"""`tristage platform`: the platform's own state (backup, restore)."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import console, get_api, print_json

platform_app = typer.Typer(
    help="The platform's own state: an encrypted backup of the state store, and its restore.",
    no_args_is_help=True,
)


@platform_app.command("backup")
def backup(
    out: Path = typer.Option(..., "--output", "-o", help="The file to write (must not exist)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Write an encrypted copy of the state store (projects, sealed keys and secrets,
    tokens, deployments, aliases, webhooks, audit log). Keep the master key apart: it
    is not in the backup, and nothing restores without it."""
    info = get_api().platform_backup(out)
    if as_json:
        print_json(info.as_json())
        return
    console.print(
        f"[green]platform backup[/] {info.path}: {info.bytes} bytes, sha256 {info.sha256[:16]}…; "
        "keep the master key (master.key or TRISTAGE_MASTER_KEY) apart from it",
        markup=True,
    )


@platform_app.command("restore")
def restore(
    path: Path = typer.Argument(..., help="A file from 'tristage platform backup'."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Confirm: the whole state is replaced."),
) -> None:
    """Replace the state store by a platform backup (refused while 'tristage up' runs
    for this home; the same master key is needed)."""
    get_api().platform_restore(path, yes)
    console.print(f"[green]restored[/] the platform's state from {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(platform_app, name="platform")
