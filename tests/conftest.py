"""Shared fixtures: a platform home, real git working copies, the CLI (in process, or as a
subprocess where a test needs a process of its own)."""

from __future__ import annotations

import functools
import importlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from tristage.api import Tristage

# helper modules whose asserts fail with pytest's comparison, as a test module's do
pytest.register_assert_rewrite("edge_fixtures", "haproxy_front", "caddy_front")

if TYPE_CHECKING:
    from test_deploy_helpers import ControlPlane

# The PostgreSQL server the data-store tests create (and drop) their databases on.
PG_SERVER = os.environ.get("TRISTAGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


@functools.cache
def _pg_problem() -> str | None:
    import psycopg

    try:
        with psycopg.connect(f"{PG_SERVER}/postgres", connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any reason the server cannot be used
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    return None


def require_pg() -> None:
    """Skip the calling test (with the reason) when no PostgreSQL server answers at
    `PG_SERVER`; with TRISTAGE_REQUIRE_PG=1 (CI) fail it instead, so a run that was meant
    to cover PostgreSQL cannot pass without it."""
    problem = _pg_problem()
    if problem is None:
        return
    why = (
        f"no PostgreSQL server answers at {PG_SERVER.rsplit('@', 1)[-1]} ({problem}); "
        "start one (trust auth) or set TRISTAGE_TEST_PG=postgresql://user@host:port"
    )
    if os.environ.get("TRISTAGE_REQUIRE_PG") == "1":
        pytest.fail(why + " [TRISTAGE_REQUIRE_PG=1]")
    pytest.skip(why)


GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("TRISTAGE_HOME", str(h))
    monkeypatch.setenv("TRISTAGE_MASTER_KEY_FILE", str(h / "master.key"))
    for k, v in GIT_ENV.items():
        monkeypatch.setenv(k, v)
    return h


@pytest.fixture
def api(home: Path) -> Iterator[Tristage]:
    t = Tristage(home, actor="tester")
    yield t
    t.close()


@pytest.fixture
def cp(home: Path) -> Iterator[ControlPlane]:
    """A real control plane (`tristage up`) on `home`, stopped (with its router) afterwards.
    A module that needs other arguments or environment defines its own `cp`."""
    from test_deploy_helpers import ControlPlane  # imported here: it imports this module

    plane = ControlPlane(home).start()
    try:
        yield plane
    finally:
        plane.stop()


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **GIT_ENV}
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, home: Path) -> Path:
    """An empty git working copy on branch main."""
    r = tmp_path / "myapp"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    return r


# The CLI, imported once inside CliRunner isolation: its rich consoles are then created on
# a stream that is not a terminal (no colour codes, as in a subprocess with a pipe) and
# without COLUMNS (their width follows each call's environment).
with CliRunner().isolation(env={"COLUMNS": None}):
    _CLI_MAIN = importlib.import_module("tristage.cli.main")
    _CLI_STATE = importlib.import_module("tristage.cli.common").state


def run_cli_process(
    *args: str,
    cwd: Path | None = None,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run `tristage ARGS` in a real subprocess: for what needs a process of its own
    (signals, a terminal, output of the commands it starts, the installed entry point)."""
    return subprocess.run(
        [sys.executable, "-m", "tristage", *args],
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=timeout,
    )


def run_cli(
    *args: str,
    cwd: Path | None = None,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run `tristage ARGS` in this process, through the console entry point.

    The same `run()` a shell calls (its error lines and exit codes), with stdin, stdout,
    stderr, the environment and the working directory of a subprocess: Typer's CliRunner
    isolation swaps the streams and `os.environ`, and everything the command changed is
    put back afterwards. Off the main thread (where streams and the working directory
    are shared) it falls back to a subprocess. `timeout` only applies to that fallback;
    in process, pytest-timeout bounds the test.
    """
    if threading.current_thread() is not threading.main_thread():
        return run_cli_process(*args, cwd=cwd, input=input, env=env, timeout=timeout)
    state = _CLI_STATE
    saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    code: int | str | None = 0
    try:
        if cwd is not None:
            os.chdir(cwd)
        overrides = {"COLUMNS": "200", **(env or {})}
        with CliRunner().isolation(input=input, env=overrides) as (out, err, _):
            sys.argv = ["tristage", *args]
            state.debug, state.home, state.api = False, None, None
            try:
                _CLI_MAIN.run()
            except SystemExit as exc:
                code = exc.code
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            stdout, stderr = (b.getvalue().decode("utf-8", "replace") for b in (out, err))
    finally:
        state.debug, state.home, state.api = False, None, None
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, exit status 1
        stderr += f"{code}\n"
        code = 1
    return subprocess.CompletedProcess(["tristage", *args], code, stdout, stderr)


@pytest.fixture
def cli():  # type: ignore[no-untyped-def]
    return run_cli
