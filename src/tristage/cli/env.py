"""Variables and secrets: the `env` group (set, get, ls, rm, import, pull) and `check`."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import typer
from rich.text import Text

from ..domain.deployments import Deployment
from ..domain.variables import MASK, SHARED, scope_label, shown
from ..errors import EXIT_FAILED, UsageError
from .common import age, console, current_project, err_console, get_api, print_json
from .tables import print_table

env_app = typer.Typer(
    name="env",
    help="Variables and secrets per environment (secrets encrypted at rest, masked on output).",
    no_args_is_help=True,
)

MAX_IMPORT_BYTES = 4 * 1024 * 1024

EnvOpt = typer.Option(None, "--env", "-e", help="An environment (repeatable).")
AllOpt = typer.Option(False, "--all", help="The value shared by all environments.")
BranchOpt = typer.Option(None, "--branch", "-b", help="Only deployments of this branch.")
JsonOpt = typer.Option(False, "--json", help="Print JSON.")


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        value: str = typer.prompt(f"value of {name}", hide_input=True)
        return value
    data = sys.stdin.read()
    # `echo VALUE |` adds one newline; inner newlines of multi-line values stay
    if data.endswith("\r\n"):
        return data[:-2]
    return data.removesuffix("\n")


def _note(environments: list[str], build: bool, all_: bool) -> str:
    where = "--env " + environments[0] if len(environments) == 1 and not all_ else "--env E"
    if build:
        return "build variable: takes effect on the next build (git push or 'tristage deploy')"
    return f"runtime variable: takes effect on the next release ('tristage redeploy {where}')"


def set_(
    name: str = typer.Argument(..., help="Variable name, e.g. STRIPE_SECRET_KEY."),
    value: str | None = typer.Argument(
        None, help="The value; omit it to read stdin (keeps secrets out of shell history)."
    ),
    env: list[str] | None = EnvOpt,
    all_: bool = AllOpt,
    branch: str | None = BranchOpt,
    secret: bool | None = typer.Option(
        None,
        "--secret/--no-secret",
        help="Encrypt at rest and mask on output (default: inferred from name and value).",
    ),
    build: bool | None = typer.Option(
        None,
        "--build/--no-build",
        help="Reach the build step too (default: NEXT_PUBLIC_* and other public prefixes).",
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Refuse the change when a rule finds an error in the new value."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Set a variable in one or more environments (or --all).

    The rules of 'tristage check' run on the new value at once: their findings are printed
    (with --strict an error refuses the change); with '[app] redeploy_on_change = true' the
    environments it reaches are redeployed.
    """
    ref = current_project()
    from_argument = value is not None
    if value is None:
        value = _read_value(name)
    api = get_api()
    results = api.variables.set(
        ref.name,
        name,
        value,
        environments=env or [],
        all_environments=all_,
        branch=branch,
        secret=secret,
        build=build,
        strict=strict,
    )
    redeploys = api.variables.redeploy_after(ref.name, api.variables.changed_scopes(results))
    if as_json:
        print_json(
            [
                {
                    "name": r.name,
                    "scope": r.scope,
                    "branch": r.branch,
                    "change": r.change,
                    "secret": r.secret,
                    "build": r.build,
                    "findings": [f.as_json() for f in r.findings],
                    "redeploys": [d.id for d in redeploys],
                }
                for r in results
            ]
        )
        return
    for r in results:
        flags = ", ".join(f for f, on in (("secret", r.secret), ("build", r.build)) if on)
        line = f"{r.change} {r.name} in {r.where}" + (f" ({flags})" if flags else "")
        console.print(line, markup=False)
    for finding in dict.fromkeys(f for r in results for f in r.findings):
        err_console.print(finding.line(), markup=False, soft_wrap=True)
    if any(r.change != "unchanged" for r in results):
        _after_change(redeploys, env or [], results[0].build, all_)
    if from_argument and results[0].secret:
        err_console.print(
            f"tip: omit the value to read it from stdin: tristage env set {name} ... < file",
            markup=False,
        )


def _after_change(
    redeploys: list[Deployment], environments: list[str], build: bool, all_: bool
) -> None:
    """Say how a change takes effect: the redeploys it started, or when it will."""
    for d in redeploys:
        err_console.print(
            f"redeploying {d.environment}: deployment {d.id} queued (redeploy_on_change); "
            f"follow it with 'tristage logs {d.id} --build -f'",
            markup=False,
            soft_wrap=True,
        )
    if not redeploys:
        err_console.print(_note(environments, build, all_), markup=False, soft_wrap=True)


def get(
    name: str = typer.Argument(...),
    env: str = typer.Option(..., "--env", "-e", help="The environment."),
    branch: str | None = BranchOpt,
    reveal: bool = typer.Option(False, "--reveal", help="Show a secret's value (audited)."),
    as_json: bool = JsonOpt,
) -> None:
    """Print the value a deployment of an environment receives (secrets masked)."""
    ref = current_project()
    r = get_api().variables.get(ref.name, name, env, branch, reveal=reveal)
    value = shown(r.value, r.secret, reveal)
    if as_json:
        print_json(
            {
                "name": r.name,
                "value": value,
                "secret": r.secret,
                "build": r.build,
                "source": r.source,
                "from": r.origin,
                "set_at": r.set_at,
            }
        )
    else:
        sys.stdout.write(value + "\n")


def ls(
    env: str | None = typer.Option(None, "--env", "-e", help="One environment."),
    resolved: bool = typer.Option(
        False, "--resolved", help="What a deployment of --env receives, and where each comes from."
    ),
    branch: str | None = BranchOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List variables (secret values masked)."""
    ref = current_project()
    api = get_api()
    now = time.time()
    rows: list[dict[str, object]] = []
    if resolved or branch:
        if env is None:
            raise UsageError("--resolved needs an environment", "pass --env E")
        for r in api.variables.resolve(ref.name, env, branch).values():
            rows.append(
                {
                    "name": r.name,
                    "value": shown(r.value, r.secret),
                    "secret": r.secret,
                    "build": r.build,
                    "source": r.source,
                    "from": r.origin,
                    "set_at": r.set_at,
                }
            )
    else:
        for e in api.variables.entries(ref.name, env):
            rows.append(
                {
                    "name": e.name,
                    "value": shown(e.value, e.secret),
                    "secret": e.secret,
                    "build": e.build,
                    "scope": "all" if e.scope == SHARED else e.scope,
                    "branch": e.branch,
                    "from": scope_label(e.scope, e.branch),
                    "set_at": e.set_at,
                }
            )
    if as_json:
        print_json(rows)
        return
    if not rows:
        err_console.print("no variables" + (f" for {env}" if env else ""), markup=False)
        return
    cells = []
    for row in rows:
        flags = ",".join(f for f in ("secret", "build") if row[f])
        value = str(row["value"])
        if value != MASK and (len(value) > 60 or "\n" in value):
            value = value.replace("\n", "\\n")[:57] + "..."
        set_at = row["set_at"]
        assert isinstance(set_at, float | int)
        cells.append((str(row["name"]), value, str(row["from"]), flags, age(now - set_at) + " ago"))
    print_table(console, ("name", "value", "from", "flags", "set"), cells, whole=("name",))


def rm(
    name: str = typer.Argument(...),
    env: list[str] | None = EnvOpt,
    all_: bool = AllOpt,
    branch: str | None = BranchOpt,
) -> None:
    """Remove a variable from one or more environments (or the --all value)."""
    ref = current_project()
    api = get_api()
    removed = api.variables.remove(
        ref.name, name, environments=env or [], all_environments=all_, branch=branch
    )
    for where in removed:
        console.print(f"removed {name} from {where}", markup=False)
    redeploys = api.variables.redeploy_after(ref.name, [SHARED] if all_ else env or [])
    _after_change(redeploys, env or [], False, all_)


def import_(
    file: Path = typer.Argument(..., help="A dotenv file, or '-' for stdin."),
    env: list[str] | None = EnvOpt,
    all_: bool = AllOpt,
    branch: str | None = BranchOpt,
    secret: bool | None = typer.Option(
        None, "--secret/--no-secret", help="Mark all as secret (default: inferred per variable)."
    ),
    build: bool | None = typer.Option(None, "--build/--no-build"),
    as_json: bool = JsonOpt,
) -> None:
    """Import a dotenv file; reports what was added and changed."""
    ref = current_project()
    if str(file) == "-":
        text, source = sys.stdin.read(), "stdin"
    else:
        if not file.is_file():
            raise UsageError(
                f"{file} is not a file", "pass the path of a dotenv file, or '-' to read stdin"
            )
        if file.stat().st_size > MAX_IMPORT_BYTES:
            raise UsageError(
                f"{file} is larger than {MAX_IMPORT_BYTES // 1024 // 1024} MiB",
                "a dotenv file holds NAME=value lines; split it or import the variables you need",
            )
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UsageError(
                f"{file} is not UTF-8 text", "save it as UTF-8, then import it"
            ) from None
        source = str(file)
    api = get_api()
    report = api.variables.import_dotenv(
        ref.name,
        text,
        source,
        environments=env or [],
        all_environments=all_,
        branch=branch,
        secret=secret,
        build=build,
    )
    redeploys = api.variables.redeploy_after(ref.name, api.variables.changed_scopes(report.results))
    if as_json:
        print_json(report.as_json())
        return
    for change in ("added", "changed", "unchanged"):
        names = report.names(change)
        if names:
            console.print(f"{change} ({len(names)}): {', '.join(names)}", markup=False)
    for finding in dict.fromkeys(f for r in report.results for f in r.findings):
        err_console.print(finding.line(), markup=False, soft_wrap=True)
    if not report.results:
        console.print("nothing to import", markup=False)
    elif any(r.change != "unchanged" for r in report.results):
        _after_change(redeploys, env or [], bool(build), all_)


def pull(
    env: str = typer.Option(..., "--env", "-e", help="The environment."),
    branch: str | None = BranchOpt,
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write this file (mode 0600) instead of stdout."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Allow production secrets (audited)."),
) -> None:
    """Write an environment's resolved variables as a dotenv file (e.g. .env.local)."""
    ref = current_project()
    result = get_api().variables.pull(ref.name, env, branch, allow_production_secrets=yes)
    if output is None:
        sys.stdout.write(result.text)
    else:
        _write_private(output, result.text)
        err_console.print(f"wrote {len(result.names)} variables to {output}", markup=False)
    if result.interpolated:
        err_console.print(
            "note: these values contain '${' which loaders that expand variables will "
            f"change: {', '.join(result.interpolated)}",
            markup=False,
        )


def _write_private(path: Path, text: str) -> None:
    """Atomically write `text` to `path` with mode 0600 (a symlink is replaced, not followed)."""
    target = path.absolute()
    if target.is_dir():
        raise UsageError(f"{path} is a directory", "give a file name, e.g. -o .env.local")
    if not target.parent.is_dir():
        raise UsageError(
            f"{target.parent} does not exist", "create the directory, or give another -o path"
        )
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check(
    env: str | None = typer.Option(None, "--env", "-e", help="Only this environment."),
    branch: str | None = typer.Option(None, "--branch", "-b", help="With --env: as this branch."),
    as_json: bool = JsonOpt,
) -> None:
    """Run the isolation rules: live keys, shared secrets, required variables, data stores."""
    ref = current_project()
    if branch and not env:
        raise UsageError("--branch needs --env", "use: tristage check --env E --branch B")
    findings = get_api().variables.check(ref.name, env, branch)
    errors = sum(1 for f in findings if f.severity == "error")
    warnings = len(findings) - errors
    if as_json:
        print_json(
            {
                "project": ref.name,
                "errors": errors,
                "warnings": warnings,
                "findings": [f.as_json() for f in findings],
            }
        )
    else:
        for f in findings:
            style = "red" if f.severity == "error" else "yellow"
            var = f" {f.variable}" if f.variable else ""
            line = Text(f.severity, style=style)
            line.append(f" [{f.rule}] {f.environment}{var}: {f.message}")
            console.print(line, soft_wrap=True)
        scope = f" in {env}" if env else ""
        console.print(
            f"{errors} error{'s' if errors != 1 else ''}, "
            f"{warnings} warning{'s' if warnings != 1 else ''}{scope}",
            markup=False,
        )
    if errors:
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    env_app.command("set")(set_)
    env_app.command("get")(get)
    env_app.command("ls")(ls)
    env_app.command("rm")(rm)
    env_app.command("import")(import_)
    env_app.command("pull")(pull)
    app.add_typer(env_app, name="env")
    app.command("check")(check)
