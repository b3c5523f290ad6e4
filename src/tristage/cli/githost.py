"""Git host commands: connect a project to its repository on GitHub, GitLab or Gitea,
and disconnect it (docs/git-hosts.md)."""

from __future__ import annotations

import sys

import typer

from ..errors import UsageError
from .common import console, current_project, err_console, get_api, print_json, when
from .tables import print_table


def connect(
    host: str = typer.Argument(..., help="github, gitlab or gitea."),
    repo: str = typer.Argument(..., help="The repository: OWNER/NAME (GitLab: GROUP/.../NAME)."),
    url: str | None = typer.Option(
        None, "--url", help="The web URL of a self-hosted GitLab, Gitea or GitHub Enterprise."
    ),
    api_url: str | None = typer.Option(
        None, "--api-url", help="The REST API's base URL, when it is not the usual one."
    ),
    ssh: bool = typer.Option(
        False, "--ssh", help="Fetch over ssh (this machine's keys) instead of https + token."
    ),
    clone_url: str | None = typer.Option(
        None, "--clone-url", help="Fetch from this URL instead (https, ssh or file://)."
    ),
    token_stdin: bool = typer.Option(
        False, "--token-stdin", help="Read the API token from stdin instead of a prompt."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Connect this project to its git host: pushes to it deploy by the branch rules and
    pull requests get previews at pr-N.APP…, with a commit status and one comment.

    Stores the API token (it needs to write commit statuses and comments, and read the
    repository) and a new webhook secret in the secrets box, and prints the webhook URL,
    the secret and the events to tick in the host's webhook settings."""
    ref = current_project()
    if token_stdin:
        token = sys.stdin.readline().strip()
    else:
        token = typer.prompt(f"{host} API token", hide_input=True, err=True)
    if not token:
        raise UsageError("no API token given", "pipe it to --token-stdin, or type it at the prompt")
    done = get_api().git_hosts.connect(
        ref.name, host, repo, token, url=url, api_url=api_url, clone_url=clone_url, ssh=ssh
    )
    if as_json:
        print_json(
            {
                **done.connection.as_json(),
                "webhook_url": done.webhook_url,
                "secret": done.secret,
                "events": list(done.events),
            }
        )
        return
    c = done.connection
    verb = "reconnected" if done.replaced else "connected"
    console.print(f"{verb} {ref.name} to {c.host} {c.repo} (fetching from {c.clone_url})",
                  markup=False)  # fmt: skip
    console.print("\nadd a webhook in the repository's settings:", markup=False)
    console.print(f"  payload URL:   {done.webhook_url}", markup=False)
    console.print("  content type:  application/json", markup=False)
    console.print(f"  secret:        {done.secret}", markup=False)
    console.print(f"  events:        {', '.join(done.events)}", markup=False)
    err_console.print(
        "the secret is shown once; 'tristage connect' again makes a new one", markup=False
    )


def disconnect(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Disconnect this project from its git host (its token and webhook secret are
    removed; deployments and previews stay). Delete the webhook on the host too."""
    ref = current_project()
    conn = get_api().git_hosts.disconnect(ref.name)
    if as_json:
        print_json(conn.as_json())
        return
    console.print(f"disconnected {ref.name} from {conn.host} {conn.repo}", markup=False)


def connection(
    limit: int = typer.Option(10, "--limit", "-n", help="How many recent deliveries to show."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show this project's git host connection (never the token or the secret), its
    webhook URL, and what the latest deliveries led to."""
    ref = current_project()
    svc = get_api().git_hosts
    conn = svc.connection(ref.name)
    url = svc.webhook_url(ref.name)
    recent = svc.deliveries(ref.name, limit)
    if as_json:
        print_json({**conn.as_json(), "webhook_url": url, "deliveries": recent})
        return
    console.print(f"{conn.host} {conn.repo}, fetching from {conn.clone_url}", markup=False)
    console.print(f"webhook URL: {url}", markup=False)
    if not recent:
        err_console.print("no deliveries yet: push to the repository on the host", markup=False)
        return
    rows = [
        (when(d["received_at"]), d["delivery"], d["event"], d["outcome"] or "…") for d in recent
    ]
    print_table(console, ("received", "delivery", "event", "outcome"), rows,
                whole=("delivery",))  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command()(connect)
    app.command()(connection)
    app.command()(disconnect)
