from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli, run_cli_process


def test_init_resolve_through_subprocess(repo: Path) -> None:
    r = run_cli_process("init", "--preset", "professional", cwd=repo)
    assert r.returncode == 0, r.stderr
    assert (repo / "tristage.toml").is_file()
    assert "next:" in r.stdout
    for branch, env in [
        ("feature/login", "development"),
        ("test", "preview"),
        ("main", "production"),
    ]:
        r = run_cli_process("resolve", branch, cwd=repo)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[0] == env
        # which host: the environment's own only for a branch it names exactly
        if branch == "feature/login":
            assert "host: feature-login.myapp.localhost only" in r.stdout
            assert "never development.myapp.localhost" in r.stdout
        else:
            assert (
                "host: " + ("myapp.localhost" if env == "production" else f"{env}.myapp")
                in r.stdout
            )
    r = run_cli_process("resolve", "main", "--json", cwd=repo)
    assert json.loads(r.stdout) == {
        "branch": "main",
        "environment": "production",
        "pattern": "main",
        "rule": 2,
        "tier": "production",
        "host": "myapp.localhost",
        "follows_host": True,
    }


def test_init_refuses_overwrite(repo: Path) -> None:
    assert run_cli("init", cwd=repo).returncode == 0
    r = run_cli("init", cwd=repo)
    assert r.returncode == 1
    assert "already exists" in r.stderr and "--force" in r.stderr
    assert "Traceback" not in r.stderr
    assert run_cli("init", "--force", "--preset", "simple", cwd=repo).returncode == 0
    assert run_cli("resolve", "xyz", cwd=repo).stdout.splitlines()[0] == "preview"


def test_init_outside_git(tmp_path: Path, home: Path) -> None:
    r = run_cli("init", cwd=tmp_path)
    assert r.returncode == 2
    assert "not a git working copy" in r.stderr


def test_unmatched_branch_exits_1(repo: Path) -> None:
    (repo / "tristage.toml").write_text(
        '[project]\nname="a"\n[environments.production]\ntier="production"\nbranches=["main"]\n'
    )
    r = run_cli("resolve", "dev", cwd=repo)
    assert r.returncode == 1
    assert "matches no environment" in r.stderr


def test_bad_config_three_problems_exit_2(repo: Path) -> None:
    (repo / "tristage.toml").write_text(
        '[project]\nname = "Bad Name"\n[environments.preview]\ntier = "staging"\n'
        'branches = ["test", "bad branch"]\n'
    )
    r = run_cli("resolve", "main", cwd=repo)
    assert r.returncode == 2
    assert "3 problems" in r.stderr
    for path in ("project.name", "environments.preview.tier", "environments.preview.branches[1]"):
        assert path in r.stderr


def test_audit_records_init(repo: Path) -> None:
    run_cli("init", "--name", "shop", cwd=repo)
    r = run_cli("audit", "--json", cwd=repo)
    events = json.loads(r.stdout)
    assert events[0]["action"] == "project.init"
    assert events[0]["project"] == "shop"
    assert events[0]["actor"]


def test_usage_error_exit_2(repo: Path) -> None:
    r = run_cli("init", "--preset", "weird", cwd=repo)
    assert r.returncode == 2
