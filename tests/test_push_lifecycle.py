"""A push to the hosted repository is accepted only when its deploy succeeds (the
pre-receive hook), which hosts follow which branches, and deleted branches: real git
pushes, a real control plane, real releases and HTTP through the router."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import GIT_ENV, git, run_cli
from test_deploy_helpers import (
    ControlPlane,
    commit,
    deployment_id,
    deployments,
    make_project,
    push,
    wait_for,
)
from tristage.api import Tristage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def project(repo: Path) -> Path:
    return make_project(repo)


def hosted_ref(home: Path, branch: str) -> str | None:
    proc = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
        cwd=home / "repos" / "shop.git",
        capture_output=True,
        text=True,
    )
    return proc.stdout.strip() or None


def git_push(
    repo: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "push", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV, "COLUMNS": "200", **(env or {})},
        timeout=120,
    )


def test_push_whose_health_check_fails_is_refused_and_the_ref_stays(
    project: Path, home: Path, cp: ControlPlane
) -> None:
    r = push(project, "main")
    assert r.returncode == 0, r.stderr
    good = deployment_id(r.stderr)
    good_sha = git(project, "rev-parse", "HEAD")
    assert hosted_ref(home, "main") == good_sha
    bad_sha = commit(project, {"MODE": "unhealthy\n"}, "break health")
    r = push(project, "main")
    assert r.returncode != 0
    assert "health check GET /health did not answer 2xx/3xx" in r.stderr  # the log, as before
    assert "push refused" in r.stderr and "pre-receive hook declined" in r.stderr
    # the reason is printed once (the log's line), not again after it
    assert r.stderr.count("did not answer 2xx/3xx") == 1, r.stderr
    assert hosted_ref(home, "main") == good_sha  # the branch did not move
    assert cp.serves("shop.localhost") == good
    bad = deployment_id(r.stderr)
    listed = {d["id"]: d for d in deployments(project)}
    assert listed[bad]["status"] == "error"
    # fixed and pushed again: accepted, and the commit is pinned for redeploys
    fixed = commit(project, {"MODE": "ok\n"}, "fix health")
    r = push(project, "main")
    assert r.returncode == 0, r.stderr
    assert hosted_ref(home, "main") == fixed != bad_sha
    new = deployment_id(r.stderr)
    assert cp.serves("shop.localhost") == new
    # the control plane pins the commit once git has accepted the push
    bare = home / "repos" / "shop.git"
    ref = f"refs/tristage/deployments/{new}"
    wait_for(lambda: ref in git(bare, "for-each-ref", "--format=%(refname)"), 20, "the pin")
    assert git(bare, "rev-parse", ref) == fixed
    # the refused commit is not pinned
    assert f"refs/tristage/deployments/{bad}" not in git(bare, "for-each-ref")


def test_bad_tristage_toml_and_crash_at_start_are_refused(
    project: Path, home: Path, cp: ControlPlane
) -> None:
    git(project, "checkout", "-qb", "test")
    before = hosted_ref(home, "test")
    commit(project, {"tristage.toml": "[project\nname = 'shop'\n"}, "broken config")
    r = push(project, "test")
    assert r.returncode != 0 and "push refused" in r.stderr
    assert hosted_ref(home, "test") == before
    git(project, "revert", "--no-edit", "HEAD")
    commit(project, {"app.py": "raise SystemExit('boom at start')\n"}, "crash at start")
    r = push(project, "test")
    assert r.returncode != 0 and "push refused" in r.stderr
    assert hosted_ref(home, "test") is None


def test_skip_deploy_pushes_without_deploying(project: Path, home: Path, cp: ControlPlane) -> None:
    sha = git(project, "rev-parse", "HEAD")
    r = git_push(project, "-o", "skip-deploy", "tristage", "main")
    assert r.returncode == 0, r.stderr
    assert "skip-deploy" in r.stderr
    assert hosted_ref(home, "main") == sha
    assert deployments(project) == []


def test_branch_no_rule_takes_is_refused(repo: Path, home: Path, cp: ControlPlane) -> None:
    project = make_project(repo)
    toml = (project / "tristage.toml").read_text().replace('"staging", "*"', '"staging"')
    commit(project, {"tristage.toml": toml}, "no catch-all")
    run_cli("resolve", "main", cwd=project)  # registers the new configuration
    git(project, "checkout", "-qb", "random")
    r = push(project, "random")
    assert r.returncode != 0
    assert "matches no environment" in r.stderr and "push refused" in r.stderr
    assert hosted_ref(home, "random") is None


def test_glob_branches_never_take_an_environments_host(project: Path, cp: ControlPlane) -> None:
    git(project, "checkout", "-qb", "dev")
    commit(project, {"note.txt": "dev\n"}, "dev")
    dev = deployment_id(push(project, "dev").stderr)
    assert cp.serves("development.shop.localhost") == dev
    git(project, "checkout", "-qb", "feature/x")
    commit(project, {"note.txt": "x\n"}, "feature x")
    r = push(project, "feature/x")
    assert r.returncode == 0, r.stderr
    feature = deployment_id(r.stderr)
    assert f"development (feature/x): http://feature-x.shop.localhost:{cp.port}" in r.stderr
    assert cp.serves("feature-x.shop.localhost") == feature
    assert cp.serves("development.shop.localhost") == dev  # development stays on dev
    # the feature branch runs with development's variables
    assert cp.get("feature-x.shop.localhost").json()["environment"] == "development"
    # the catch-all leaves preview (the QA environment) alone too
    git(project, "checkout", "-qb", "test")
    preview = deployment_id(push(project, "test").stderr)
    git(project, "checkout", "-qb", "whatever")
    other = deployment_id(push(project, "whatever").stderr)
    assert cp.serves("whatever.shop.localhost") == other
    assert cp.serves("preview.shop.localhost") == preview


def test_deleting_a_branch_stops_its_release(
    project: Path, home: Path, cp: ControlPlane, api: Tristage
) -> None:
    prod = deployment_id(push(project, "main").stderr)
    git(project, "checkout", "-qb", "feature/gone")
    feature = deployment_id(push(project, "feature/gone").stderr)
    assert cp.serves("feature-gone.shop.localhost") == feature
    r = git_push(project, "tristage", ":feature/gone")
    assert r.returncode == 0, r.stderr
    assert "feature/gone: deleted" in r.stderr
    assert hosted_ref(home, "feature/gone") is None
    wait_for(lambda: cp.get("feature-gone.shop.localhost").status_code == 404, 20, "its host")
    wait_for(lambda: f"{feature} stopped" in cp.output(), 20, "its release to stop")
    assert cp.serves("shop.localhost") == prod
    # an environment serving the deleted branch's deployment keeps serving it
    git(project, "checkout", "-qb", "test")
    preview = deployment_id(push(project, "test").stderr)
    assert cp.serves("preview.shop.localhost") == preview
    r = git_push(project, "tristage", ":test")
    assert r.returncode == 0, r.stderr
    assert f"preview keeps serving {preview} until its next deploy" in r.stderr
    wait_for(lambda: cp.get("test.shop.localhost").status_code == 404, 20, "its branch host")
    assert cp.serves("preview.shop.localhost") == preview
    # the git host's deletion of main (git refuses it here) never takes production down
    assert "production keeps serving" in "\n".join(api.branch_deleted("shop", "main"))
    assert cp.serves("shop.localhost") == prod
    assert api.branch_deleted("shop", "main") == ["main: already stopped"]
    # pushing the branch again starts over
    r = push(project, "feature/gone")
    assert r.returncode == 0, r.stderr
    assert cp.serves("feature-gone.shop.localhost") == deployment_id(r.stderr)


def test_hook_without_an_installed_tristage_says_what_to_do(project: Path, home: Path) -> None:
    (home / "hook-python").write_text("/nonexistent/python\n")
    r = git_push(project, "tristage", "main", env={"PATH": "/usr/bin:/bin"})
    assert r.returncode != 0
    assert "cannot run tristage for this push" in r.stderr and "tristage up" in r.stderr
    assert hosted_ref(home, "main") is None
    # a push with -o skip-deploy still goes through
    r = git_push(project, "-o", "skip-deploy", "tristage", "main", env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    # the next 'tristage up' rewrites the hooks with the tristage it runs
    plane = ControlPlane(home).start()
    try:
        assert (home / "hook-python").read_text().strip() != "/nonexistent/python"
        git(project, "commit", "-q", "--allow-empty", "-m", "again")
        r = push(project, "main")
        assert r.returncode == 0, r.stderr
    finally:
        plane.stop()


def test_hook_falls_back_to_the_tristage_on_path(project: Path, home: Path, tmp_path: Path) -> None:
    import sys

    (home / "hook-python").write_text("/nonexistent/python\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "tristage"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m tristage "$@"\n')
    shim.chmod(0o755)
    r = git_push(project, "tristage", "main", env={"PATH": f"{bindir}:/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr  # no control plane: accepted, queued for 'up'
    assert "control plane is not running" in r.stderr
    assert hosted_ref(home, "main") == git(project, "rev-parse", "HEAD")
    assert deployment_id(r.stderr)


def test_push_goes_through_the_hook_client_and_the_quarantine(
    project: Path, home: Path, tmp_path: Path, cp: ControlPlane
) -> None:
    import stat
    import sys

    sock = home / "hook.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "hook-client.py").stat().st_mode) == 0o600
    # the interpreter the hook runs, wrapped to record how it is started
    calls = tmp_path / "calls"
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    (home / "hook-python").write_text(f"{wrapper}\n")
    r = push(project, "main")
    assert r.returncode == 0, r.stderr
    dep = deployment_id(r.stderr)
    assert cp.serves("shop.localhost") == dep
    assert f"ready: http://shop.localhost:{cp.port}" in r.stderr  # the whole log came back
    started = calls.read_text().splitlines()
    # the client only: no second interpreter importing tristage for this push
    assert len(started) == 1 and started[0].startswith("-I -S ") and "hook-client.py" in started[0]
    assert hosted_ref(home, "main") == git(project, "rev-parse", "HEAD")
    # a refused push through the client: exit code and output as the in-process hook's
    commit(project, {"MODE": "unhealthy\n"}, "break health")
    r = push(project, "main")
    assert r.returncode != 0 and "push refused" in r.stderr
    assert r.stderr.count("did not answer 2xx/3xx") == 1, r.stderr
    assert cp.serves("shop.localhost") == dep
    # the in-process hook on request, with the same outcome
    r = subprocess.run(
        ["git", "push", "tristage", "main"],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV, "TRISTAGE_HOOK_CLIENT": "off"},
        timeout=120,
    )
    assert r.returncode != 0 and "push refused" in r.stderr
    assert "-m tristage.cli.githook" in calls.read_text()


def test_ctrl_c_of_the_pusher_cancels_its_deployment(
    project: Path, home: Path, cp: ControlPlane
) -> None:
    import signal
    import time

    r = push(project, "main")
    assert r.returncode == 0, r.stderr
    live = deployment_id(r.stderr)
    before = hosted_ref(home, "main")
    toml = (project / "tristage.toml").read_text()
    toml = toml.replace("[app]\n", '[app]\nbuild = "sleep 31.5"\n')
    commit(project, {"tristage.toml": toml}, "a slow build")
    proc = subprocess.Popen(
        ["git", "push", "tristage", "main"],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **GIT_ENV},
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + 60
    while "> build: sleep 31.5" not in seen and time.monotonic() < deadline:
        seen += proc.stderr.readline()
    assert "> build: sleep 31.5" in seen, seen
    dep = deployment_id(seen)

    def sleeping() -> bool:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if cmdline.read_bytes() == b"sleep\x0031.5\x00":
                    return True
            except OSError:
                continue
        return False

    assert wait_for(sleeping, 10, "the build step")
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the pusher's terminal sends
    proc.wait(20)
    assert proc.returncode != 0
    status = wait_for(
        lambda: next(
            (d for d in deployments(project) if d["id"] == dep and d["status"] == "canceled"),
            None,
        ),
        20,
        "the deployment to be canceled",
    )
    assert "the push was interrupted" in status["reason"]
    wait_for(lambda: not sleeping(), 10, "the build step to be stopped")
    assert hosted_ref(home, "main") == before
    assert cp.serves("shop.localhost") == live
    r = run_cli("logs", dep, "--build", cwd=project)
    assert "canceled: the push was interrupted" in r.stdout


def test_a_stale_hook_socket_falls_back_to_the_in_process_hook(project: Path, home: Path) -> None:
    import socket

    from tristage.edges import git as git_edge

    # what a control plane killed with -9 leaves: a socket nothing listens on
    git_edge.install_hooks(home / "repos" / "shop.git", home, "shop")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(home / "hook.sock"))
    s.close()
    r = git_push(project, "tristage", "main")
    assert r.returncode == 0, r.stderr  # no control plane: accepted, queued for 'up'
    assert "control plane is not running" in r.stderr
    assert deployment_id(r.stderr)
    assert hosted_ref(home, "main") == git(project, "rev-parse", "HEAD")


def test_hook_client_reaches_a_socket_under_a_long_home(tmp_path: Path) -> None:
    import importlib.util
    import socket

    from tristage.edges import hook_client
    from tristage.edges.git import write_hook_client
    from tristage.paths import socket_path

    home = tmp_path / ("h" * 60) / ("o" * 60)
    home.mkdir(parents=True)
    assert hook_client.connect(str(home)) is None  # nothing there
    address = hook_client.socket_address(str(home))
    # the stand-in every other socket of the platform would get
    assert address == str(socket_path(home / "hook.sock")) and len(address) < 108
    # the copy in the home finds the same one, with the copy of unix_sockets beside it
    spec = importlib.util.spec_from_file_location("client", write_hook_client(home))
    assert spec is not None and spec.loader is not None
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    assert copy.socket_address(str(home)) == address
    server = socket.socket(socket.AF_UNIX)
    server.bind(address)
    server.listen(1)
    try:
        for client in (hook_client.connect(str(home)), copy.connect(str(home))):
            assert client is not None
            client.close()
    finally:
        server.close()
        os.unlink(address)


def test_a_push_under_a_long_home_goes_through_the_hook_client(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stat
    import sys

    home = tmp_path / ("h" * 60)  # HOME/hook.sock is too long for a socket address
    home.mkdir()
    monkeypatch.setenv("TRISTAGE_HOME", str(home))
    monkeypatch.setenv("TRISTAGE_MASTER_KEY_FILE", str(home / "master.key"))
    project = make_project(repo)
    cp = ControlPlane(home).start()
    try:
        link = home / "hook.sock"
        stand_in = Path(os.readlink(link))
        assert len(str(stand_in)) < 108 and stat.S_ISSOCK(stand_in.stat().st_mode)
        assert stat.S_IMODE(stand_in.stat().st_mode) == 0o600
        calls = tmp_path / "calls"
        wrapper = tmp_path / "python"
        wrapper.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {sys.executable} "$@"\n')
        wrapper.chmod(0o755)
        (home / "hook-python").write_text(f"{wrapper}\n")
        r = push(project, "main")
        assert r.returncode == 0, r.stderr
        assert cp.serves("shop.localhost") == deployment_id(r.stderr)
        started = calls.read_text().splitlines()
        assert len(started) == 1 and started[0].startswith("-I -S "), started  # no fallback
    finally:
        cp.stop()
    assert not link.exists() and not link.is_symlink() and not stand_in.exists()
