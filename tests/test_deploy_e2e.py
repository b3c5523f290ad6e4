"""Whole-flow deploy tests: real git pushes into the hosted repository, a real control
plane process, real releases on loopback ports, real HTTP through the router."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import git, run_cli
from test_deploy_helpers import (
    ControlPlane,
    Load,
    commit,
    deployment_id,
    deployments,
    make_project,
    push,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def project(repo: Path) -> Path:
    return make_project(repo)


def test_push_main_and_test_serve_production_and_preview(project: Path, cp: ControlPlane) -> None:
    r = push(project, "main")
    assert r.returncode == 0, r.stderr
    prod = deployment_id(r.stderr)
    # the push prints the build log and the URL, like Vercel's CLI
    assert "git archive" in r.stderr
    assert f"production: http://shop.localhost:{cp.port}" in r.stderr
    assert f"http://{prod}.shop.localhost:{cp.port}" in r.stderr
    body = cp.get("shop.localhost").json()
    assert body["deployment"] == prod
    assert body["environment"] == "production" and body["branch"] == "main"
    assert body["database"] is True
    assert cp.serves("production.shop.localhost") == prod
    assert cp.serves(f"{prod}.shop.localhost") == prod

    git(project, "checkout", "-qb", "test")
    commit(project, {"note.txt": "qa\n"}, "qa change")
    r = push(project, "test")
    assert r.returncode == 0, r.stderr
    preview = deployment_id(r.stderr)
    assert f"preview: http://preview.shop.localhost:{cp.port}" in r.stderr
    assert cp.get("preview.shop.localhost").json()["environment"] == "preview"
    assert cp.serves("preview.shop.localhost") == preview
    assert cp.serves("test.shop.localhost") == preview  # the branch host
    assert cp.serves("shop.localhost") == prod  # production untouched
    assert cp.get("nothing.shop.localhost").status_code == 404
    assert cp.get("development.shop.localhost").status_code == 503

    listed = {d["id"]: d for d in deployments(project)}
    assert listed[prod]["live"] and listed[preview]["live"]
    assert listed[preview]["message"] == "qa change"
    status = json.loads(run_cli("status", "--json", cwd=project).stdout)
    by_env = {e["environment"]: e for e in status["environments"]}
    assert by_env["production"]["deployment"] == prod
    assert by_env["production"]["health"] == "healthy"
    assert by_env["development"]["deployment"] is None
    text = run_cli("deployments", cwd=project, env={"COLUMNS": "200"}).stdout
    assert prod in text and "live" in text


def test_failing_health_check_never_takes_production(project: Path, cp: ControlPlane) -> None:
    good = deployment_id(push(project, "main").stderr)
    commit(project, {"MODE": "unhealthy\n"}, "break health")
    r = push(project, "main")
    bad = deployment_id(r.stderr)
    assert "health check GET /health did not answer 2xx/3xx" in r.stderr
    assert cp.serves("shop.localhost") == good
    listed = {d["id"]: d for d in deployments(project)}
    assert listed[bad]["status"] == "error" and not listed[bad]["live"]
    assert "HTTP 500" in listed[bad]["reason"]
    assert listed[good]["live"]
    # a failed deployment cannot be promoted either
    r = run_cli("promote", bad, cwd=project)
    assert r.returncode == 1 and "not ready" in r.stderr


def test_promote_and_rollback_under_load(project: Path, cp: ControlPlane) -> None:
    first = deployment_id(push(project, "main").stderr)
    git(project, "checkout", "-qb", "test")
    commit(project, {"note.txt": "v2\n"}, "v2")
    preview = deployment_id(push(project, "test").stderr)
    with Load(cp.port, "shop.localhost") as load:
        load.answered()
        r = run_cli("promote", preview, cwd=project)
        assert r.returncode == 0, r.stderr
        assert "reusing the artifact" in r.stdout
        promoted = r.stdout.split("production deployment ")[1].split()[0]
        assert cp.serves("shop.localhost") == promoted
        load.answered()
        r = run_cli("rollback", cwd=project)
        assert r.returncode == 0, r.stderr
        assert cp.serves("shop.localhost") == first
        load.answered()
        r = run_cli("rollback", "--to", promoted, cwd=project)
        assert r.returncode == 0, r.stderr
        assert cp.serves("shop.localhost") == promoted
        load.answered()
    assert load.failures == []
    assert load.requests > 20
    assert set(load.seen) == {first, promoted}
    body = cp.get("shop.localhost").json()
    assert body["environment"] == "production" and body["branch"] == "test"
    # rollback from a preview deployment is refused with a hint
    r = run_cli("rollback", "--to", preview, cwd=project)
    assert r.returncode == 1 and "tristage promote" in r.stderr


def test_kill9_of_control_plane_then_restart_keeps_production(
    project: Path, cp: ControlPlane
) -> None:
    prod = deployment_id(push(project, "main").stderr)
    upstream = run_cli("status", "--json", cwd=project)
    assert upstream.returncode == 0
    # a build that will be interrupted
    git(project, "checkout", "-qb", "dev")
    slow = (project / "tristage.toml").read_text().replace("[app]\n", '[app]\nbuild = "sleep 30"\n')
    commit(project, {"tristage.toml": slow}, "slow build")
    import subprocess

    pusher = subprocess.Popen(
        ["git", "push", "tristage", "dev"], cwd=project, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    wait_for(lambda: any(d["status"] == "building" for d in deployments(project)), 20, "the build")
    cp.kill9()
    out, _ = pusher.communicate(timeout=20)
    assert "control plane stopped" in out
    cp.start()  # same port
    assert cp.serves("shop.localhost") == prod
    assert f"{prod} re-adopted" in cp.output()
    building = [d for d in deployments(project) if d["branch"] == "dev"]
    assert building[0]["status"] == "error" and "interrupted" in building[0]["reason"]


def test_crash_loop_is_marked_crashed(project: Path, cp: ControlPlane) -> None:
    git(project, "checkout", "-qb", "test")
    commit(project, {"MODE": "crash\n"}, "crashes after start")
    dep = deployment_id(push(project, "test").stderr)
    wait_for(
        lambda: next(d for d in deployments(project) if d["id"] == dep)["status"] == "crashed",
        20,
        "the crash loop",
    )
    reason = next(d for d in deployments(project) if d["id"] == dep)["reason"]
    assert "crash loop" in reason and "exit code 3" in reason
    assert "restarting" in cp.output()


def test_deploy_from_working_copy_and_logs(project: Path, cp: ControlPlane) -> None:
    git(project, "checkout", "-qb", "feature/Login")
    commit(project, {"note.txt": "wip\n"}, "wip")
    r = run_cli("deploy", cwd=project)
    assert r.returncode == 0, r.stderr
    dep = r.stdout.split("deployment ")[1].split()[0]
    # a branch a glob caught is served at its branch host, never the environment's
    assert "development (feature/Login): http://feature-login.shop.localhost" in r.stdout
    assert cp.serves("feature-login.shop.localhost") == dep
    assert cp.get("development.shop.localhost").status_code == 503
    build_log = run_cli("logs", dep, "--build", cwd=project).stdout
    assert "git archive" in build_log and "healthy in" in build_log
    cp.get("feature-login.shop.localhost", "/hello")
    wait_for(lambda: "GET /hello" in run_cli("logs", dep, cwd=project).stdout, 10, "runtime log")
    r = run_cli("logs", "0zzzzzzz", cwd=project)
    assert r.returncode == 1 and "no deployment" in r.stderr


def test_push_while_down_is_carried_out_on_up(project: Path, home: Path) -> None:
    r = push(project, "main")
    assert r.returncode == 0, r.stderr
    assert "control plane is not running" in r.stderr
    dep = deployment_id(r.stderr)
    plane = ControlPlane(home).start()
    try:
        wait_for(lambda: plane.serves("shop.localhost") == dep, 20, "the queued deployment")
    finally:
        plane.stop()
    # a clean stop stops the releases too
    assert run_cli("status", "--json", cwd=project).returncode == 0
    rows = json.loads(run_cli("status", "--json", cwd=project).stdout)["environments"]
    assert next(e for e in rows if e["environment"] == "production")["health"] == "down"


def test_rule_violation_refuses_the_deploy(project: Path, cp: ControlPlane) -> None:
    toml = (project / "tristage.toml").read_text()
    start = toml.index("[environments.production]")
    toml = toml[:start] + toml[start:].replace("required = []", 'required = ["API_KEY"]', 1)
    commit(project, {"tristage.toml": toml}, "require API_KEY")
    run_cli("resolve", "main", cwd=project)  # registers the new configuration
    r = push(project, "main")
    assert "deploy refused" in r.stderr and "API_KEY" in r.stderr
    dep = deployments(project)[0]
    assert dep["status"] == "error" and "API_KEY" in dep["reason"]
    assert cp.get("shop.localhost").status_code == 503


def test_requirements_venv_cache(repo: Path, cp: ControlPlane) -> None:
    project = make_project(repo)
    commit(project, {"requirements.txt": "# no third-party dependencies\n"}, "deps")
    first = deployment_id(push(project, "main").stderr)
    assert "cache miss" in run_cli("logs", first, "--build", cwd=project).stdout
    r = run_cli("redeploy", first, "--rebuild", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "cache hit" in r.stdout
    second = r.stdout.split("deployment ")[1].split()[0]
    assert cp.serves("shop.localhost") == second


def test_node_app_is_installed_built_and_served(repo: Path, cp: ControlPlane) -> None:
    project = make_project(repo, app="node")
    r = push(project, "main")
    assert r.returncode == 0, r.stderr
    assert "npm install" in r.stderr and "npm run build" in r.stderr
    body = cp.get("shop.localhost").json()
    assert body["node"] is True and body["deployment"] == deployment_id(r.stderr)
    assert body["built"] == {"built": True, "env": "production"}


def test_down_stops_the_control_plane_and_its_releases(project: Path, home: Path) -> None:
    plane = ControlPlane(home).start()
    try:
        r = push(project, "main")
        assert r.returncode == 0, r.stderr
        dep = deployment_id(r.stderr)
        wait_for(lambda: plane.serves("shop.localhost") == dep, 20, "production")
        r = run_cli("down", cwd=project)
        assert r.returncode == 0, r.stderr
        assert "stopped the control plane" in r.stdout
        assert plane.proc is not None and plane.proc.wait(timeout=10) == 0
    finally:
        plane.stop()
    rows = json.loads(run_cli("status", "--json", cwd=project).stdout)["environments"]
    assert next(e for e in rows if e["environment"] == "production")["health"] == "down"
    again = run_cli("down", cwd=project)
    assert again.returncode == 1
    assert "no control plane is running" in again.stderr


def test_redeploy_env_reuses_the_artifact_with_new_runtime_variables(
    project: Path, cp: ControlPlane
) -> None:
    first = deployment_id(push(project, "main").stderr)
    wait_for(lambda: cp.serves("shop.localhost") == first, 20, "production")
    assert cp.get("shop.localhost").json()["greeting"] == "hello"
    r = run_cli("env", "set", "GREETING", "bonjour", "--env", "production", cwd=project)
    assert r.returncode == 0, r.stderr
    r = run_cli("redeploy", "--env", "production", cwd=project)
    assert r.returncode == 0, r.stderr
    assert f"a new release of {first}'s artifact" in r.stdout
    second = r.stdout.split("deployment ")[1].split()[0]
    wait_for(lambda: cp.serves("shop.localhost") == second, 20, "the redeploy")
    assert cp.get("shop.localhost").json()["greeting"] == "bonjour"
    build_log = run_cli("logs", second, "--build", cwd=project).stdout
    assert f"reusing the artifact of {first}" in build_log
    # --rebuild builds the commit again
    r = run_cli("redeploy", second, "--rebuild", "--no-wait", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "a rebuild of the same commit" in r.stdout
    # an environment with nothing live says so
    r = run_cli("redeploy", "--env", "preview", cwd=project)
    assert r.returncode == 1 and "no live deployment" in r.stderr


def test_promote_rebuilds_when_build_time_variables_differ(project: Path, cp: ControlPlane) -> None:
    deployment_id(push(project, "main").stderr)
    git(project, "checkout", "-qb", "test")
    commit(project, {"note.txt": "v2\n"}, "v2")
    preview = deployment_id(push(project, "test").stderr)
    wait_for(lambda: cp.serves("preview.shop.localhost") == preview, 20, "preview")
    for env, value in (("preview", "blue"), ("production", "red")):
        r = run_cli("env", "set", "NEXT_PUBLIC_THEME", value, "--env", env, cwd=project)
        assert r.returncode == 0, r.stderr
    r = run_cli("promote", preview, cwd=project)
    assert r.returncode == 0, r.stderr
    assert "build-time variables differ from production's" in r.stdout
    promoted = cp.serves("shop.localhost")
    assert promoted not in (None, preview)
    build_log = run_cli("logs", str(promoted), "--build", cwd=project).stdout
    assert "reusing the artifact" not in build_log and "git archive" in build_log


MIGRATE = """\
import os, sqlite3, sys
from pathlib import Path

db = sqlite3.connect(os.environ["DATABASE_URL"].removeprefix("sqlite:///"))
db.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
db.execute("INSERT INTO notes (body) VALUES ('migrated')")
db.commit()
if Path("FAIL_MIGRATION").exists():
    print("migration: column already exists", file=sys.stderr)
    sys.exit(3)
"""


def test_failed_migration_keeps_the_previous_release_and_names_the_snapshot(
    repo: Path, cp: ControlPlane
) -> None:
    project = make_project(repo, migrate='"python migrate.py"')
    commit(project, {"migrate.py": MIGRATE}, "a migration")
    good = deployment_id(push(project, "main").stderr)
    wait_for(lambda: cp.serves("shop.localhost") == good, 20, "production")
    commit(project, {"FAIL_MIGRATION": "1\n"}, "a failing migration")
    r = push(project, "main")
    bad = deployment_id(r.stderr)
    assert "migration failed" in r.stderr
    listed = {d["id"]: d for d in deployments(project)}
    assert listed[bad]["status"] == "error" and not listed[bad]["live"]
    assert listed[good]["live"]
    assert cp.serves("shop.localhost") == good
    # the reason names the snapshot taken just before, and how to restore it
    reason = listed[bad]["reason"]
    assert "tristage db restore production " in reason
    snapshot = reason.split("tristage db restore production ")[1].split("'")[0]
    backups = json.loads(run_cli("db", "backups", "production", "--json", cwd=project).stdout)
    assert snapshot in {b["id"] for b in backups}
    build_log = run_cli("logs", bad, "--build", cwd=project).stdout
    assert f"snapshot {snapshot} taken before the migration" in build_log
    assert "migration: column already exists" in build_log


def test_redeploy_on_change_redeploys_the_environment_a_variable_reaches(
    repo: Path, cp: ControlPlane
) -> None:
    project = make_project(repo, redeploy_on_change="true")
    first = deployment_id(push(project, "main").stderr)
    wait_for(lambda: cp.serves("shop.localhost") == first, 20, "production")
    r = run_cli("env", "set", "GREETING", "bonjour", "--env", "production", cwd=project)
    assert r.returncode == 0, r.stderr
    assert "redeploying production: deployment " in r.stderr, r.stderr
    second = r.stderr.split("redeploying production: deployment ")[1].split()[0]
    wait_for(lambda: cp.serves("shop.localhost") == second, 20, "the redeploy")
    assert cp.get("shop.localhost").json()["greeting"] == "bonjour"
    # setting the same value again changes nothing and redeploys nothing
    r = run_cli("env", "set", "GREETING", "bonjour", "--env", "production", cwd=project)
    assert r.returncode == 0 and "redeploying" not in r.stderr, r.stderr
    # an environment with nothing live is not redeployed; the hint says when it applies
    r = run_cli("env", "set", "GREETING", "hallo", "--env", "preview", cwd=project)
    assert r.returncode == 0 and "redeploying" not in r.stderr
    assert "takes effect on the next release" in r.stderr
