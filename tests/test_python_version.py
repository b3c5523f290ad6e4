"""The app's own Python: `.python-version`, `runtime.txt` or `requires-python` pick an
installed interpreter other than tristage's own, used by the build and the release (in
the sandbox); a version nothing here provides is one clear build error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from test_deploy_helpers import ControlPlane, commit, make_project, push
from tristage.edges.builders import pythons
from tristage.edges.builders.base import BuildFailed

OWN = f"{sys.version_info[0]}.{sys.version_info[1]}"


def other_interpreter() -> tuple[str, str]:
    """An installed interpreter of another minor version than tristage's: (minor, version)."""
    for path in pythons.candidates():
        probed = pythons._probe(path)
        if probed and not probed[0].startswith(OWN + "."):
            return ".".join(probed[0].split(".")[:2]), probed[0]
    pytest.skip("only one minor version of Python is installed here")


def test_each_way_of_asking_picks_a_matching_interpreter(tmp_path: Path) -> None:
    minor, full = other_interpreter()
    (tmp_path / ".python-version").write_text(f"{minor}\n")
    chosen = pythons.choose(tmp_path)
    assert chosen.version.startswith(minor + ".") and chosen.source.startswith(".python-version")
    (tmp_path / ".python-version").unlink()
    (tmp_path / "runtime.txt").write_text(f"python-{full}\n")
    assert pythons.choose(tmp_path).version == full
    (tmp_path / "runtime.txt").unlink()
    (tmp_path / "pyproject.toml").write_text(f'[project]\nname="x"\nrequires-python=">={OWN}"\n')
    assert pythons.choose(tmp_path).path == pythons.default_python()  # tristage's own fits
    (tmp_path / "pyproject.toml").unlink()
    assert pythons.choose(tmp_path).source == "default"


def test_a_version_not_installed_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / ".python-version").write_text("3.99\n")
    with pytest.raises(BuildFailed) as info:
        pythons.choose(tmp_path)
    msg = str(info.value)
    assert "Python ==3.99.* (asked for in .python-version (3.99)) is not installed" in msg
    assert OWN in msg and "uv python install 3.99" in msg
    (tmp_path / ".python-version").write_text("latest, please\n")
    with pytest.raises(BuildFailed, match="is not a CPython version"):
        pythons.choose(tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_deploy_builds_and_runs_with_the_python_it_asks_for(repo: Path, cp: ControlPlane) -> None:
    minor, _ = other_interpreter()
    make_project(repo)
    commit(repo, {".python-version": f"{minor}\n"}, "python version")
    r = push(repo, "main", timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"> python {minor}." in r.stderr and "from .python-version" not in r.stderr
    assert f".python-version ({minor})" in r.stderr
    assert cp.get("shop.localhost").json()["python"].startswith(minor + ".")
    r = run_cli("deployments", "--json", cwd=repo)
    assert json.loads(r.stdout)[0]["runtime"].startswith(f"python {minor}.")  # shown there too
    # a version nothing provides: the build fails naming it, production keeps serving
    commit(repo, {".python-version": "3.99\n"}, "unavailable python")
    r = push(repo, "main", timeout=120)
    assert "error: Python ==3.99.* (asked for in .python-version" in r.stderr, r.stderr
    assert cp.get("shop.localhost").json()["python"].startswith(minor + ".")
    assert run_cli("deployments", cwd=repo).returncode == 0
