"""Webhook commands: urls, deliveries, show, replay, send-test."""

from __future__ import annotations

import time

import typer
from rich.text import Text

from ..errors import EXIT_FAILED, UsageError
from .common import age, console, current_project, get_api, print_json, when
from .tables import print_table

hooks_app = typer.Typer(
    help="Webhook gateway: ingest URLs, deliveries, replay and test events.",
    no_args_is_help=True,
)

STATUSES = ("pending", "failed", "delivered", "dead")
_STYLE = {"pending": "yellow", "failed": "red", "delivered": "green", "dead": "bold red"}


@hooks_app.command("urls")
def urls(
    env: str | None = typer.Option(None, "--env", "-e", help="Only this environment."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The ingest URL of every webhook source, to paste into the provider's dashboard."""
    ref = current_project()
    api = get_api()
    if env is not None:
        ref.config.env(env)
    infos = [i for i in api.webhooks.urls(ref.name) if env is None or i.environment == env]
    if as_json:
        print_json([i.as_json() for i in infos])
        return
    if not infos:
        console.print(
            "no webhook sources: declare [environments.ENV.webhooks.NAME] in tristage.toml "
            "(see docs/webhooks.md)",
            markup=False,
        )
        return
    print_table(
        console,
        ("env", "source", "kind", "forwards to", "secret", "ingest URL"),
        [
            (
                i.environment,
                i.source,
                i.kind,
                i.path,
                i.secret_var if i.secret_set else f"{i.secret_var} (not set)",
                "\n".join(i.urls),
            )
            for i in infos
        ],
    )
    missing = [i for i in infos if not i.secret_set]
    for i in missing:
        console.print(
            f"[yellow]warning:[/] {i.secret_var} is not set in {i.environment}: deliveries "
            f"are refused with 503 until 'tristage env set {i.secret_var} --env "
            f"{i.environment} --secret'"
        )
    for i in infos:
        if i.rejected:
            counts = ", ".join(f"{k}={v}" for k, v in sorted(i.rejected.items()))
            console.print(f"refused at {i.environment}/{i.source}: {counts}", markup=False)


@hooks_app.command("deliveries")
def deliveries(
    env: str | None = typer.Option(None, "--env", "-e", help="Only this environment."),
    status: str | None = typer.Option(
        None, "--status", "-s", help="pending | failed | delivered | dead"
    ),
    source: str | None = typer.Option(None, "--source", help="Only this webhook source."),
    limit: int = typer.Option(50, "--limit", "-n", min=1, max=10_000),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Received deliveries, newest first, with their forwarding state."""
    if status is not None and status not in STATUSES:
        raise UsageError(f"unknown status {status!r}", f"use one of {', '.join(STATUSES)}")
    ref = current_project()
    rows = get_api().webhooks.deliveries(
        ref.name, environment=env, status=status, source=source, limit=limit
    )
    if as_json:
        print_json([d.as_json() for d in rows])
        return
    if not rows:
        console.print("no deliveries", markup=False)
        return
    now = time.time()
    cells: list[tuple[str | Text, ...]] = []
    for d in rows:
        last = ""
        if d.last_status is not None:
            last = str(d.last_status)
        elif d.last_error:
            last = d.last_error.split(":", 1)[0]
        st = d.status
        if st == "failed" and d.next_attempt_at:
            st = f"failed (retry in {age(d.next_attempt_at - now)})"
        cells.append(
            (
                d.id,
                d.environment,
                d.source,
                d.event_type or "",
                Text(st, style=_STYLE.get(d.status, "")),
                str(d.attempts),
                last,
                f"{age(now - d.received_at)} ago",
            )
        )
    print_table(
        console, ("id", "env", "source", "event", "status", "attempts", "last", "received"), cells
    )


@hooks_app.command("show")
def show(
    delivery: str = typer.Argument(..., help="A delivery id (whd_...)."),
    body: bool = typer.Option(False, "--body", help="Also print the body."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """One delivery: its headers, attempts, response codes and timings."""
    detail = get_api().webhooks.show(delivery)
    if as_json:
        print_json(detail.as_json(with_body=body))
        return
    d = detail.delivery
    lines = [
        ("id", d.id),
        ("project", d.project),
        ("environment", d.environment),
        ("source", f"{d.source} ({d.kind})"),
        ("message id", d.message_id),
        ("event", d.event_type or ""),
        ("received", when(d.received_at)),
        ("status", d.status),
        ("attempts", str(d.attempts)),
        ("size", f"{d.size} bytes"),
    ]
    if d.next_attempt_at and d.status in ("pending", "failed"):
        lines.append(("next attempt", when(d.next_attempt_at)))
    if d.delivered_at:
        lines.append(("delivered", when(d.delivered_at)))
    if d.duplicates:
        lines.append(("duplicates", f"{d.duplicates} (received again, not forwarded again)"))
    for k, v in lines:
        console.print(f"{k:>13}: {v}", markup=False)
    if detail.attempts:
        print_table(
            console,
            ("#", "at", "url", "status", "ms", "error"),
            [
                (
                    str(n),
                    when(a.at),
                    a.url,
                    str(a.status_code) if a.status_code is not None else "-",
                    f"{a.duration_ms:.1f}",
                    a.error or "",
                )
                for n, a in enumerate(detail.attempts, 1)
            ],
        )
    else:
        console.print("no attempts yet", markup=False)
    if body:
        console.print(detail.body.decode("utf-8", "replace"), markup=False, soft_wrap=True)


@hooks_app.command("replay")
def replay(
    delivery: str | None = typer.Argument(None, help="A delivery id (whd_...)."),
    dead: bool = typer.Option(False, "--dead", help="Replay every dead-lettered delivery."),
    env: str | None = typer.Option(None, "--env", "-e", help="The environment (with --dead)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Queue a delivery (or every dead one of an environment) for forwarding again."""
    api = get_api()
    if dead:
        if delivery is not None or env is None:
            raise UsageError(
                "--dead replays a whole environment", "use: hooks replay --dead --env E"
            )
        ref = current_project()
        ids = api.webhooks.replay_dead(ref.name, env)
        if as_json:
            print_json({"replayed": ids})
            return
        console.print(f"queued {len(ids)} dead-lettered deliveries of {env}", markup=False)
        return
    if delivery is None:
        raise UsageError("which delivery?", "use: hooks replay ID, or hooks replay --dead --env E")
    d = api.webhooks.replay(delivery)
    if as_json:
        print_json(d.as_json())
        return
    console.print(f"queued {d.id} ({d.environment}/{d.source}) for forwarding", markup=False)


@hooks_app.command("send-test")
def send_test(
    env: str = typer.Argument(..., help="The environment."),
    source: str = typer.Argument(..., help="The webhook source name in tristage.toml."),
    event_type: str = typer.Argument(..., help="e.g. user.created, payment_intent.succeeded."),
    url: str | None = typer.Option(
        None, "--url", help="Base URL of the router (default: the running control plane's)."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Sign a realistic sample event with the environment's secret and POST it to the
    ingest URL, as the provider would."""
    ref = current_project()
    result = get_api().webhooks.send_test(ref.name, env, source, event_type, base_url=url)
    if as_json:
        print_json(result.as_json())
    else:
        ok = 200 <= result.status < 300
        colour = "green" if ok else "red"
        console.print(
            f"[{colour}]{result.status}[/] {event_type} {result.message_id} -> {result.url}"
        )
        delivery = result.response.get("delivery")
        if delivery:
            console.print(f"stored as {delivery}; follow it with 'tristage hooks show {delivery}'")
        elif result.response.get("message"):
            console.print(f"refused: {result.response['message']}", markup=False)
    if not 200 <= result.status < 300:
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.add_typer(hooks_app, name="hooks")
