"""`tristage dev`: the app runs from the working copy with development's variables and
data store (checked over real HTTP), signals reach it, and production stays out."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import run_cli, run_cli_process
from test_deploy_helpers import make_project, wait_for
from tristage.domain.localdev import compose, refusals
from tristage.domain.rules.isolation import url_target
from tristage.edges.runtime import free_port

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def project(repo: Path) -> Path:
    root = make_project(repo)
    r = run_cli("env", "set", "GREETING", "hi-from-dev", "--env", "development", cwd=root)
    assert r.returncode == 0, r.stderr
    r = run_cli("env", "set", "GREETING", "hi-from-prod", "--env", "production", cwd=root)
    assert r.returncode == 0, r.stderr
    return root


def _start(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tristage", "dev", *args],
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _get(port: int) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=1, trust_env=False)
    except httpx.HTTPError:
        return None


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_dev_runs_the_web_command_with_development_config(
    project: Path, sig: signal.Signals, code: int
) -> None:
    port = free_port()
    proc = _start(project, "--port", str(port), env={"GREETING": "from-the-shell"})
    try:
        resp = wait_for(lambda: _get(port), 20, "the local app")
        body = resp.json()
        assert body["greeting"] == "hi-from-dev"  # the environment's value beats the shell's
        assert body["environment"] == "development" and body["deployment"] == "local"
        assert body["database"] is True and body["branch"] == "main"
        # the signal is forwarded to the app (in its own process group), which stops
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, out
    assert "development (" in out and f"http://127.0.0.1:{port}" in out and "python app.py" in out
    assert _get(port) is None  # nothing left listening


def test_dev_runs_a_given_command_and_returns_its_code(project: Path) -> None:
    script = "import os; print(os.environ['DATABASE_URL'], os.environ['PORT']); raise SystemExit(7)"
    r = run_cli_process("dev", "--port", "4567", "--", "python", "-c", script, cwd=project)
    assert r.returncode == 7, r.stderr
    dev_url = run_cli("db", "url", "development", cwd=project).stdout.strip()
    prod_url = run_cli("db", "url", "production", cwd=project).stdout.strip()
    assert dev_url and dev_url != prod_url
    assert f"{dev_url} 4567" in r.stdout


def _refused(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    marker = root / "ran"
    r = run_cli("dev", *args, "--", "python", "-c", "open('ran', 'w')", cwd=root, env=env or {})
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert not marker.exists()  # nothing started
    assert "refusing to run shop locally" in r.stderr
    return r.stderr


def test_dev_refuses_production_data_store(project: Path) -> None:
    prod_url = run_cli("db", "url", "production", cwd=project).stdout.strip()
    # spelled differently, same file
    spelled = prod_url.replace("sqlite:///", "sqlite:////")
    r = run_cli("env", "set", "DATABASE_URL", spelled, "--env", "development", cwd=project)
    assert r.returncode == 0, r.stderr
    err = _refused(project)
    assert "DATABASE_URL points at production's data store" in err


def test_dev_refuses_production_secrets_and_live_keys(project: Path) -> None:
    secret = "prod-only-token-4f9a2c"
    r = run_cli("env", "set", "API_TOKEN", "--env", "production", "--secret", cwd=project,
                input=secret)  # fmt: skip
    assert r.returncode == 0, r.stderr
    err = _refused(project, env={"API_TOKEN": secret, "OTHER": secret})
    assert "API_TOKEN holds production's secret" in err
    assert "OTHER holds production's secret (the value of API_TOKEN)" in err
    assert secret not in err
    err = _refused(project, env={"STRIPE_SECRET_KEY": "sk_live_51abcdefghijklmnop"})
    assert "STRIPE_SECRET_KEY holds a live Stripe key" in err
    assert "sk_live_51" not in err
    # a test key is fine
    r = run_cli("dev", "--", "python", "-c", "pass", cwd=project,
                env={"STRIPE_SECRET_KEY": "sk_test_51abcdefghijklmnop"})  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_dev_never_runs_production(project: Path) -> None:
    r = run_cli("dev", "--env", "production", "--", "python", "-c", "pass", cwd=project)
    assert r.returncode == 2 and "production environment" in r.stderr
    r = run_cli("dev", "--env", "nope", "--", "python", "-c", "pass", cwd=project)
    assert r.returncode == 1 and "no environment named 'nope'" in r.stderr


def test_dev_without_a_web_command(repo: Path) -> None:
    root = make_project(repo)
    (root / "Procfile").unlink()
    r = run_cli("dev", cwd=root)
    assert r.returncode == 2 and "no web command" in r.stderr and "tristage dev --" in r.stderr


# -- the pure parts ------------------------------------------------------------------


def test_compose_precedence() -> None:
    env = compose(
        {"PATH": "/usr/bin", "GREETING": "shell", "DATABASE_URL": "postgres://prod/x", "PORT": "1"},
        {"GREETING": "dev"},
        database_url="sqlite:////tmp/dev.sqlite3",
        port=3000,
        environment="development",
        branch="main",
        commit="abc",
        path_prefix=("/w/.venv/bin",),
    )
    assert env["GREETING"] == "dev" and env["DATABASE_URL"] == "sqlite:////tmp/dev.sqlite3"
    assert env["PORT"] == "3000" and env["TRISTAGE_ENV"] == "development"
    assert env["PATH"] == "/w/.venv/bin:/usr/bin" and env["TRISTAGE_GIT_COMMIT"] == "abc"
    own = compose({}, {"DATABASE_URL": "postgres://h/devdb"}, database_url="", port=1,
                  environment="development", branch=None, commit=None)  # fmt: skip
    assert own["DATABASE_URL"] == "postgres://h/devdb" and "TRISTAGE_GIT_BRANCH" not in own


STORES = {url_target("postgresql://db.internal:5432/app"): "environments.production.database"}


@pytest.mark.parametrize(
    ("env", "refused"),
    [
        ({"DATABASE_URL": "postgres://user:pw@DB.internal/app?sslmode=require"}, ["DATABASE_URL"]),
        ({"DATABASE_URL": "postgres://db.internal:5432/app_dev"}, []),
        ({"X": "live-secret-value"}, ["X"]),
        ({"X": "short"}, []),  # too short to compare: "short" is the secret below
        ({"CLERK_SECRET_KEY": "sk_live_abcdef"}, ["CLERK_SECRET_KEY"]),
        ({"STRIPE_PUBLISHABLE_KEY": "pk_test_abcdef"}, []),
        ({"NOTES": "sk_live_abcdef"}, []),  # not a provider's variable
    ],
)
def test_refusals(env: dict[str, str], refused: list[str]) -> None:
    secrets = {"TOKEN": "live-secret-value", "PIN": "short"}
    found = refusals(env, "production", STORES, secrets)
    assert [r.variable for r in found] == refused
    assert all("live-secret-value" not in str(r) for r in found)


# -- the app's own environment ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_dev_uses_the_last_development_builds_virtualenv_or_builds_one(
    repo: Path, home: Path
) -> None:
    from test_deploy_helpers import ControlPlane, commit, deployments, push
    from test_real_apps import make_app, make_wheel

    make_app(repo, "web: tinyserve app:app\n")
    git_env = {"GIT_AUTHOR_NAME": "t", "GIT_COMMITTER_NAME": "t"}
    subprocess.run(["git", "checkout", "-qb", "dev"], cwd=repo, check=True, env={**os.environ,
                   **git_env})  # fmt: skip
    cp = ControlPlane(home).start()
    try:
        r = push(repo, "dev", timeout=120)
        assert r.returncode == 0, r.stderr
    finally:
        cp.stop()
    dep = next(d["id"] for d in deployments(repo) if d["environment"] == "development")
    cache = home / "cache" / "shop" / "development" / "python"
    # the web command is the dependency's console script: it runs with the build's deps
    # and the working copy's code; the shell's own virtualenv plays no part
    port = free_port()
    (repo / "app.py").write_text((repo / "app.py").read_text() + "# changed locally\n")
    proc = _start(repo, "--port", str(port), env={"VIRTUAL_ENV": "/nonexistent/venv"})
    try:
        body = wait_for(lambda: _get(port), 30, "the local app").json()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert f"uses python {sys.version_info[0]}." in out
    assert f"the virtualenv of development's last build ({dep})" in out, out
    assert body["server"].startswith(str(cache)), body
    assert body["prefix"].startswith(str(home / "dev" / "shop" / "development")), body
    assert body["prefix"] in out and body["extra"] is False
    # the requirements changed since that build: it installs them now, and says why
    extra = make_wheel(repo / "vendor", "extradep", {"extradep/__init__.py": "X = 1\n"}, {})
    reqs = (repo / "requirements.txt").read_text() + f"./vendor/{extra}\n"
    (repo / "requirements.txt").write_text(reqs)
    script = "import extradep, tinyserve, os; print('imports', os.environ['VIRTUAL_ENV'])"
    r = run_cli_process("dev", "--", "python", "-c", script, cwd=repo)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"the requirements differ from development's last build ({dep})" in r.stdout
    assert "installing its dependencies" in r.stdout and "imports " in r.stdout
    assert "a virtualenv built now for this working copy" in r.stdout
    # and the next run finds what it installed
    r = run_cli_process("dev", "--", "python", "-c", script, cwd=repo)
    assert r.returncode == 0 and "installing" not in r.stdout, r.stdout
    assert "the virtualenv development built for these requirements" in r.stdout
    # a module that is in no requirement: the failure names it and the environment used
    r = run_cli_process("dev", "--", "python", "-c", "import flask_login", cwd=repo)
    assert r.returncode == 1
    assert "ModuleNotFoundError: No module named 'flask_login'" in r.stderr  # passed through
    hint = "tristage dev: the app could not import 'flask_login'; it ran with python"
    assert hint in r.stderr and "add the package that provides 'flask_login'" in r.stderr
    commit(repo, {}, "local")  # the working copy is still a normal git checkout


def test_missing_module_lines() -> None:
    from tristage.domain.localdev import missing_hint, missing_module

    assert missing_module("ModuleNotFoundError: No module named 'fastapi.x'") == (
        "python", "fastapi.x")  # fmt: skip
    assert missing_module("Error: Cannot find module 'express'") == ("node", "express")
    assert missing_module("Traceback (most recent call last):") is None
    hint = missing_hint("python", "fastapi.x", ("python 3.12.1, the virtualenv V",))
    assert "'fastapi'" in hint and "python 3.12.1, the virtualenv V" in hint


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_dev_gives_a_node_app_the_last_builds_node_modules(repo: Path, home: Path) -> None:
    from test_deploy_helpers import ControlPlane, commit, push

    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    make_project(repo, app="node")
    lib = repo / "vendor" / "tinylib"
    lib.mkdir(parents=True)
    (lib / "package.json").write_text('{"name": "tinylib", "version": "1.0.0", "main": "i.js"}')
    (lib / "i.js").write_text("module.exports = 'from tinylib';\n")
    pkg = json.loads((repo / "package.json").read_text())
    pkg["dependencies"] = {"tinylib": "file:./vendor/tinylib"}
    (repo / "package.json").write_text(json.dumps(pkg))
    subprocess.run(["npm", "install", "--offline", "--no-audit", "--install-links"],
                   cwd=repo, check=True, capture_output=True)  # fmt: skip
    shutil.rmtree(repo / "node_modules")
    (repo / ".gitignore").write_text("node_modules/\n")
    toml = (repo / "tristage.toml").read_text().replace("health_timeout = 4", "health_timeout = 30")
    commit(repo, {"tristage.toml": toml}, "a dependency")
    subprocess.run(["git", "checkout", "-qb", "dev"], cwd=repo, check=True)
    cp = ControlPlane(home).start()
    try:
        r = push(repo, "dev", timeout=180)
        assert r.returncode == 0, r.stderr
        assert "node_modules: saved" in r.stderr, r.stderr
    finally:
        cp.stop()
    script = "console.log('got', require('tinylib'))"
    r = run_cli_process("dev", "--", "node", "-e", script, cwd=repo)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "node_modules copied from development's last build" in r.stdout, r.stdout
    assert "got from tinylib" in r.stdout
    # from then on the working copy's own
    r = run_cli_process("dev", "--", "node", "-e", script, cwd=repo)
    assert "the working copy's node_modules" in r.stdout and "got from tinylib" in r.stdout
    # a module nobody installed: the hint names it
    r = run_cli_process("dev", "--", "node", "-e", "require('left-pad')", cwd=repo)
    assert r.returncode == 1 and "could not import 'left-pad'" in r.stderr, r.stderr
    assert "npm install left-pad" in r.stderr


def test_dev_passes_a_prompt_on_stderr_through_at_once(project: Path) -> None:
    script = "import sys, time; sys.stderr.write('name? '); sys.stderr.flush(); time.sleep(5)"
    proc = _start(project, "--", "python", "-c", script)
    seen = b""
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + 20
        while b"name? " not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                seen += os.read(fd, 4096)
        assert b"name? " in seen, seen  # before the app ends, without a newline
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
