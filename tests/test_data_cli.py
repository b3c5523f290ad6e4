"""The `tristage db` commands through a real subprocess."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli
from test_data import SANITIZE, Env
from tristage.api import Tristage


def test_db_commands_end_to_end(api: Tristage, repo: Path, tmp_path: Path) -> None:
    env = Env(api, repo, "sqlite", "cli")
    env.configure()
    env.seed("production", users=12)
    env.seed("development", users=6)

    url = run_cli("db", "url", "production", cwd=repo)
    assert url.returncode == 0 and url.stdout.strip() == env.url("production")

    out = tmp_path / "dev.zip"
    r = run_cli("db", "export", "development", "-o", str(out), "--format", "zip", cwd=repo)
    assert r.returncode == 0, r.stderr
    assert "2 table(s), 18 row(s)" in r.stdout and out.is_file()

    r = run_cli("db", "import", "preview", str(out), cwd=repo)
    assert r.returncode == 0, r.stderr
    r = run_cli("db", "import", "preview", str(out), cwd=repo)  # not empty any more
    assert r.returncode == 2 and "--replace-all" in r.stderr
    r = run_cli("db", "import", "preview", str(out), "--replace-all", "--table", "users", cwd=repo)
    assert r.returncode == 0 and "users: 6 row(s)" in r.stdout

    r = run_cli("db", "backup", "production", "--json", cwd=repo)
    assert r.returncode == 0, r.stderr
    backup_id = json.loads(r.stdout)["id"]
    r = run_cli("db", "backups", "production", "--json", cwd=repo)
    assert [b["id"] for b in json.loads(r.stdout)] == [backup_id]

    r = run_cli("db", "restore", "production", backup_id, cwd=repo)
    assert r.returncode == 2 and "--yes" in r.stderr
    r = run_cli("db", "restore", "production", backup_id, "--yes", cwd=repo)
    assert r.returncode == 0, r.stderr
    assert "restored production" in r.stdout and "safety backup" in r.stdout

    r = run_cli("db", "drill", "production", "--json", cwd=repo)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["passed"] is True

    r = run_cli("db", "prune", "production", "--dry-run", cwd=repo)
    assert r.returncode == 0 and "keep" in r.stdout

    r = run_cli("db", "clone", "production", "preview", cwd=repo)
    assert r.returncode == 2 and "--yes" in r.stderr  # preview holds data
    r = run_cli("db", "clone", "production", "preview", "--yes", "--json", cwd=repo)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["sanitized"] and report["rows"] == {"users": 12, "payments": 24}
    assert report["scan"]["found"] == [] and report["scan"]["tables"] == 2
    r = run_cli("db", "clone", "production", "preview", "--yes", cwd=repo)
    assert r.returncode == 0, r.stderr
    assert "checked the copy: 36 row(s) of 2 table(s)" in r.stdout and "none found" in r.stdout


def test_clone_refusal_lists_columns_and_exits_1(api: Tristage, repo: Path) -> None:
    env = Env(api, repo, "sqlite", "cli2")
    env.configure(sanitize={k: v for k, v in SANITIZE.items() if k != "users.email"})
    env.seed("production", users=3)
    r = run_cli("db", "clone", "production", "preview", cwd=repo)
    assert r.returncode == 1
    assert "users.email" in r.stderr and "[sanitize]" in r.stderr
    r = run_cli("db", "clone", "preview", "production", cwd=repo)
    assert r.returncode == 2 and "production" in r.stderr
