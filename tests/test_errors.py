"""The error tree drawn in `errors.py` is the tree the code has, attribute for attribute."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tristage import errors
from tristage.api import Tristage
from tristage.edges import git
from tristage.errors import GitError, StoreError, TristageError, UsageError

ROW = re.compile(r"^    ((?:[│ ]   )*(?:[├└]── )?)(\w+)\s+(\d)\s+(\d{3})\s+(\w+)\s+\S")


def drawn() -> dict[str, tuple[str | None, int, int, str]]:
    """class name -> (parent name, exit code, HTTP status, code), as the docstring draws it."""
    assert errors.__doc__ is not None
    out: dict[str, tuple[str | None, int, int, str]] = {}
    parents: list[str] = []
    for line in errors.__doc__.splitlines():
        m = ROW.match(line)
        if m is None:
            continue
        depth = len(m.group(1)) // 4
        del parents[depth:]
        name = m.group(2)
        out[name] = (parents[-1] if parents else None, int(m.group(3)), int(m.group(4)), m.group(5))
        parents.append(name)
    return out


def defined() -> dict[str, tuple[str | None, int, int, str]]:
    out: dict[str, tuple[str | None, int, int, str]] = {}
    for name, cls in vars(errors).items():
        if isinstance(cls, type) and issubclass(cls, TristageError):
            base = cls.__base__
            parent = base.__name__ if base is not None and base is not Exception else None
            out[name] = (parent, cls.exit_code, cls.http_status, cls.code)
    return out


def test_the_docstring_draws_every_error_class_as_defined() -> None:
    assert len(drawn()) >= 8
    assert drawn() == defined()


def test_codes_are_unique_and_statuses_are_errors() -> None:
    table = defined()
    codes = [code for _, _, _, code in table.values()]
    assert len(codes) == len(set(codes))
    for _, exit_code, status, code in table.values():
        assert exit_code in (errors.EXIT_FAILED, errors.EXIT_USAGE)
        assert 400 <= status < 600 and re.fullmatch(r"[a-z_]+", code)


def test_a_git_failure_is_a_git_error_not_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(GitError) as failed:
        git.run(tmp_path, "rev-parse", "--verify", "HEAD")  # not a repository
    assert not isinstance(failed.value, UsageError)
    assert failed.value.exit_code == 1 and failed.value.http_status == 500
    assert "git rev-parse --verify HEAD failed" in failed.value.message
    assert "not a git repository" in failed.value.message


def test_git_that_cannot_run_is_a_git_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on it
    with pytest.raises(GitError) as failed:
        git.run(tmp_path, "status")
    assert "could not run git" in failed.value.message
    assert failed.value.hint and "install git" in failed.value.hint
    assert isinstance(failed.value.__cause__, OSError)


def test_a_git_failure_keeps_check_false_quiet(tmp_path: Path) -> None:
    assert git.run(tmp_path, "rev-parse", "--verify", "-q", "HEAD", check=False) == ""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert git.run(tmp_path, "rev-parse", "--is-inside-work-tree") == "true"


def test_the_state_store_wraps_sqlite_errors(tmp_path: Path) -> None:
    from tristage.edges.store import SqliteStore

    store = SqliteStore(tmp_path / "state.db")
    try:
        store.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
        store.execute("INSERT INTO t (k) VALUES (?)", ("a",))
        for call, sql in [
            (store.execute, "INSERT INTO t (k) VALUES ('a')"),
            (store.insert, "INSERT INTO t (k) VALUES ('a')"),
            (store.query, "SELECT nope FROM t"),
            (store.query_one, "SELECT * FROM missing"),
            (lambda sql: list(store.iterate(sql)), "SELECT * FROM missing"),
        ]:
            with pytest.raises(StoreError) as failed:
                call(sql)
            assert isinstance(failed.value.__cause__, sqlite3.Error), sql
            assert failed.value.exit_code == 1 and failed.value.http_status == 500
            assert "state store" in failed.value.message
        with (
            pytest.raises(StoreError, match=r"UNIQUE constraint failed: t\.k"),
            store.transaction(),
        ):
            store.execute("INSERT INTO t (k) VALUES ('b')")
            store.execute("INSERT INTO t (k) VALUES ('a')")
        assert [r["k"] for r in store.query("SELECT k FROM t")] == ["a"]  # rolled back
    finally:
        store.close()


def test_a_store_failure_on_the_ingest_url_is_a_5xx_not_an_unknown_source(
    api: Tristage, repo: Path
) -> None:
    import asyncio

    from tristage.edges.router.routes import Route
    from tristage.http.internal import WEBHOOK_PREFIX, build_internal_app

    project = api.init_project(repo).project
    app = build_internal_app(api)

    def post(source: str) -> tuple[int, dict[str, object]]:
        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": WEBHOOK_PREFIX + source,
            "headers": [],
            "tristage.route": Route(project, "production", None, None),
        }
        asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
        body = sent[1]["body"]
        assert isinstance(body, bytes)
        return int(str(sent[0]["status"])), json.loads(body)

    status, body = post("nope")
    assert (status, body["error"]) == (404, "unknown_source")
    with sqlite3.connect(api.home / "state.db") as raw:  # the store loses a table
        raw.execute("ALTER TABLE projects RENAME TO projects_gone")
    status, body = post("clerk")
    assert (status, body["error"]) == (500, "store_failed"), body
    assert "no such table" not in str(body["message"])  # logged, not told to the sender


def test_the_http_api_answers_each_error_with_its_own_status_and_code() -> None:
    from tristage.http.app import tristage_error

    for name in defined():
        cls = getattr(errors, name)
        exc = (
            cls("tristage.toml", [errors.Problem("app.port", "not a port")])
            if cls is errors.ConfigError
            else cls("what went wrong", "how to fix it")
        )
        response = tristage_error(exc)
        body = json.loads(bytes(response.body))
        assert (response.status_code, body["error"]) == (cls.http_status, cls.code), name
        assert body["message"] == exc.message and body["hint"] == exc.hint
