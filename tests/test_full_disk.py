"""A full disk under the platform home: one readable line, nothing changed, work resumes.

The home lives on a small tmpfs the test mounts (root only; skipped elsewhere) and fills.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import git, run_cli


@pytest.fixture
def small_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "home"
    home.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(home)],
                       capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    monkeypatch.setenv("TRISTAGE_HOME", str(home))
    try:
        yield home
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)


def _fill(path: Path) -> None:
    """Write zeros until the disk is full (it may be full already)."""
    try:
        with path.open("wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass


def test_a_full_disk_is_one_line_and_changes_nothing(small_home: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "commit", "-q", "--allow-empty", "-m", "x")
    assert run_cli("init", cwd=repo).returncode == 0
    filler = small_home / "filler"
    _fill(filler)
    r = run_cli("env", "set", "API_URL", "https://x.example", "--env", "development", cwd=repo)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("error: the state store could not write to its disk")
    assert "is the disk full?" in lines[0]
    assert lines[1].startswith("  hint: free space on the disk")
    assert "nothing was changed" in lines[1]
    filler.unlink()
    r = run_cli("env", "get", "API_URL", "--env", "development", cwd=repo)
    assert r.returncode == 1 and "not set" in r.stderr + r.stdout  # nothing was written
    r = run_cli("env", "set", "API_URL", "https://x.example", "--env", "development", cwd=repo)
    assert r.returncode == 0, r.stderr
