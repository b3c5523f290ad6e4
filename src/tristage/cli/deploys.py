"""Deploy commands: up, down, deploy, deployments, status, promote, rollback, redeploy, logs,
run."""

from __future__ import annotations

import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.text import Text

from ..domain.deployments import Deployment, Status
from ..domain.logs import keep, parse_since
from ..errors import EXIT_FAILED, TristageError, UsageError
from . import service
from .common import age, console, current_project, err_console, get_api, print_json
from .tables import print_table

if TYPE_CHECKING:
    from ..api import Switch
    from ..domain.preflight import PromotionPreflight

STATUS_STYLE = {
    "ready": "green",
    "error": "red",
    "crashed": "red",
    "canceled": "dim",
    "queued": "yellow",
    "building": "yellow",
    "starting": "yellow",
}


def up(
    host: str = typer.Option("127.0.0.1", "--host", help="Address the router listens on."),
    port: int = typer.Option(8080, "--port", "-p", help="Router port (0 picks a free one)."),
    edge: str = service.edge_option(),
    http_port: int = service.http_port_option(),
    https_port: int = service.https_port_option(),
    edge_bind: str = service.edge_bind_option(),
    acme_ca: str = service.acme_ca_option(),
    acme_email: str | None = service.acme_email_option(),
    acme_ca_root: list[Path] = service.acme_root_option(),
    caddy: str = service.caddy_option(),
    haproxy: str = service.haproxy_option(),
    detach: bool = typer.Option(
        False,
        "--detach",
        "-d",
        help="Run in the background: the log goes to $TRISTAGE_HOME/logs/up.log, the pid to "
        "$TRISTAGE_HOME/up.pid; returns once it serves. 'tristage down' stops it.",
    ),
) -> None:
    """Run the control plane in the foreground: router, deploy worker, supervisor, scheduler;
    with --edge caddy or --edge haproxy, the production edge (HTTPS through ACME) in front."""
    options = service.build_edge(edge, port, http_port, https_port, edge_bind, acme_ca,
                                 acme_email, acme_ca_root, caddy, haproxy)  # fmt: skip
    if detach:
        service.detach(host, port, options)
        return
    api = get_api()
    console.print(f"tristage control plane (home {api.home}); Ctrl-C stops it and its releases")
    api.run_control_plane(
        host, port, log=lambda line: console.print(line, markup=False), edge=options
    )


def down(
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds to wait for it to stop."),
) -> None:
    """Stop the running control plane (also one started with 'up --detach'), its releases
    and its edge."""
    info = get_api().stop_control_plane(timeout)
    if info is None:
        err_console.print("no control plane is running for this platform home", markup=False)
        raise typer.Exit(EXIT_FAILED)
    console.print(f"stopped the control plane (pid {info.pid}, router port {info.router_port})")


def _say(line: str) -> None:
    console.print(line, markup=False, soft_wrap=True)


def _follow(dep: Deployment) -> int:
    """Print the build log until the deployment settles; return an exit code."""
    return 0 if get_api().deploys.follow_deploy(dep, _say) else EXIT_FAILED


class Hook(StrEnum):
    pre_receive = "pre-receive"
    post_receive = "post-receive"


def receive(
    project: str = typer.Option(..., "--project"),
    hook: Hook = typer.Option(Hook.pre_receive, "--hook", help="Which git hook runs it."),
) -> None:
    """(git hook) pre-receive: deploy each pushed branch and refuse the push when a deploy
    fails; post-receive: stop the branches the push deleted."""
    api = get_api()
    lines = sys.stdin.read().splitlines()
    if hook is Hook.post_receive:
        for line in api.deploys.received(project, lines):
            console.print(f"tristage: {line}", markup=False)
        raise typer.Exit(0)
    raise typer.Exit(api.deploys.pre_receive(project, lines, _say))


def receive_main(argv: list[str] | None = None) -> None:
    """Entry of the git hooks: `python -m tristage.cli.githook HOOK --home H --project P`.

    Lighter than the full CLI (only this command group is imported), so a push
    reaches the control plane sooner.
    """
    from .common import state

    args = sys.argv[1:] if argv is None else argv
    try:
        hook = Hook(args[0])
        state.home = Path(args[args.index("--home") + 1])
        project = args[args.index("--project") + 1]
    except (ValueError, IndexError):
        err_console.print(
            "usage: githook pre-receive|post-receive --home HOME --project NAME", markup=False
        )
        sys.exit(2)
    try:
        receive(project, hook)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except TristageError as exc:
        err_console.print(f"tristage: error: {exc}", markup=False)
        sys.exit(exc.exit_code)
    finally:
        if state.api is not None:
            state.api.close()


def deploy(
    branch: str | None = typer.Option(None, "--branch", "-b", help="Default: the current one."),
    commit: str | None = typer.Option(None, "--commit", "-c", help="Default: the branch's tip."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Queue it and return."),
) -> None:
    """Deploy a commit of this working copy (no push needed)."""
    ref = current_project()
    assert ref.root is not None
    dep, warnings = get_api().deploys.deploy(ref.name, ref.root, branch, commit)
    for w in warnings:
        err_console.print(f"warning: {w}", markup=False)
    if dep.status == Status.error:
        err_console.print(f"deploy refused: {dep.reason}", markup=False)
        raise typer.Exit(EXIT_FAILED)
    console.print(f"{dep.branch} -> {dep.environment}: deployment {dep.id} queued", markup=False)
    if not no_wait:
        raise typer.Exit(_follow(dep))


def deployments(
    env: str | None = typer.Option(None, "--env", "-e", help="Only this environment."),
    limit: int = typer.Option(30, "--limit", "-n"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List deployments: newest first, with status, age, URL and which one is live."""
    ref = current_project()
    svc = get_api().deploys
    deps = svc.list_deployments(ref.name, env, limit)
    al = svc.aliases(ref.name)
    live = {row["routed"] for row in al.values() if row.get("routed")}
    crashed = get_api().processes.crashed(ref.name)  # a worker's crash loop, say
    if as_json:
        print_json(
            [
                {
                    "id": d.id,
                    "environment": d.environment,
                    "branch": d.branch,
                    "commit": d.commit,
                    "message": d.message,
                    "trigger": d.trigger,
                    "source": d.source,
                    "status": d.status.value,
                    "reason": d.reason,
                    "created_at": d.created_at,
                    "ready_at": d.ready_at,
                    "runtime": d.runtime,
                    "url": svc.deployment_url(d),
                    "live": d.id in live,
                    "crashed_processes": crashed.get(d.id, []),
                }
                for d in deps
            ]
        )
        return
    now = time.time()
    print_table(
        console,
        ("id", "env", "branch", "commit", "status", "age", "runtime", "url", ""),
        [
            (
                d.id,
                d.environment,
                d.branch,
                f"{d.commit[:7]} {d.message[:40]}",
                _status_cell(d.status.value, crashed.get(d.id, [])),
                age(now - d.created_at),
                d.runtime or "",
                svc.deployment_url(d),
                Text("live", style="bold green") if d.id in live else "",
            )
            for d in deps
        ],
    )
    for d in deps[:10]:
        if d.status in (Status.error, Status.crashed) and d.reason:
            console.print(f"[red]{d.id}[/]: {d.reason}", soft_wrap=True, highlight=False)
        elif crashed.get(d.id):
            names = ", ".join(crashed[d.id])
            console.print(f"[red]{d.id}[/]: {names} in a crash loop (web serves; see "
                          f"'tristage ps' and 'tristage logs {d.id}')", soft_wrap=True,
                          highlight=False)  # fmt: skip


def _status_cell(status: str, crashed: list[str]) -> Text:
    if not crashed:
        return Text(status, style=STATUS_STYLE.get(status, ""))
    return Text(f"{status}, {', '.join(crashed)} crashed", style="red")


def status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Each environment: its live deployment, URL and health."""
    ref = current_project()
    svc = get_api().deploys
    rows = svc.status(ref.name)
    cp = svc.controlplane()
    if as_json:
        print_json({"control_plane": cp is not None, "environments": rows})
        return
    if cp is None:
        err_console.print("the control plane is not running ('tristage up')", markup=False)
    cells: list[tuple[str | Text, ...]] = []
    for r in rows:
        health = r["health"]
        style = (
            "green" if health.startswith("healthy") else "red" if health != "no deployment"
            else "dim"
        )  # fmt: skip
        live = r["deployment"] or "-"
        if r["pending"]:
            live += f" (-> {r['pending']})"
        cells.append(
            (
                r["environment"],
                r["tier"],
                live,
                r["branch"] or "",
                r["commit"] or "",
                r["url"],
                Text(health, style=style),
            )
        )
    print_table(
        console, ("environment", "tier", "live", "branch", "commit", "url", "health"), cells
    )


def _report_switch(sw: Switch) -> None:
    console.print(sw.message, markup=False)
    svc = get_api().deploys
    url = svc.environment_url(sw.deployment.project, sw.environment)
    if sw.routed:
        console.print(
            f"{sw.environment} serves {sw.deployment.id}: {url} ({sw.elapsed * 1000:.0f} ms)"
        )
    elif svc.controlplane() is None:
        console.print(
            "the control plane is not running: the switch happens when 'tristage up' runs"
        )
    else:
        dep = svc.get(sw.deployment.id)
        err_console.print(
            f"{sw.environment} still serves its previous deployment: {dep.id} is {dep.status.value}"
            + (f" ({dep.reason})" if dep.reason else ""),
            markup=False,
        )
        raise typer.Exit(EXIT_FAILED)


SEVERITY_STYLE = {"error": "red", "warning": "yellow", "info": "cyan"}


def _print_preflight(pf: PromotionPreflight) -> None:
    console.print(
        f"preflight: {pf.deployment} ({pf.source}) -> {pf.target}", markup=False, soft_wrap=True
    )
    if not pf.findings:
        console.print("  nothing differs", markup=False)
    for f in pf.findings:
        line = Text(f"  {f.severity}: ", style=SEVERITY_STYLE.get(f.severity, ""))
        line.append(f.message)
        console.print(line, soft_wrap=True)
        for out in f.output:
            console.print(f"    | {out}", markup=False, soft_wrap=True)


def promote(
    deployment: str = typer.Argument(..., help="A ready deployment id."),
    timeout: float = typer.Option(600, "--timeout", help="Seconds to wait for the switch."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the preflight only (exit 1 when it has errors)."
    ),
) -> None:
    """Move production to a ready deployment (rebuilds only if build-time variables differ).

    First a preflight against production: variables set in one and missing in the other
    (names only), build-variable hash, webhook sources, production's rules, and the
    pending migrations (the release command's own dry run where it has one). Errors
    refuse the promote; warnings are printed."""
    ref = current_project()
    api = get_api()
    pf = api.promote_preflight(ref.name, deployment)
    _print_preflight(pf)
    if not pf.ok:
        err_console.print("promote refused by the preflight: fix the errors above", markup=False)
        raise typer.Exit(EXIT_FAILED)
    if dry_run:
        return
    _report_switch(api.deploys.promote(ref.name, deployment, wait=timeout, preflight=pf))


def rollback(
    to: str | None = typer.Option(None, "--to", help="A previous production deployment."),
    timeout: float = typer.Option(120, "--timeout"),
) -> None:
    """Return production to the previous production deployment (instant when warm)."""
    ref = current_project()
    _report_switch(get_api().deploys.rollback(ref.name, to, wait=timeout))


def redeploy(
    deployment: str | None = typer.Argument(
        None, help="The deployment to redeploy (default: the live one of --env)."
    ),
    env: str | None = typer.Option(
        None, "--env", "-e", help="Redeploy this environment's live deployment."
    ),
    rebuild: bool = typer.Option(
        False, "--rebuild", help="Build again even when the build-time variables are unchanged."
    ),
    no_wait: bool = typer.Option(False, "--no-wait"),
) -> None:
    """A new release of the same commit, e.g. after runtime variables changed.

    Reuses the artifact (same build, current runtime variables) unless the build-time
    variables changed since it was built, or --rebuild is given.
    """
    ref = current_project()
    dep = get_api().deploys.redeploy(ref.name, deployment, environment=env, rebuild=rebuild)
    how = (
        f"a new release of {dep.source}'s artifact with the current runtime variables"
        if dep.source
        else "a rebuild of the same commit"
    )
    console.print(f"deployment {dep.id} queued for {dep.environment}: {how}", markup=False)
    if not no_wait:
        raise typer.Exit(_follow(dep))


def logs(
    deployment: str | None = typer.Argument(None, help="A deployment id (or use --env)."),
    env: str | None = typer.Option(
        None, "--env", "-e", help="The runtime log of the deployment this environment serves."
    ),
    build: bool = typer.Option(False, "--build", help="The build log instead of runtime logs."),
    follow: bool = typer.Option(False, "--follow", "-f", "--tail", help="Keep printing."),
    process: str | None = typer.Option(
        None, "--process", "-p", help="Only this process's lines (web.1, worker.1)."
    ),
    since: str | None = typer.Option(
        None, "--since", help="With --env: every deployment's lines this recent (10m, 2h)."
    ),
) -> None:
    """Print a deployment's (or an environment's live) runtime log, or a build log;
    --follow/--tail keeps printing (with --env, across the deployments that take its
    place); --since 10m prints the environment's lines of the last 10 minutes across
    deployments, each after its deployment's id."""
    if (deployment is None) == (env is None):
        raise UsageError(
            "name either a deployment or --env",
            "e.g. 'tristage logs ID' or 'tristage logs --env production'",
        )
    ref = current_project()
    svc = get_api().deploys
    if env is not None:
        if build:
            deployment = svc.live_deployment(ref.name, env)
            lines = svc.tail(deployment, True, follow)
        else:
            seconds = parse_since(since) if since is not None else None
            lines = svc.tail_environment(ref.name, env, follow, process, seconds)
    else:
        assert deployment is not None
        if since is not None:
            raise UsageError(
                "--since goes with --env", "e.g. 'tristage logs --env production --since 10m'"
            )
        svc.get(deployment, ref.name)
        lines = svc.tail(deployment, build, follow)
        if process is not None:
            lines = (x for x in lines if keep(x, process, None))
    try:
        for line in lines:
            typer.echo(line)
    except KeyboardInterrupt:
        pass


def run(
    command: list[str] = typer.Argument(..., help="The command and its arguments (after --)."),
    env: str = typer.Option(..., "--env", "-e", help="The environment whose live deployment."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Confirm (required for production)."),
    timeout: float = typer.Option(3600.0, "--timeout", help="Seconds before it is stopped."),
    no_tty: bool = typer.Option(False, "--no-tty", help="No terminal even when one is attached."),
) -> None:
    """Run a one-off command (a migration, `createsuperuser`, a shell) in a fresh process
    of an environment's live deployment: its sandbox, variables and data; exits with its
    code. With a terminal attached the command gets one (prompts, passwords; Ctrl-C ends
    it). Production asks for --yes; every run is audited with its exit code."""
    ref = current_project()

    def out(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    code = get_api().run_command(
        ref.name, env, tuple(command), out, yes, timeout, terminal=not no_tty
    )
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(down)
    app.command()(deploy)
    app.command()(deployments)
    app.command()(status)
    app.command()(promote)
    app.command()(rollback)
    app.command()(redeploy)
    app.command()(logs)
    app.command()(run)
    app.command(hidden=True)(receive)
