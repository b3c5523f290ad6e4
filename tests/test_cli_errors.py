"""How the CLI reports an error: one literal line (never Rich markup), a hint, its exit code."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tristage.cli import main
from tristage.errors import NotFound, TristageError, UsageError


def tristage(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cwd: Path, *args: str
) -> tuple[int, str, str]:
    """`tristage ARGS` in this process, through the console entry (`run`)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["tristage", *args])
    with pytest.raises(SystemExit) as exited:
        main.run()
    out = capsys.readouterr()
    code = exited.value.code
    return code if isinstance(code, int) else 0, out.out, out.err


def test_markup_in_a_message_is_printed_literally(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert tristage(monkeypatch, capsys, repo, "init")[0] == 0
    code, _, err = tristage(monkeypatch, capsys, repo, "env", "get", "NOPE", "--env", "[/red]")
    assert "Traceback" not in err and "MarkupError" not in err, err
    assert err.startswith("error: ") and "'[/red]'" in err, err
    assert code == NotFound.exit_code


def test_brackets_in_message_and_hint_are_kept(capsys: pytest.CaptureFixture[str]) -> None:
    main.report(
        TristageError("add users.email to [sanitize] first", "see [bold]docs[/bold] and [sanitize]")
    )
    assert capsys.readouterr().err == (
        "error: add users.email to [sanitize] first\n  hint: see [bold]docs[/bold] and [sanitize]\n"
    )


@pytest.mark.parametrize("args", [("init",), ("resolve", "main")])
def test_the_exit_code_is_the_errors_own(
    args: tuple[str, ...],
    tmp_path: Path,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # outside a git working copy: init is a UsageError (2), resolve finds no project (1)
    code, _, err = tristage(monkeypatch, capsys, tmp_path, *args)
    expected = UsageError if args == ("init",) else NotFound
    assert code == expected.exit_code and expected.exit_code in (1, 2), err
    assert err.startswith("error: ") and "  hint: " in err
