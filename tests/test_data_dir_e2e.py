"""Files an app writes persist through deploys and rollbacks, are in backups, and come
back with `tristage db restore` while the release keeps running: a sandboxed app of
its own (an SQLite file of its own and uploads, as flaskr or Django's db.sqlite3 keep)
through a real control plane, router and git push."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from conftest import run_cli
from test_deploy_helpers import ControlPlane, commit, deployments, make_project, push, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

APP = """\
import json, os, sqlite3
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DATA = Path(os.environ["TRISTAGE_DATA_DIR"])
VERSION = "{version}"


def notes():
    db = sqlite3.connect(DATA / "app.sqlite3")  # opened per request, as flaskr does
    try:
        db.execute("CREATE TABLE IF NOT EXISTS notes (body TEXT)")
        return [r[0] for r in db.execute("SELECT body FROM notes ORDER BY rowid")]
    finally:
        db.close()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/health"):
            return self.send(200, {{"ok": True}})
        up = DATA / "uploads"
        files = {{p.name: p.read_text() for p in sorted(up.iterdir())}} if up.is_dir() else {{}}
        self.send(200, {{"version": VERSION, "deployment": os.environ["TRISTAGE_DEPLOYMENT"],
                         "notes": notes(), "uploads": files}})

    def do_POST(self):
        name = self.path.rsplit("/", 1)[1]
        body = self.rfile.read(int(self.headers["Content-Length"]))
        (DATA / "uploads").mkdir(exist_ok=True)
        (DATA / "uploads" / name).write_bytes(body)
        db = sqlite3.connect(DATA / "app.sqlite3")
        db.execute("CREATE TABLE IF NOT EXISTS notes (body TEXT)")
        db.execute("INSERT INTO notes VALUES (?)", (name,))
        db.commit()
        db.close()
        self.send(201, {{"stored": name}})

    def send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

HOST = "shop.localhost"


def state(cp: ControlPlane) -> dict[str, object]:
    r = cp.get(HOST)
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


def upload(cp: ControlPlane, name: str, text: str) -> None:
    r = httpx.post(f"http://127.0.0.1:{cp.port}/upload/{name}", content=text.encode(),
                   headers={"Host": HOST}, timeout=10, trust_env=False)  # fmt: skip
    assert r.status_code == 201, r.text


def test_files_persist_through_deploys_and_rollbacks_and_a_restore_brings_them_back(
    repo: Path, home: Path, cp: ControlPlane
) -> None:
    make_project(repo)
    commit(repo, {"app.py": APP.format(version="v1")}, "v1")
    assert push(repo, "main", timeout=120).returncode == 0
    first = deployments(repo)[0]["id"]
    upload(cp, "a.txt", "written by v1")

    # a deploy starts with the files the last one wrote
    commit(repo, {"app.py": APP.format(version="v2")}, "v2")
    r = push(repo, "main", timeout=120)
    assert r.returncode == 0, r.stderr
    second = deployments(repo)[0]["id"]
    now = state(cp)
    assert now["deployment"] == second and now["version"] == "v2"
    assert now["uploads"] == {"a.txt": "written by v1"} and now["notes"] == ["a.txt"]
    upload(cp, "b.txt", "written by v2")

    # a rollback moves the code back, not the files: what v2 wrote stays
    r = run_cli("rollback", cwd=repo)
    assert r.returncode == 0, r.stderr
    now = state(cp)
    assert now["deployment"] == first and now["version"] == "v1"
    assert now["uploads"] == {"a.txt": "written by v1", "b.txt": "written by v2"}
    assert now["notes"] == ["a.txt", "b.txt"]

    # back up, lose the files, restore: the running release sees them back
    r = run_cli("db", "backup", "production", cwd=repo)
    assert r.returncode == 0, r.stderr
    backup_id = json.loads(run_cli("db", "backups", "production", "--json", cwd=repo).stdout)[0]
    backup_id = backup_id["id"]
    data = home / "data" / "shop" / "production"
    for p in (data / "uploads").iterdir():
        p.unlink()
    (data / "app.sqlite3").unlink()
    upload(cp, "c.txt", "after the backup")
    assert state(cp)["notes"] == ["c.txt"]
    r = run_cli("db", "restore", "production", backup_id, "--yes", cwd=repo)
    assert r.returncode == 0, r.stderr
    assert "3 file(s)" in r.stdout, r.stdout  # two uploads and the app's SQLite file
    now = state(cp)
    assert now["deployment"] == first  # the same release, never restarted
    assert now["uploads"] == {"a.txt": "written by v1", "b.txt": "written by v2"}
    assert now["notes"] == ["a.txt", "b.txt"]
    # and it keeps writing into the restored tree
    upload(cp, "d.txt", "after the restore")
    wait_for(lambda: (data / "uploads" / "d.txt").exists(), 5, "the upload on the host")
    assert state(cp)["notes"] == ["a.txt", "b.txt", "d.txt"]
