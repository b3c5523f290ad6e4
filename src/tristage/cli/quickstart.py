"""`tristage quickstart`: the guide's whole workflow, end to end, in one command."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from ..errors import EXIT_FAILED, TristageError
from .common import console, err_console, get_api, print_json

if TYPE_CHECKING:
    from ..api import Quickstart, Summary


class PresetName(StrEnum):
    professional = "professional"
    simple = "simple"


class RichReporter:
    """Steps as they complete, and a spinner with the current activity (on a terminal)."""

    def __init__(self, out: Console) -> None:
        self.out = out
        self.title = ""
        self.text = ""
        self.started = time.monotonic()
        self.spinner = Spinner("dots", style="cyan")
        self.live: Live | None = None
        if out.is_terminal:
            self.live = Live(self, console=out, refresh_per_second=10, transient=True)
            self.live.start()

    def __rich__(self) -> Spinner:
        elapsed = time.monotonic() - self.started
        line = Text.assemble((self.title, "bold"), f" {elapsed:4.1f}s  ", (self.text, "dim"))
        line.truncate(max(20, self.out.width - 4), overflow="ellipsis")
        self.spinner.update(text=line)
        return self.spinner

    def step(self, title: str) -> None:
        self.title, self.text, self.started = title, "", time.monotonic()
        if self.live is None:
            self.out.print(f"[cyan]>[/] {escape(title)} ...", soft_wrap=True)

    def detail(self, text: str) -> None:
        self.text = text

    def done(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        self.out.print(
            f"[green]✓[/] [bold]{escape(self.title)}[/] [dim]{elapsed:.1f}s[/]  {escape(text)}",
            soft_wrap=True,
        )
        self.title, self.text = "", ""

    def note(self, text: str) -> None:
        self.out.print(f"  [yellow]![/] {escape(text)}", soft_wrap=True)

    def fail(self, text: str) -> None:
        self.close()
        title = self.title or "quickstart"
        self.out.print(f"[red]✗[/] [bold]{escape(title)}[/]  {escape(text)}", soft_wrap=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


@contextmanager
def interrupt_on_term() -> Iterator[Callable[[], bool]]:
    """SIGTERM and SIGHUP act like Ctrl-C while quickstart runs, so the same cleanup stops
    what it started. Yields a check telling whether one arrived."""
    hit: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        hit.append(signum)
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield lambda: bool(hit)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _dashboard_url() -> str | None:
    """The platform dashboard's URL (None when the control plane does not serve one)."""
    from .open import dashboard_url

    try:
        return dashboard_url()
    except TristageError:
        return None


def show_summary(qs: Quickstart, summary: Summary, out: Console) -> None:
    out.print()
    urls = Table.grid(padding=(0, 2))
    urls.add_column(no_wrap=True)
    urls.add_column(overflow="fold")  # a URL is folded onto the next line, never cut
    for e in summary.environments:
        url = Text(e.url, style=f"link {e.url}")
        urls.add_row(Text(e.environment, style="bold"), url)
    title = f"{summary.project} is live"
    out.print(Panel(urls, title=title, subtitle="the app's /dashboard on each URL",
                    expand=False, border_style="green"))  # fmt: skip
    dashboard = _dashboard_url()
    if dashboard:
        out.print(
            f"dashboard: {dashboard}  (run 'tristage open' to open it signed in)",
            markup=False, soft_wrap=True,
        )  # fmt: skip
    table = Table(box=None)
    for column in ("environment", "tier", "branch", "live", "health", "users", "payments"):
        table.add_column(column, no_wrap=True)
    table.add_column("url", overflow="fold")
    for e in summary.environments:
        style = "green" if e.health == "healthy" else "red"
        table.add_row(
            e.environment,
            e.tier,
            e.branch,
            e.deployment or "-",
            f"[{style}]{e.health}[/]",
            str(e.users),
            str(e.payment_attempts),
            e.url,
        )
    if out.is_terminal:
        out.print(table)
    else:  # a log or a pipe: one line per environment, whatever the width
        Console(file=out.file, width=max(out.width, 160), highlight=False).print(table)
    if summary.backup:
        out.print(f"\nverified production backup: {summary.backup}", markup=False)
    out.print(
        f"{summary.cloned_rows} production rows cloned into preview, personal data sanitized; "
        "a test user.created webhook delivered to each environment",
        markup=False,
    )
    out.print("\n[bold]Try next[/]")
    for command, what in qs.next_steps(summary):
        out.print(f"  [cyan]{escape(command)}[/]", soft_wrap=True)
        out.print(f"      [dim]{escape(what)}[/]", soft_wrap=True)


def quickstart(
    directory: Path = typer.Option(
        Path("tristage-quickstart"), "--dir", "-d", help="Where the app's git repository goes."
    ),
    preset: PresetName = typer.Option(
        PresetName.professional,
        "--preset",
        "-p",
        help="professional: preview has its own instances; simple: it shares development's.",
    ),
    port: int | None = typer.Option(
        None,
        "--port",
        help="Router port of the control plane it starts (default 8080; 0 picks a free one).",
    ),
    no_wait: bool = typer.Option(
        False,
        "--no-wait",
        help="Exit after the summary; a control plane it started keeps running in the background.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Deploy the reference SaaS app to development, preview and production, end to end.

    Creates a git repository with the app and its tristage.toml, sets each environment's
    variables, starts the control plane (or uses the running one), pushes dev, test and
    main, seeds production, takes a verified backup, clones production into preview
    (sanitized), sends a signed test webhook to each environment, and prints the URLs.
    Then it serves until Ctrl-C, which stops the control plane it started.
    """
    api = get_api()
    chosen: Literal["simple", "professional"] = (
        "simple" if preset is PresetName.simple else "professional"
    )
    out = err_console if as_json else console
    reporter = RichReporter(out)
    qs = api.quickstart(directory, chosen, port, reporter)
    with interrupt_on_term() as stopped:
        try:
            try:
                summary = qs.run()
            finally:
                reporter.close()
        except KeyboardInterrupt:
            reporter.fail("interrupted")
            _stop(qs, out)
            raise typer.Exit(130) from None
        except TristageError as exc:
            reporter.fail(exc.message)
            if exc.hint:
                out.print(f"  hint: {exc.hint}", markup=False, soft_wrap=True)
            _stop(qs, out)
            raise typer.Exit(exc.exit_code) from None
        except BaseException:
            _stop(qs, out)
            raise
        if as_json:
            print_json(summary.as_json())
        else:
            show_summary(qs, summary, out)
            out.print(f"\nquickstart took {summary.seconds:.1f}s", markup=False)
        if not summary.started_controlplane:
            out.print(
                f"The control plane (pid {summary.controlplane_pid}) was already running and "
                "keeps serving.",
                markup=False,
            )
            return
        if no_wait:
            pid = qs.detach()
            out.print(
                f"The control plane keeps running in the background (pid {pid}, log "
                f"{qs.controlplane_log}); stop it with: tristage down",
                markup=False,
                soft_wrap=True,
            )
            return
        out.print(
            "Serving. Press Ctrl-C to stop the control plane and every release it started.",
            markup=False,
        )
        try:
            code = qs.wait(stopped)
        except KeyboardInterrupt:
            code = None
        if code is not None:
            out.print(
                f"the control plane exited with code {code}; see {qs.controlplane_log}",
                markup=False,
            )
            raise typer.Exit(EXIT_FAILED)
        _stop(qs, out)


def _stop(qs: Quickstart, out: Console) -> None:
    try:
        stopped = qs.stop()
    except KeyboardInterrupt:  # a second Ctrl-C while stopping: stop harder
        stopped = qs.stop()
    if stopped:
        out.print("stopped the control plane and its releases", markup=False)


def register(app: typer.Typer) -> None:
    """Add `tristage quickstart` to the main app."""
    app.command("quickstart")(quickstart)
