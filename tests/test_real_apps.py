"""Apps deployed the way real projects are written: a dependency's console script as
the web command (`web: gunicorn app:app`), `pip` in a build command, a crash at start.

The dependency is a small pure-Python wheel built by the test (`tinyserve`, a WSGI
server with a `tinyserve MODULE:ATTR` console script, as gunicorn has), installed from
the artifact by the real builder, in the real sandbox, through a real control plane.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from conftest import run_cli
from test_deploy_helpers import ControlPlane, commit, deployment_id, deployments, push, wait_for
from tristage.api import Tristage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SERVER = '''\
"""tinyserve: serve a WSGI app named MODULE:ATTR on $PORT (like gunicorn)."""
import importlib, os, sys
from wsgiref.simple_server import make_server, WSGIRequestHandler

class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass

def main():
    module, _, attr = sys.argv[1].partition(":")
    app = getattr(importlib.import_module(module), attr)
    make_server("127.0.0.1", int(os.environ["PORT"]), app, handler_class=Quiet).serve_forever()
'''

APP = """\
import json, os, sys
import tinyserve

def app(environ, start_response):
    body = json.dumps({
        "deployment": os.environ.get("TRISTAGE_DEPLOYMENT"),
        "executable": sys.executable,
        "prefix": sys.prefix,
        "server": tinyserve.__file__,
        "extra": __import__("importlib.util").util.find_spec("extradep") is not None,
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
"""


def make_wheel(directory: Path, name: str, files: dict[str, str], scripts: dict[str, str]) -> str:
    """A pure-Python wheel of `name` with console scripts (NAME = module:function)."""
    info = f"{name}-1.0.dist-info"
    data = {path: text.encode() for path, text in files.items()}
    data[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode()
    data[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    if scripts:
        lines = "".join(f"{k} = {v}\n" for k, v in scripts.items())
        data[f"{info}/entry_points.txt"] = f"[console_scripts]\n{lines}".encode()
    record = []
    for path, raw in data.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(raw).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(raw)}")
    record.append(f"{info}/RECORD,,")
    data[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    directory.mkdir(parents=True, exist_ok=True)
    wheel = f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(directory / wheel, "w") as zf:
        for path, raw in data.items():
            zf.writestr(zipfile.ZipInfo(path, (2024, 1, 1, 0, 0, 0)), raw)
    return wheel


def make_app(repo: Path, procfile: str, **app_settings: str) -> Path:
    """A WSGI app served by its dependency's console script, `tristage init`ed."""
    server = make_wheel(repo / "vendor", "tinyserve", {"tinyserve/__init__.py": SERVER},
                        {"tinyserve": "tinyserve:main"})  # fmt: skip
    make_wheel(repo / "vendor", "extradep", {"extradep/__init__.py": "X = 1\n"}, {})
    (repo / "app.py").write_text(APP)
    (repo / "requirements.txt").write_text(f"./vendor/{server}\n")
    (repo / "Procfile").write_text(procfile)
    r = run_cli("init", "--name", "shop", cwd=repo)
    assert r.returncode == 0, r.stderr
    toml = (repo / "tristage.toml").read_text()
    toml = toml.replace("health_timeout = 30 ", "health_timeout = 4 ")
    extra = "".join(f"{k} = {v}\n" for k, v in app_settings.items())
    (repo / "tristage.toml").write_text(toml.replace("[app]\n", "[app]\n" + extra, 1))
    commit(repo, {}, "first")
    return repo


def test_a_dependencys_console_script_runs_with_the_apps_code_and_venv(
    repo: Path, home: Path, cp: ControlPlane
) -> None:
    make_app(repo, "web: tinyserve app:app\n")
    r = push(repo, "main", timeout=120)
    assert r.returncode == 0, r.stderr + run_cli("logs", "--build", cwd=repo).stdout
    dep = deployment_id(r.stderr)
    assert deployments(repo)[0]["status"] == "ready", r.stderr
    # installed with uv (tristage's dependency), in the sandbox
    assert "> uv pip install requirements.txt" in r.stderr and "trying pip" not in r.stderr
    body = cp.get("shop.localhost").json()
    artifact = home / "artifacts" / "shop" / dep
    assert body["deployment"] == dep
    # the script runs with the artifact's interpreter (its code and deps), not the cache's
    assert body["prefix"] == str(artifact / ".venv")
    assert body["server"].startswith(str(home / "cache" / "shop" / "production" / "python"))
    assert not body["executable"].startswith(sys.prefix)


def test_pip_in_a_build_command_is_the_artifacts(repo: Path, home: Path, cp: ControlPlane) -> None:
    build = (
        'command -v pip; echo "venv=$VIRTUAL_ENV"; '
        "pip install --no-index ./vendor/extradep-1.0-py3-none-any.whl"
    )
    make_app(repo, "web: tinyserve app:app\n", build=json.dumps(build))
    own_site = [p for p in sys.path if p.startswith(sys.prefix) and p.endswith("site-packages")]
    r = push(repo, "main", timeout=120)
    dep = deployment_id(r.stderr)
    log = run_cli("logs", dep, "--build", cwd=repo).stdout
    assert r.returncode == 0, r.stderr + log
    artifact = home / "artifacts" / "shop" / dep
    assert f"{artifact}/.venv/bin/pip" in log and f"venv={artifact}/.venv\n" in log
    # installed into the artifact's own venv, where the app finds it ...
    assert cp.get("shop.localhost").json()["extra"] is True
    assert list((artifact / ".venv").glob("lib/python*/site-packages/extradep"))
    # ... and never into the platform's environment
    assert own_site and not any((Path(p) / "extradep").exists() for p in own_site)
    assert deployments(repo)[0]["status"] == "ready"


CRASH = """\
import os, sys
print("starting on", os.environ["PORT"])
print("token is", os.environ["API_TOKEN"])
print("Traceback (most recent call last):", file=sys.stderr)
print("ModuleNotFoundError: No module named 'flask_login'", file=sys.stderr)
sys.exit(3)
"""

WRONG_PORT = """\
import os
from http.server import HTTPServer, BaseHTTPRequestHandler
HTTPServer(("127.0.0.1", int(os.environ["PORT"]) + 1), BaseHTTPRequestHandler).serve_forever()
"""


def stdlib_app(repo: Path, script: str) -> Path:
    (repo / "main.py").write_text(script)
    (repo / "Procfile").write_text("web: python main.py\n")
    r = run_cli("init", "--name", "shop", cwd=repo)
    assert r.returncode == 0, r.stderr
    toml = (repo / "tristage.toml").read_text()
    (repo / "tristage.toml").write_text(toml.replace("health_timeout = 30 ", "health_timeout = 3 "))
    commit(repo, {}, "first")
    return repo


def test_a_crash_at_start_shows_the_apps_last_lines_redacted(repo: Path, cp: ControlPlane) -> None:
    stdlib_app(repo, CRASH)
    token = "tok_" + hashlib.sha256(b"x").hexdigest()[:20]
    r = run_cli("env", "set", "API_TOKEN", token, "--env", "production", "--secret", cwd=repo)
    assert r.returncode == 0, r.stderr
    r = push(repo, "main", timeout=120)
    assert "exit code 3" in r.stderr
    assert "ModuleNotFoundError: No module named 'flask_login'" in r.stderr
    assert "token is" in r.stderr and token not in r.stderr
    dep = deployments(repo)[0]
    assert dep["status"] == "error"
    assert "flask_login" in dep["reason"] and token not in dep["reason"]


def test_an_app_on_the_wrong_port_is_told_about_port(repo: Path, cp: ControlPlane) -> None:
    stdlib_app(repo, WRONG_PORT)
    r = push(repo, "main", timeout=120)
    assert "the app listens on 127.0.0.1:" in r.stderr and "not on $PORT" in r.stderr
    assert "$PORT" in deployments(repo)[0]["reason"]


SERVE_DATA = """\
import json, os
from http.server import HTTPServer, BaseHTTPRequestHandler
DATA = os.path.join(os.environ["TRISTAGE_DATA_DIR"], "releases.txt")

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        lines = open(DATA).read().split() if os.path.exists(DATA) else []
        body = json.dumps({"deployment": os.environ["TRISTAGE_DEPLOYMENT"],
                           "releases": lines}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""

RELEASE = """\
import os, sys
with open(os.path.join(os.environ["TRISTAGE_DATA_DIR"], "releases.txt"), "a") as f:
    f.write(os.environ["TRISTAGE_DEPLOYMENT"] + "\\n")
print("release step ran")
sys.exit(int(os.environ.get("RELEASE_EXIT", "0")))
"""


def test_the_procfiles_release_line_runs_before_the_release_takes_traffic(
    repo: Path, cp: ControlPlane
) -> None:
    stdlib_app(repo, SERVE_DATA)
    procfile = "web: python main.py\nrelease: python release.py\nclock: python c.py\n"
    commit(repo, {"release.py": RELEASE, "Procfile": procfile}, "release")
    r = push(repo, "main", timeout=120)
    first = deployment_id(r.stderr)
    assert "release step ran" in r.stderr, r.stderr
    assert "Procfile process types: web, release, clock" in r.stderr
    assert cp.get("shop.localhost").json() == {"deployment": first, "releases": [first]}
    # a failing release line aborts the release: the previous deployment keeps serving
    assert (
        run_cli("env", "set", "RELEASE_EXIT", "4", "--env", "production", cwd=repo).returncode == 0
    )
    commit(repo, {"note.txt": "x\n"}, "second")
    r = push(repo, "main", timeout=120)
    second = deployment_id(r.stderr)
    assert "exit code 4" in r.stderr
    assert deployments(repo)[0]["status"] == "error"
    assert cp.get("shop.localhost").json() == {"deployment": first, "releases": [first, second]}


SAYS_HELLO = SERVE_DATA.replace(
    "HTTPServer((",
    'print("hello from", os.environ["TRISTAGE_DEPLOYMENT"], flush=True)\nHTTPServer((',
)


def test_logs_env_prints_the_live_deployments_runtime_log(repo: Path, cp: ControlPlane) -> None:
    stdlib_app(repo, SAYS_HELLO)
    first = deployment_id(push(repo, "main", timeout=120).stderr)
    commit(repo, {"note.txt": "x\n"}, "second")
    second = deployment_id(push(repo, "main", timeout=120).stderr)
    assert cp.serves("shop.localhost") == second
    # the pump writes what the app printed a moment later (it may hold a line's end
    # back for up to 0.2 s in case a secret goes on on the next line)
    r = wait_for(
        lambda: (
            (out := run_cli("logs", "--env", "production", cwd=repo)).returncode == 0
            and f"hello from {second}" in out.stdout
            and out
        ),
        10,
        "the live deployment's log line",
    )
    assert f"hello from {first}" not in r.stdout
    # an environment with nothing live, an unknown one, both a deployment and --env
    r = run_cli("logs", "--env", "preview", cwd=repo)
    assert r.returncode == 1 and "preview has no live deployment" in r.stderr
    r = run_cli("logs", "--env", "staging", cwd=repo)
    assert r.returncode != 0 and "staging" in r.stderr and "production" in r.stderr
    r = run_cli("logs", first, "--env", "production", cwd=repo)
    assert r.returncode == 2 and "either" in r.stderr
    r = run_cli("logs", first, cwd=repo)
    assert r.returncode == 0 and f"hello from {first}" in r.stdout


ONE_OFF = """\
import os, sys
print("greeting", os.environ["GREETING"], "in", os.environ["TRISTAGE_DEPLOYMENT"])
print("secret", os.environ["API_TOKEN"])
with open(os.path.join(os.environ["TRISTAGE_DATA_DIR"], "releases.txt"), "a") as f:
    f.write("one-off\\n")
try:
    open("written-by-one-off", "w")
except OSError:
    print("artifact read-only")
sys.exit(5)
"""


def test_run_a_one_off_command_in_the_live_deployments_sandbox(
    repo: Path, home: Path, cp: ControlPlane
) -> None:
    stdlib_app(repo, SERVE_DATA)
    commit(repo, {"oneoff.py": ONE_OFF}, "a one-off")
    token = "tok_" + hashlib.sha256(b"one-off").hexdigest()[:20]
    for args in (("GREETING", "bonjour"), ("API_TOKEN", token, "--secret")):
        assert run_cli("env", "set", *args, "--env", "production", cwd=repo).returncode == 0
    dep = deployment_id(push(repo, "main", timeout=120).stderr)
    assert cp.serves("shop.localhost") == dep
    # production asks for --yes, and nothing runs without it
    r = run_cli("run", "--env", "production", "--", "python", "oneoff.py", cwd=repo)
    assert r.returncode == 2 and "--yes" in r.stderr
    assert cp.get("shop.localhost").json()["releases"] == []
    r = run_cli("run", "--env", "production", "--yes", "--", "python", "oneoff.py", cwd=repo)
    assert r.returncode == 5, r.stderr
    assert f"greeting bonjour in {dep}" in r.stdout
    assert "secret ****" in r.stdout and token not in r.stdout + r.stderr
    assert "artifact read-only" in r.stdout
    # it wrote the environment's data directory, which the live release reads
    assert cp.get("shop.localhost").json()["releases"] == ["one-off"]
    # a command that is not there, an environment with nothing live
    r = run_cli("run", "--env", "production", "--yes", "--", "no-such-command", cwd=repo)
    assert r.returncode == 127
    r = run_cli("run", "--env", "preview", "--", "true", cwd=repo)
    assert r.returncode == 1 and "preview has no live deployment" in r.stderr
    api = Tristage(home, actor="tester")
    try:
        events = api.audit.events(project="shop", action="deploy.run")
    finally:
        api.close()
    assert [e.details["exit_code"] for e in events] == [127, 5]
    assert all(e.target == dep and e.environment == "production" for e in events)
    assert "python oneoff.py" in {e.details["command"] for e in events}


def test_logs_env_follow_goes_on_with_the_next_deployment(repo: Path, cp: ControlPlane) -> None:
    stdlib_app(repo, SAYS_HELLO)
    first = deployment_id(push(repo, "main", timeout=120).stderr)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tristage", "logs", "--env", "production", "--follow"],
        cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    out = proc.stdout
    assert out is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(out.readline, "")))
    reader.start()
    try:
        wait_for(lambda: any(f"hello from {first}" in x for x in lines), 10, "the first log")
        commit(repo, {"note.txt": "x\n"}, "second")
        second = deployment_id(push(repo, "main", timeout=120).stderr)
        wait_for(lambda: any(f"hello from {second}" in x for x in lines), 10, "the next log")
    finally:
        proc.kill()
        proc.wait()
        reader.join(5)
    switch = lines.index(f"tristage: production now serves {second}\n")
    assert any(f"hello from {first}" in x for x in lines[:switch])
    assert any(f"hello from {second}" in x for x in lines[switch:])
