"""Projects by name (-p/--project), `tristage projects`, `tristage gc` and
`tristage destroy`: real pushes, a real control plane, real files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import git, run_cli
from test_deploy_helpers import (
    ControlPlane,
    commit,
    deployment_id,
    make_project,
    push,
    wait_for,
)
from tristage.api import Tristage
from tristage.cli.main import hoist_project


def test_hoist_project_moves_only_what_is_not_the_commands_own() -> None:
    assert hoist_project(["status", "-p", "shop"]) == ["--project", "shop", "status"]
    assert hoist_project(["env", "ls", "--project=shop"]) == ["--project", "shop", "env", "ls"]
    assert hoist_project(["-p", "shop", "status"]) == ["-p", "shop", "status"]
    assert hoist_project(["up", "-p", "0"]) == ["up", "-p", "0"]  # up's own --port
    assert hoist_project(["init", "-p", "simple"]) == ["init", "-p", "simple"]
    assert hoist_project(["run", "-e", "production", "--", "x", "-p", "1"]) == [
        "run", "-e", "production", "--", "x", "-p", "1",
    ]  # fmt: skip
    assert hoist_project(["receive", "--project", "shop"]) == ["receive", "--project", "shop"]


def test_commands_find_a_project_by_name_from_anywhere(repo: Path, tmp_path: Path) -> None:
    make_project(repo)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = run_cli("projects", "--json", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert [p["name"] for p in json.loads(r.stdout)] == ["shop"]
    assert json.loads(r.stdout)[0]["root"] == str(repo.resolve())
    for args in (("-p", "shop", "status", "--json"), ("status", "--json", "-p", "shop")):
        r = run_cli(*args, cwd=elsewhere)
        assert r.returncode == 0, r.stderr
        assert {e["environment"] for e in json.loads(r.stdout)["environments"]} == {
            "development", "preview", "production",
        }  # fmt: skip
    r = run_cli("resolve", "test", "--project", "shop", cwd=elsewhere)
    assert r.returncode == 0 and r.stdout.splitlines()[0] == "preview"
    r = run_cli("env", "ls", "--env", "production", cwd=elsewhere, env={"TRISTAGE_PROJECT": "shop"})
    assert r.returncode == 0, r.stderr
    r = run_cli("status", "-p", "nope", cwd=elsewhere)
    assert r.returncode == 1 and "no project named 'nope'" in r.stderr
    # without a name, outside a working copy: what to do
    r = run_cli("status", cwd=elsewhere)
    assert r.returncode == 1 and "tristage.toml" in r.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_gc_removes_old_deployments_and_keeps_what_must_stay(
    repo: Path, home: Path, cp: ControlPlane
) -> None:
    project = make_project(repo)
    toml = (project / "tristage.toml").read_text().replace("keep_warm = 2 ", "keep_warm = 1 ")
    toml += "\n[cleanup]\nkeep_per_environment = 1\nkeep_production = 1\n"
    commit(project, {"tristage.toml": toml}, "tight cleanup")
    prod = []
    for i in range(3):
        commit(project, {"note.txt": f"v{i}\n"}, f"v{i}")
        r = push(project, "main")
        assert r.returncode == 0, r.stderr
        prod.append(deployment_id(r.stderr))
    git(project, "checkout", "-qb", "dev")
    dev = []
    for i in range(2):
        commit(project, {"note.txt": f"dev{i}\n"}, f"dev{i}")
        dev.append(deployment_id(push(project, "dev").stderr))
    assert cp.serves("shop.localhost") == prod[2]
    first = home / "artifacts" / "shop" / prod[0]
    assert first.is_dir()
    r = run_cli("gc", "--dry-run", "--json", cwd=project)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)[0]
    assert set(plan["removed"]) | set(plan["running"]) == {prod[0], dev[0]}
    assert "live in production" in plan["kept"][prod[2]]
    assert "production rollback target 1" in plan["kept"][prod[1]]
    assert first.is_dir()  # a dry run removes nothing

    def cleaned() -> bool:
        out = json.loads(run_cli("gc", "--json", cwd=project).stdout)[0]
        return not out["running"]

    wait_for(cleaned, 30, "the old releases to stop and be removed")
    listed = {d["id"] for d in json.loads(run_cli("deployments", "--json", cwd=project).stdout)}
    assert listed == {prod[1], prod[2], dev[1]}
    assert not first.exists()
    assert not (home / "logs" / "shop" / f"{prod[0]}.build.log").exists()
    assert (home / "artifacts" / "shop" / prod[1]).is_dir()
    refs = git(home / "repos" / "shop.git", "for-each-ref", "--format=%(refname)")
    assert prod[0] not in refs and prod[1] in refs
    # what stays still serves, and production can still roll back
    assert cp.serves("shop.localhost") == prod[2]
    assert cp.serves("development.shop.localhost") == dev[1]
    r = run_cli("rollback", cwd=project)
    assert r.returncode == 0, r.stderr
    assert cp.serves("shop.localhost") == prod[1]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_destroy_leaves_nothing_but_the_final_backup(
    repo: Path, home: Path, tmp_path: Path, cp: ControlPlane
) -> None:
    project = make_project(repo)
    dep = deployment_id(push(project, "main").stderr)
    assert cp.serves("shop.localhost") == dep
    run_cli("env", "set", "TOKEN", "--env", "production", input="abc\n", cwd=project)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = run_cli("destroy", "shop", input="shp\n", cwd=elsewhere)
    assert r.returncode == 1 and "nothing was removed" in r.stderr
    assert (home / "repos" / "shop.git").is_dir() and cp.serves("shop.localhost") == dep
    r = run_cli("destroy", "shop", input="shop\n", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert "final backup kept: production:" in r.stdout
    backups = [p for p in (home / "backups" / "shop").rglob("*") if p.is_file()]
    assert backups, "the final backup is kept"
    assert str(backups[0].parent) in r.stdout or "backups/shop" in r.stdout
    for gone in ("repos/shop.git", "artifacts/shop", "logs/shop", "data/shop", "cache/shop"):
        assert not (home / gone).exists(), gone
    assert json.loads(run_cli("projects", "--json", cwd=elsewhere).stdout) == []
    wait_for(lambda: cp.get("shop.localhost").status_code == 404, 20, "its hosts to go")
    wait_for(lambda: f"{dep} stopped" in cp.output(), 20, "its release to stop")
    # no process of the project's release is left
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    for pid in pids:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        assert f"TRISTAGE_DEPLOYMENT={dep}\0".encode() not in environ
    # the state store has no row of it left but the audit log's
    r = run_cli("status", "-p", "shop", cwd=elsewhere)
    assert r.returncode == 1 and "no project named" in r.stderr
    # --yes for scripts; an unknown project is an error
    r = run_cli("destroy", "shop", "--yes", cwd=elsewhere)
    assert r.returncode == 1 and "no project named" in r.stderr


def test_destroy_knows_every_table_that_holds_a_project(api: Tristage) -> None:
    from tristage.services.lifecycle import PROJECT_TABLES

    tables = [
        r["name"] for r in api.store.query("SELECT name FROM sqlite_master WHERE type='table'")
    ]
    with_project = {
        t for t in tables
        if any(c["name"] == "project" for c in api.store.query(f"PRAGMA table_info({t})"))
    }  # fmt: skip
    # the audit log keeps the record of a removed project; projects is removed last
    assert with_project - {"audit_events"} <= set(PROJECT_TABLES), (
        with_project - set(PROJECT_TABLES) - {"audit_events"}
    )


def _processes_of(dep: str) -> list[str]:
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if f"TRISTAGE_DEPLOYMENT={dep}\0".encode() in environ:
            found.append(pid)
    return found


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_destroy_stops_releases_a_killed_control_plane_left_running(
    repo: Path, home: Path, tmp_path: Path
) -> None:
    project = make_project(repo)
    plane = ControlPlane(home).start()
    try:
        dep = deployment_id(push(project, "main").stderr)
        assert plane.serves("shop.localhost") == dep
        plane.kill9()  # releases outlive it
        assert _processes_of(dep)
    finally:
        plane.stop()
    r = run_cli("destroy", "shop", "--yes", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "final backup kept: production:" in r.stdout
    wait_for(lambda: not _processes_of(dep), 20, "the release's processes to go")
    assert not (home / "repos" / "shop.git").exists()
