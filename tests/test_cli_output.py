"""What the CLI prints: literal cells, whole URLs, readable at 80 columns, a clean `--help`."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tristage.api import Tristage
from tristage.cli import main
from tristage.cli.tables import print_table, render_table
from tristage.edges.router.stats import DeploymentStats
from tristage.services.monitor import Monitor

URL = "http://development.a-project-with-a-rather-long-name.localhost:8080"
HEADERS = ("environment", "tier", "live", "branch", "commit", "url", "health")
ROW = ("development", "development", "7ja1w4tl", "feature/x", "3f2a1b0 fix [red]it[/]", URL, "ok")


def _printed(width: int | None, rows: list[tuple[str, ...]] | None = None, **kw: Any) -> str:
    buf = io.StringIO()
    if width is None:  # a pipe
        out = Console(file=buf, highlight=False)
    else:
        out = Console(file=buf, width=width, force_terminal=True, color_system=None)
    print_table(out, HEADERS, rows or [ROW], **kw)
    return buf.getvalue()


@pytest.mark.parametrize("width", [None, 200, 120, 100, 80, 60, 40])
def test_a_url_is_printed_whole_at_any_width(width: int | None) -> None:
    text = _printed(width)
    assert URL in text, text
    assert "…" not in text
    if width is not None:
        assert max(len(line.rstrip()) for line in text.splitlines()) <= max(width, len(URL) + 13)


def test_cells_are_literal_text_never_markup() -> None:
    # a commit message is the user's text: brackets stay, nothing is styled or dropped
    assert "3f2a1b0 fix [red]it[/]" in _printed(None)


def test_a_pipe_gets_every_column_on_one_line() -> None:
    lines = _printed(None).splitlines()
    assert len(lines) == 2 and lines[1].split() == [*ROW[:4], "3f2a1b0", "fix", "[red]it[/]",
                                                    URL, "ok"]  # fmt: skip


def test_narrow_terminals_fold_other_columns_then_fall_back_to_records() -> None:
    short = ("dev", "development", "7ja1w4tl", "main", "3f2a1b0", "http://d.localhost:8080", "ok")
    table = render_table(HEADERS, [short], width=80)
    assert isinstance(table, Table)  # folded: the URL column keeps its width
    records = render_table(HEADERS, [ROW], width=40)
    assert isinstance(records, list)
    assert [t.plain.split()[0] for t in records] == list(HEADERS)
    assert any(t.plain.endswith(URL) for t in records)


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, cmd in getattr(group, "commands", {}).items():
        if not getattr(cmd, "hidden", False):
            yield from _commands(cmd, (*path, name))


def test_help_never_shows_a_type_after_a_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    commands = list(_commands(typer.main.get_command(main.app)))
    assert len(commands) > 30
    for path in commands:
        monkeypatch.setattr("sys.argv", ["tristage", *path, "--help"])
        with pytest.raises(SystemExit):
            main.run()
        out = capsys.readouterr().out
        assert "<bool>" not in out, (path, out)
    # a value's type is still shown
    monkeypatch.setattr("sys.argv", ["tristage", "env", "set", "--help"])
    with pytest.raises(SystemExit):
        main.run()
    assert "<str>" in capsys.readouterr().out


@pytest.fixture
def project(api: Tristage, repo: Path) -> str:
    api.init_project(repo, "professional")
    return api.open_project(repo).name


def test_metrics_fit_80_columns(
    api: Tristage, project: str, repo: Path, cli: Callable[..., Any]
) -> None:
    now = time.time()
    for seq, (env, dep) in enumerate([("production", "3woq4rbv"), ("preview", "0108241q")], 1):
        api.store.execute(
            "INSERT INTO deployments (id, seq, project, environment, branch, commit_sha, trigger,"
            " status, created_at, updated_at) VALUES (?, ?, ?, ?, 'main', 'abc', 'push', 'ready',"
            " ?, ?)",
            (dep, seq, project, env, now, now),
        )
    api.store.execute(
        "INSERT INTO aliases (project, environment, desired, routed, routed_at)"
        " VALUES (?, 'production', '3woq4rbv', '3woq4rbv', ?)",
        (project, now),
    )
    monitor = Monitor(api, dict, log=lambda line: None)
    stats = {
        d: DeploymentStats(d, 123456, 120000, 3000, 456, 12, 1000, 12.5, 250.75, now)  # type: ignore[call-arg]
        for d in ("3woq4rbv", "0108241q")
    }
    monitor.sample(now, stats)
    out = cli("metrics", cwd=repo, env={"COLUMNS": "80"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80, out.stdout
    header = lines[0].split()
    assert header[:3] == ["deployment", "env", "requests"], out.stdout
    assert any(line.split()[:3] == ["3woq4rbv", "production*", "123456"] for line in lines)
    assert any(line.split()[:3] == ["0108241q", "preview", "123456"] for line in lines)


def test_a_text_cell_keeps_its_style() -> None:
    buf = io.StringIO()
    out = Console(file=buf, width=80, force_terminal=True, color_system="standard")
    print_table(out, ("a", "b"), [("x", Text("failing", style="red"))])
    assert "\x1b[31mfailing" in buf.getvalue()
