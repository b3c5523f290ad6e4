"""The `tristage` command line."""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path
from typing import Any

import typer
import typer.core
from rich.text import Text

from .. import __version__
from ..errors import EXIT_FAILED, TristageError
from .common import err_console, state

_display_type = typer.core.TyperOption.display_type_rich


def _flag_type_hidden(self: typer.core.TyperOption, ctx: Any) -> str | None:
    """`--help` shows a value's type (`<str>`), never `<bool>` after a flag that takes none."""
    return None if self.is_flag else _display_type(self, ctx)


typer.core.TyperOption.display_type_rich = _flag_type_hidden  # type: ignore[method-assign]

app = typer.Typer(
    name="tristage",
    help=(
        "Development -> Preview -> Production, on your own machine: git-push deploys, "
        "per-environment variables and databases, webhooks, promote and instant rollback."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each command group lives in its own module and registers itself here.
COMMAND_MODULES = [
    "project",
    "deploys",
    "env",
    "db",
    "hooks",
    "quickstart",
    "tokens",
    "open",
    "monitor",
    "dev",
    "doctor",
    "lifecycle",
    "processes",
    "service",
    "githost",
    "platform",
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tristage {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    home: Path | None = typer.Option(
        None, "--home", envvar="TRISTAGE_HOME", help="Platform home (state, repos, backups)."
    ),
    project: str | None = typer.Option(
        None,
        "--project",
        "-p",
        envvar="TRISTAGE_PROJECT",
        help="The project to act on, by name (default: the working copy's). Accepted "
        "after the command too: 'tristage status -p shop'.",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    state.debug = debug
    state.home = home
    state.project = project or None


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__package__}.{_name}").register(app)


def report(exc: TristageError) -> None:
    """The error as `error: MESSAGE` and `  hint: HINT` on stderr, both literal text."""
    line = Text("error:", style="bold red")
    line.append(f" {exc.message}")
    err_console.print(line, soft_wrap=True)
    if exc.hint:
        err_console.print(Text(f"  hint: {exc.hint}"), soft_wrap=True)


def hoist_project(args: list[str]) -> list[str]:
    """`-p/--project NAME` anywhere after the command goes before it, where the
    top-level option is (`tristage status -p shop` = `tristage -p shop status`); a
    command with a `-p` or `--project` of its own (`up --port`, `init --preset`)
    keeps it. Nothing after `--` moves."""
    command: Any = typer.main.get_command(app)
    out: list[str] = []
    moved: list[str] = []
    at_top = True
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out.extend(args[i:])
            break
        name, eq, value = arg.partition("=")
        if not at_top and (name == "--project" or arg == "-p"):
            own = {opt for param in command.params for opt in getattr(param, "opts", [])}
            if name not in own:
                if eq:
                    moved += ["--project", value]
                    i += 1
                else:
                    moved += ["--project", *args[i + 1 : i + 2]]
                    i += 2
                continue
        out.append(arg)
        if not arg.startswith("-") and hasattr(command, "commands"):
            sub = command.commands.get(arg)
            if sub is not None:
                command, at_top = sub, False
        i += 1
    return moved + out


def run() -> None:
    """Console entry: errors become one readable line on stderr and an exit code."""
    try:
        rc = app(args=hoist_project(sys.argv[1:]), standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except TristageError as exc:
        if state.debug:
            traceback.print_exc()
        report(exc)
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors: Typer's own click exceptions
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        sys.exit(int(getattr(exc, "exit_code", 2)))
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # an unexpected bug: still one line unless --debug
        if state.debug:
            traceback.print_exc()
        else:
            err_console.print(
                f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                markup=False,
                soft_wrap=True,
            )
        sys.exit(EXIT_FAILED)
    finally:
        if state.api is not None:
            state.api.close()
            state.api = None
