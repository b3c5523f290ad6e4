"""Shared fixtures: a platform home, real git working copies, the CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tristage.api import Tristage

# The PostgreSQL server the data-store tests create (and drop) their databases on.
PG_SERVER = os.environ.get("TRISTAGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432")

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


def run_cli(
    *args: str,
    cwd: Path | None = None,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run `tristage ARGS` in a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "tristage", *args],
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=timeout,
    )


@pytest.fixture
def cli():  # type: ignore[no-untyped-def]
    return run_cli
