"""The artifact's virtualenv written without starting an interpreter in the sandbox
(`python.write_venv`): it runs the app's code first and the cached dependencies'
console scripts with its own python, as the sandboxed `venv` step's does; anything
already at `.venv` (a commit that carries one, a symlink) leaves it to that step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tristage.edges.builders import python, pythons


def interpreter() -> pythons.Interpreter:
    return pythons.choose(Path("/nonexistent"))  # nothing asked: tristage's own


def cached_deps(tmp_path: Path) -> Path:
    """A dependency cache entry: a venv with a package and a console script."""
    deps = tmp_path / "deps"
    subprocess.run([pythons.default_python(), "-m", "venv", "--without-pip", str(deps)],
                   check=True)  # fmt: skip
    ver = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    (deps / "lib" / ver / "site-packages" / "depmod.py").write_text("WHO = 'dep'\n")
    script = deps / "bin" / "greet"
    script.write_text(f"#!{deps}/bin/python\nimport depmod, app\nprint(depmod.WHO, app.WHO)\n")
    script.chmod(0o755)
    return deps


def test_the_written_venv_runs_the_app_and_its_dependencies(tmp_path: Path) -> None:
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "app.py").write_text("WHO = 'app'\n")
    deps = cached_deps(tmp_path)
    venv = artifact / ".venv"
    assert python.write_venv(venv, interpreter(), deps)
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import sys, app, depmod; print(sys.prefix, app.WHO, depmod.WHO)"],
        capture_output=True, text=True, check=True, cwd="/",
    ).stdout.split()  # fmt: skip
    assert out == [str(venv), "app", "dep"]
    # the dependency's console script runs with the artifact's python (its code first)
    r = subprocess.run([str(venv / "bin" / "greet")], capture_output=True, text=True, cwd="/")
    assert r.stdout.split() == ["dep", "app"], r.stderr
    assert (venv / "bin" / "activate").is_file()
    assert (
        f'VIRTUAL_ENV="{venv}"' in (venv / "bin" / "activate").read_text()
        or str(venv) in (venv / "bin" / "activate").read_text()
    )
    # no dependencies: the standard library and the app only
    bare = tmp_path / "bare" / ".venv"
    bare.parent.mkdir()
    assert python.write_venv(bare, interpreter(), None)
    ver = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    assert not (bare / "lib" / ver / "site-packages" / "10-tristage-deps.pth").exists()


def test_anything_at_dot_venv_leaves_it_to_the_sandbox(tmp_path: Path) -> None:
    target = tmp_path / "platform-file-dir"
    target.mkdir()
    (target / "keep").write_text("untouched\n")
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    os.symlink(target, artifact / ".venv")  # what a commit may carry
    assert not python.write_venv(artifact / ".venv", interpreter(), None)
    assert sorted(os.listdir(target)) == ["keep"]
    (artifact / ".venv").unlink()
    (artifact / ".venv").mkdir()
    assert not python.write_venv(artifact / ".venv", interpreter(), None)
    assert os.listdir(artifact / ".venv") == []
