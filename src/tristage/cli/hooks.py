"""Webhook commands: urls, deliveries, show, replay, resume, send-test."""

from __future__ import annotations

import time

import typer
from rich.text import Text

from ..domain import webhooks as dom
from ..errors import EXIT_FAILED, UsageError
from .common import age, console, current_project, get_api, print_json, when
from .tables import print_table

hooks_app = typer.Typer(
    help="Webhook gateway: ingest URLs, deliveries, replay and test events.",
    no_args_is_help=True,
)

STATUSES = ("pending", "failed", "delivered", "dead", "filtered")
_STYLE = {
    "pending": "yellow",
    "failed": "red",
    "delivered": "green",
    "dead": "bold red",
    "filtered": "dim",
}


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
    for p in api.webhooks.paused(ref.name, env):
        if p["paused_at"] is not None:
            console.print(
                f"paused: {p['environment']}/{p['source']} -> {p['destination']} "
                f"({p['reason']}); resume with 'tristage hooks resume {p['environment']} "
                f"{p['source']}'",
                markup=False,
            )


@hooks_app.command("deliveries")
def deliveries(
    env: str | None = typer.Option(None, "--env", "-e", help="Only this environment."),
    status: str | None = typer.Option(
        None, "--status", "-s", help="pending | failed | delivered | dead | filtered"
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
        if d.pruned_at is not None:
            st += " (stub)"
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
    if d.status == "filtered" and d.last_error:
        console.print(f"{'why':>13}: {d.last_error}", markup=False)
    if d.pruned_at is not None:
        console.print(f"{'body':>13}: removed after the retention ({when(d.pruned_at)})")
    if len(detail.destinations) > 1:
        print_table(
            console,
            ("destination", "status", "attempts", "last"),
            [
                (
                    s.destination,
                    s.status,
                    str(s.attempts),
                    str(s.last_status) if s.last_status is not None else (s.last_error or ""),
                )
                for s in detail.destinations
            ],
        )
    if detail.attempts:
        print_table(
            console,
            ("#", "at", "destination", "url", "status", "ms", "error"),
            [
                (
                    str(n),
                    when(a.at),
                    a.destination or "",
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
    dead: bool = typer.Option(False, "--dead", help="Every dead-lettered one (--status dead)."),
    status: str | None = typer.Option(
        None, "--status", "-s", help="delivered | dead | filtered (waiting ones are left)"
    ),
    env: str | None = typer.Option(None, "--env", "-e", help="Only this environment."),
    source: str | None = typer.Option(None, "--source", help="Only this webhook source."),
    event: str | None = typer.Option(
        None, "--event", help="Only this event type, or a glob such as 'user.*'."
    ),
    since: str | None = typer.Option(
        None, "--since", help="Received at or after: 2h, 7d, 2026-11-30, 2026-11-30T14:00Z."
    ),
    until: str | None = typer.Option(None, "--until", help="Received before (same forms)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would go; queue nothing."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Queue one delivery, or every one the filters select, for forwarding again (to
    every destination, with a fresh retry schedule)."""
    api = get_api()
    if dead:
        if delivery is not None or env is None or status not in (None, "dead"):
            raise UsageError(
                "--dead replays a whole environment", "use: hooks replay --dead --env E"
            )
        status = "dead"
    selecting = any(v is not None for v in (status, env, source, event, since, until))
    if delivery is not None:
        if selecting or dry_run:
            raise UsageError(
                "give a delivery id or filters, not both",
                "use: hooks replay ID, or hooks replay --status dead --env E [--dry-run]",
            )
        d = api.webhooks.replay(delivery)
        if as_json:
            print_json(d.as_json())
            return
        console.print(f"queued {d.id} ({d.environment}/{d.source}) for forwarding", markup=False)
        return
    if not selecting:
        raise UsageError(
            "which deliveries?",
            "use: hooks replay ID, or filters: --status, --env, --source, --event, --since, "
            "--until (add --dry-run to list them first)",
        )
    if status is not None and status not in STATUSES:
        raise UsageError(f"unknown status {status!r}", f"use one of {', '.join(STATUSES)}")
    now = time.time()
    try:
        since_at = dom.parse_when(since, now) if since is not None else None
        until_at = dom.parse_when(until, now) if until is not None else None
    except ValueError as exc:
        raise UsageError(str(exc), "e.g. --since 2h --until 30m") from None
    ref = current_project()
    chosen = api.webhooks.replay_many(
        ref.name,
        environment=env,
        status=status,
        source=source,
        event_type=event,
        since=since_at,
        until=until_at,
        dry_run=dry_run,
    )
    if as_json:
        print_json({"replayed": [d.id for d in chosen], "dry_run": dry_run})
        return
    verb = "would queue" if dry_run else "queued"
    for d in chosen:
        console.print(
            f"{d.id}  {d.environment}/{d.source}  {d.event_type or ''}  {d.status}  "
            f"{when(d.received_at)}",
            markup=False,
        )
    console.print(f"{verb} {len(chosen)} deliveries", markup=False)


@hooks_app.command("resume")
def resume(
    env: str = typer.Argument(..., help="The environment."),
    source: str = typer.Argument(..., help="The webhook source name in tristage.toml."),
    destination: str | None = typer.Option(
        None, "--destination", "-d", help="Only this destination (default: all of the source)."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Resume a source's paused destinations (paused after a 410 or after failing
    longer than `pause_after`): their waiting deliveries go out now."""
    ref = current_project()
    resumed = get_api().webhooks.resume(ref.name, env, source, destination)
    if as_json:
        print_json({"resumed": resumed})
        return
    if resumed:
        console.print(f"resumed {env}/{source} -> {', '.join(resumed)}", markup=False)
    else:
        console.print(f"nothing of {env}/{source} was paused", markup=False)


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
