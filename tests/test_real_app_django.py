"""A Django-shaped app deployed untouched: `web: <console script> app:app` (as
`gunicorn`), `worker:` and `release:` Procfile lines, an allowed-hosts check that answers
400 to any other Host (as Django's `ALLOWED_HOSTS`), an SQLite file and uploads in the
environment's data directory that survive a deploy and a rollback, and `tristage run`
with a terminal (a `createsuperuser`-style prompt and password) in production.

Real parts throughout: a wheel with a console script built by the test, installed by
the real builder into the real sandbox, a real control plane, router and HTTP.
"""

from __future__ import annotations

import json
import os
import pty
import select
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import run_cli
from test_deploy_helpers import ControlPlane, commit, deployment_id, deployments, push, wait_for
from test_real_apps import SERVER, make_wheel
from tristage.api import Tristage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

APP = """\
import json, os, sqlite3, urllib.parse

ALLOWED_HOSTS = os.environ["ALLOWED_HOSTS"].split(",")
DATA = os.environ["TRISTAGE_DATA_DIR"]
DB = urllib.parse.urlparse(os.environ["DATABASE_URL"]).path


def app(environ, start_response):
    host = environ.get("HTTP_HOST", "").rsplit(":", 1)[0]
    if host not in ALLOWED_HOSTS:  # what Django answers to a Host it does not allow
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [b"DisallowedHost: " + host.encode()]
    path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
    db = sqlite3.connect(DB)
    if method == "POST" and path == "/notes":
        size = int(environ.get("CONTENT_LENGTH") or 0)
        db.execute("INSERT INTO notes (body) VALUES (?)", (environ["wsgi.input"].read(size)
                   .decode(),))
        db.commit()
    if method == "POST" and path.startswith("/upload/"):
        size = int(environ.get("CONTENT_LENGTH") or 0)
        os.makedirs(os.path.join(DATA, "uploads"), exist_ok=True)
        with open(os.path.join(DATA, "uploads", path.rsplit("/", 1)[1]), "wb") as f:
            f.write(environ["wsgi.input"].read(size))
    uploads = os.path.join(DATA, "uploads")
    worker = os.path.join(DATA, "worker.txt")
    body = json.dumps({
        "deployment": os.environ["TRISTAGE_DEPLOYMENT"],
        "notes": [r[0] for r in db.execute("SELECT body FROM notes ORDER BY id")],
        "migrations": [r[0] for r in db.execute("SELECT deployment FROM migrations")],
        "uploads": sorted(os.listdir(uploads)) if os.path.isdir(uploads) else [],
        "worker": open(worker).read().split()[0] if os.path.exists(worker) else None,
    }).encode()
    db.close()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
"""

MANAGE = """\
import getpass, os, sqlite3, sys, urllib.parse

db = sqlite3.connect(urllib.parse.urlparse(os.environ["DATABASE_URL"]).path)
if sys.argv[1] == "migrate":
    db.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
    db.execute("CREATE TABLE IF NOT EXISTS migrations (deployment TEXT)")
    db.execute("INSERT INTO migrations VALUES (?)", (os.environ["TRISTAGE_DEPLOYMENT"],))
    db.commit()
    print("migrated", os.environ["TRISTAGE_DEPLOYMENT"])
elif sys.argv[1] == "createsuperuser":
    print("terminal", sys.stdin.isatty(), sys.stdout.isatty(), flush=True)
    name = input("Username: ")
    password = getpass.getpass("Password: ")
    db.execute("CREATE TABLE IF NOT EXISTS users (name TEXT, password_length INTEGER)")
    db.execute("INSERT INTO users VALUES (?, ?)", (name, len(password)))
    db.commit()
    print(f"Superuser {name} created ({len(password)} characters).")
"""

WORKER = """\
import os, time
path = os.path.join(os.environ["TRISTAGE_DATA_DIR"], "worker.txt")
while True:
    with open(path, "w") as f:
        f.write(os.environ["TRISTAGE_DEPLOYMENT"] + " " + str(time.time()) + "\\n")
    time.sleep(0.2)
"""

PROCFILE = """\
web: tinyserve app:app
worker: python worker.py
release: python manage.py migrate
"""


def make_app(repo: Path) -> Path:
    server = make_wheel(repo / "vendor", "tinyserve", {"tinyserve/__init__.py": SERVER},
                        {"tinyserve": "tinyserve:main"})  # fmt: skip
    (repo / "requirements.txt").write_text(f"./vendor/{server}\n")
    r = run_cli("init", "--name", "shop", cwd=repo)
    assert r.returncode == 0, r.stderr
    toml = (
        (repo / "tristage.toml").read_text().replace("health_timeout = 30 ", "health_timeout = 8 ")
    )
    (repo / "tristage.toml").write_text(toml.replace("[app]\n", "[app]\ndrain_seconds = 0.5\n", 1))
    commit(repo, {"app.py": APP, "manage.py": MANAGE, "worker.py": WORKER, "Procfile": PROCFILE},
           "a django-shaped app")  # fmt: skip
    r = run_cli("env", "set", "ALLOWED_HOSTS", "shop.localhost", "--env", "production", cwd=repo)
    assert r.returncode == 0, r.stderr
    return repo


def served(cp: ControlPlane, deployment: str | None = None) -> dict[str, Any]:
    """What the production host answers (from `deployment`, once it serves it)."""

    def answer() -> dict[str, Any] | None:
        r = cp.get("shop.localhost")
        if r.status_code != 200:
            return None
        body: dict[str, Any] = r.json()
        return body if deployment is None or body["deployment"] == deployment else None

    found: dict[str, Any] = wait_for(answer, 20, f"the production host to serve {deployment}")
    return found


def test_a_django_shaped_app_keeps_its_files_across_deploys_and_a_rollback(
    repo: Path, cp: ControlPlane
) -> None:
    make_app(repo)
    r = push(repo, "main", timeout=180)
    assert r.returncode == 0, r.stderr
    first = deployment_id(r.stderr)
    # the health check sent the environment's host: the allowed-hosts check let it in
    assert "Procfile process types: web, worker, release" in r.stderr
    assert f"migrated {first}" in r.stderr
    # the app itself refuses any other host (a health check with Host 127.0.0.1 would fail)
    procs = json.loads(run_cli("ps", "--env", "production", "--json", cwd=repo).stdout)
    port = next(p["port"] for p in procs if p["process"] == "web.1" and p["deployment"] == first)
    assert httpx.get(f"http://127.0.0.1:{port}/health", trust_env=False).status_code == 400
    body = served(cp, first)
    assert body["migrations"] == [first]
    wait_for(lambda: served(cp)["worker"] == first, 20, "the worker")
    client = cp.client
    base = f"http://127.0.0.1:{cp.port}"
    headers = {"Host": "shop.localhost"}
    assert client.post(f"{base}/notes", content=b"before", headers=headers).status_code == 200
    assert client.post(f"{base}/upload/a.txt", content=b"A", headers=headers).status_code == 200
    # a second deploy: same database file and uploads, the release line ran again
    commit(repo, {"note.txt": "2\n"}, "second")
    r = push(repo, "main", timeout=180)
    assert r.returncode == 0, r.stderr
    second = deployment_id(r.stderr)
    body = served(cp, second)
    assert body["notes"] == ["before"]
    assert body["uploads"] == ["a.txt"] and body["migrations"] == [first, second]
    wait_for(lambda: served(cp)["worker"] == second, 20, "the new worker")
    assert client.post(f"{base}/notes", content=b"after", headers=headers).status_code == 200
    # a rollback brings the code back, never the old data
    r = run_cli("rollback", cwd=repo)
    assert r.returncode == 0, r.stderr
    body = served(cp, first)
    assert body["notes"] == ["before", "after"]
    assert body["uploads"] == ["a.txt"]
    wait_for(lambda: served(cp)["worker"] == first, 20, "the worker back")
    assert {d["id"]: d["status"] for d in deployments(repo)} == {first: "ready", second: "ready"}


def run_in_terminal(
    cwd: Path, args: list[str], answers: list[tuple[bytes, bytes]], timeout: float = 60
) -> tuple[int, bytes]:
    """Run `tristage ARGS` on a terminal of its own, typing each answer once its prompt
    shows; (exit code, everything the terminal showed)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a new session whose controlling terminal is the pty
        os.chdir(cwd)
        os.execvpe(sys.executable, [sys.executable, "-m", "tristage", *args],
                   {**os.environ, "COLUMNS": "200"})  # fmt: skip
    shown = b""
    pending = list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                shown += chunk
            if pending and pending[0][0] in shown:
                os.write(fd, pending.pop(0)[1])
        else:
            raise AssertionError(f"timed out; the terminal showed {shown[-500:]!r}")
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    return os.waitstatus_to_exitcode(status), shown


def test_run_with_a_terminal_in_production_prompts_and_is_audited(
    repo: Path, home: Path, cp: ControlPlane
) -> None:
    make_app(repo)
    r = push(repo, "main", timeout=180)
    assert r.returncode == 0, r.stderr
    dep = deployment_id(r.stderr)
    password = b"s3cret-pass"
    code, shown = run_in_terminal(
        repo,
        ["run", "--env", "production", "--yes", "--", "python", "manage.py", "createsuperuser"],
        [(b"Username: ", b"alice\r"), (b"Password: ", password + b"\r")],
    )
    text = shown.decode(errors="replace")
    assert code == 0, text
    assert "terminal True True" in text  # its stdin and stdout are a terminal
    assert "alice" in text and password.decode() not in text  # the password is not echoed
    assert "Superuser alice created (11 characters)." in text
    api = Tristage(home, actor="tester")
    try:
        events = api.audit.events(project="shop", action="deploy.run")
    finally:
        api.close()
    assert [(e.target, e.environment, e.details["exit_code"]) for e in events] == [
        (dep, "production", 0)
    ]
    assert "createsuperuser" in events[0].details["command"]
    # Ctrl-C ends it; without --yes nothing runs
    code, shown = run_in_terminal(
        repo, ["run", "--env", "production", "--yes", "--", "python", "manage.py",
               "createsuperuser"], [(b"Username: ", b"\x03")],
    )  # fmt: skip
    assert code == 130, shown
    code, shown = run_in_terminal(repo, ["run", "--env", "production", "--", "true"], [])
    assert code == 2 and b"--yes" in shown
