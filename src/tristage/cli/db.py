"""Data commands: export, import, backup, backups, prune, restore, drill, clone, url."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import EXIT_FAILED, UsageError
from .common import console, current_project, err_console, get_api, print_json, when
from .tables import print_table

if TYPE_CHECKING:
    from ..api import Progress as ProgressFn

db_app = typer.Typer(
    name="db",
    help="The data store of each environment: export, import, backups, restore, clone.",
    no_args_is_help=True,
)


class Format(StrEnum):
    dir = "dir"
    zip = "zip"
    convex = "convex"


@contextmanager
def _progress(enabled: bool = True) -> Iterator[ProgressFn | None]:
    if not enabled or not err_console.is_terminal:
        yield None
        return
    bars: dict[str, object] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:

        def report(table: str, done: int, total: int | None) -> None:
            task = bars.get(table)
            if task is None:
                task = bars[table] = progress.add_task(table, total=total)
            progress.update(task, completed=done, total=total)  # type: ignore[arg-type]

        yield report


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@db_app.command("export")
def export(
    env: str = typer.Argument(..., help="The environment whose data to export."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Directory or .zip path."),
    fmt: Format = typer.Option(
        Format.dir,
        "--format",
        help="dir, zip, or convex (a ZIP in the layout 'npx convex import' accepts).",
    ),
    table: list[str] = typer.Option([], "--table", "-t", help="Only this table (repeatable)."),
) -> None:
    """Export a snapshot: one JSONL file per table plus a manifest with checksums."""
    ref = current_project()
    chosen: Literal["dir", "zip", "convex"] = fmt.value
    with _progress() as progress:
        result = get_api().data.export(ref.name, env, output, chosen, table, progress)
    m = result.manifest
    console.print(
        f"[green]exported[/] {len(m.tables)} table(s), {m.total_rows} row(s) to {result.path}"
    )


@db_app.command("import")
def import_(
    env: str = typer.Argument(..., help="The environment to import into."),
    snapshot: Path = typer.Argument(..., help="A snapshot directory or ZIP (or a Convex ZIP)."),
    table: list[str] = typer.Option([], "--table", "-t", help="Only this table (repeatable)."),
    replace_all: bool = typer.Option(False, "--replace-all", help="Replace the tables' rows."),
    append: bool = typer.Option(False, "--append", help="Add to the tables' rows."),
    not_production: bool = typer.Option(
        False,
        "--not-production",
        help="A Convex ZIP that does not come from production: import it unsanitized "
        "(recorded in the audit log).",
    ),
) -> None:
    """Import a snapshot in one transaction: every row or none, checked against its
    manifest. A Convex ZIP into a non-production environment is sanitized like a clone."""
    if replace_all and append:
        raise UsageError("--replace-all and --append exclude each other", "choose one")
    ref = current_project()
    mode: Literal["replace", "append"] | None = (
        "replace" if replace_all else "append" if append else None
    )
    with _progress() as progress:
        result = get_api().data.import_snapshot(
            ref.name, env, snapshot, table, mode, progress, not_production
        )
    for name, n in result.rows.items():
        console.print(f"  {name}: {n} row(s)")
    console.print(f"[green]imported[/] {sum(result.rows.values())} row(s) into {env}")


@db_app.command("backup")
def backup(
    env: str = typer.Argument(..., help="The environment to back up."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Take a compressed (optionally encrypted) backup, listed once complete."""
    ref = current_project()
    with _progress(not as_json) as progress:
        info = get_api().data.backup(ref.name, env, progress=progress)
    if as_json:
        print_json(info.as_json())
        return
    console.print(
        f"[green]backup[/] {info.id}: {info.tables} table(s), {info.rows} row(s), "
        f"{_size(info.size)}{' encrypted' if info.encrypted else ''}"
    )


@db_app.command("backups")
def backups(
    env: str = typer.Argument(..., help="The environment."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List the complete backups of an environment, newest first."""
    ref = current_project()
    items = get_api().data.backups(ref.name, env)
    if as_json:
        print_json([b.as_json() for b in items])
        return
    if not items:
        console.print(f"no backups of {env} yet (tristage db backup {env})")
        return
    print_table(
        console,
        ("id", "when", "kind", "tables", "rows", "size", "note"),
        [
            (
                b.id,
                when(b.created_at),
                b.kind + (" (encrypted)" if b.encrypted else ""),
                str(b.tables),
                str(b.rows),
                _size(b.size),
                b.note or "",
            )
            for b in items
        ],
    )


@db_app.command("prune")
def prune(
    env: str = typer.Argument(..., help="The environment."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be deleted."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Apply the retention policy (daily/weekly/monthly counts): what is kept and why."""
    ref = current_project()
    result = get_api().data.prune(ref.name, env, dry_run)
    if as_json:
        print_json(result.as_json())
        return
    for bid, reasons in result.keep.items():
        console.print(f"keep   {bid}  ({', '.join(reasons)})", markup=False)
    verb = "would delete" if dry_run else "deleted"
    for bid in result.delete:
        console.print(f"{verb} {bid}", markup=False)
    console.print(f"{len(result.keep)} kept, {len(result.delete)} {verb}")


@db_app.command("delete")
def delete(
    env: str = typer.Argument(..., help="The environment."),
    backup_id: str = typer.Argument(..., metavar="BACKUP", help="A backup id (db backups ENV)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Confirm."),
) -> None:
    """Delete one backup by hand (manual backups are kept until then, or keep_manual)."""
    ref = current_project()
    get_api().data.delete_backup(ref.name, env, backup_id, yes)
    console.print(f"[green]deleted[/] backup {backup_id} of {env}")


@db_app.command("restore")
def restore(
    env: str = typer.Argument(..., help="The environment to restore."),
    backup_id: str | None = typer.Argument(
        None, metavar="[BACKUP]", help="A backup id (db backups ENV)."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Confirm (required for production)."),
    undo: bool = typer.Option(
        False, "--undo", help="PostgreSQL: put back the database the latest restore replaced."
    ),
) -> None:
    """Restore a backup all-or-nothing: the data store and the files of the environment's
    data directory (files the backup does not hold are removed; a backup taken before files
    were backed up leaves them as they are). PostgreSQL: pg_restore into a new database
    that takes the live one's place; the replaced one is kept (backups.keep_undo) for
    --undo. SQLite: a safety backup is taken first."""
    ref = current_project()
    api = get_api()
    if undo:
        if backup_id is not None:
            raise typer.BadParameter("--undo takes no BACKUP")
        copy = api.data.undo_restore(ref.name, env, yes)
        console.print(
            f"[green]undone[/] the latest restore of {env}; what it had restored is kept as "
            f"{copy.database} (--undo again to put it back)"
        )
        return
    if backup_id is None:
        raise typer.BadParameter("pass a BACKUP id (tristage db backups ENV), or --undo")
    with _progress() as progress:
        result = api.data.restore(ref.name, env, backup_id, yes, progress)
    kept = ""
    if result.undo:
        kept += (
            f"; the replaced database is kept as {result.undo} (tristage db restore {env} --undo)"
        )
    if result.safety_backup:
        kept += f"; safety backup {result.safety_backup}"
    console.print(
        f"[green]restored[/] {env} from {result.backup}: {sum(result.rows.values())} row(s) "
        f"in {len(result.rows)} table(s)"
        + ("" if result.files is None else f", {result.files} file(s)")
        + kept
    )


@db_app.command("drill")
def drill(
    env: str = typer.Argument(..., help="The environment whose latest backup to drill."),
    backup_id: str | None = typer.Option(None, "--backup", help="Drill this backup instead."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Restore the latest backup into a scratch store and compare counts and checksums;
    the files archive is read through and checked (the "(files)" row)."""
    ref = current_project()
    report = get_api().data.drill(ref.name, env, backup_id)
    if as_json:
        print_json(report.as_json())
    else:
        print_table(
            console,
            ("table", "rows (backup)", "rows (restored)", "checksum"),
            [
                (
                    c.table,
                    str(c.expected_rows),
                    str(c.actual_rows),
                    "match" if c.checksum_ok else "DIFFERS",
                )
                for c in report.checks
            ],
        )
        for p in report.problems:
            console.print(f"problem: {p}", markup=False)
        verdict = "[green]PASS[/]" if report.passed else "[bold red]FAIL[/]"
        console.print(
            f"{verdict} drill of {report.environment} backup {report.backup} "
            f"in {report.seconds:.1f}s"
        )
    if not report.passed:
        raise typer.Exit(EXIT_FAILED)


@db_app.command("clone")
def clone(
    source: str = typer.Argument(..., metavar="FROM"),
    target: str = typer.Argument(..., metavar="TO"),
    yes: bool = typer.Option(False, "--yes", "-y", help="Replace the target's data."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Copy FROM's data into TO; from production it is sanitized (fails closed) and
    copies only the files `[sanitize.files] copy` names (default: none)."""
    ref = current_project()
    with _progress(not as_json) as progress:
        report = get_api().data.clone(ref.name, source, target, yes, progress)
    if as_json:
        print_json(report.as_json())
        return
    for name, n in report.rows.items():
        cols = report.transformed.get(name, [])
        note = f"  sanitized: {', '.join(cols)}" if cols else ""
        console.print(f"  {name}: {n} row(s){note}", markup=False)
    for column, reason in report.forced_keep.items():
        console.print(f"  kept as forced: {column} ({reason})", markup=False)
    if report.scan is not None:
        scan = report.scan
        console.print(
            f"  checked the copy: {scan['rows']} row(s) of {scan['tables']} table(s) for "
            f"{scan['values']} production value(s) of ruled columns: none found",
            markup=False,
        )
    console.print(
        f"  files: {report.files_copied} copied, {report.files_left_out} left out"
        + (" (no [sanitize.files] rule names them)" if report.files_left_out else ""),
        markup=False,
    )
    how = "sanitized clone" if report.sanitized else "clone"
    console.print(
        f"[green]{how}[/] {report.source} -> {report.target}: "
        f"{sum(report.rows.values())} row(s) in {report.seconds:.1f}s"
        + (f"; safety backup {report.safety_backup}" if report.safety_backup else "")
    )


@db_app.command("url")
def url(env: str = typer.Argument(..., help="The environment.")) -> None:
    """Print the DATABASE_URL the environment's app receives."""
    ref = current_project()
    typer.echo(get_api().data.database_url(ref.name, env))


def register(app: typer.Typer) -> None:
    """Add this group's commands to the main app."""
    app.add_typer(db_app, name="db")
