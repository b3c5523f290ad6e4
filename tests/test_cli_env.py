"""The `env` commands and `check`, through the real CLI in a subprocess."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from dotenv import dotenv_values

from conftest import run_cli

SECRET = "sk_test_51CLIsecretVALUEneverSHOWN"


@pytest.fixture
def app(repo: Path) -> Path:
    r = run_cli("init", "--preset", "professional", cwd=repo)
    assert r.returncode == 0, r.stderr
    return repo


def ok(*args: str, cwd: Path, input: str | None = None) -> str:
    r = run_cli(*args, cwd=cwd, input=input)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def test_secret_from_stdin_is_masked_everywhere(app: Path, home: Path) -> None:
    out = ok(
        "env", "set", "STRIPE_SECRET_KEY", "--env", "development", cwd=app, input=SECRET + "\n"
    )
    assert "added STRIPE_SECRET_KEY in development (secret)" in out
    ok("env", "set", "API_URL", "https://api.example", "--all", cwd=app)
    outputs = [
        ok("env", "ls", cwd=app),
        ok("env", "ls", "--json", cwd=app),
        ok("env", "ls", "--env", "development", "--resolved", cwd=app),
        ok("env", "ls", "--env", "development", "--resolved", "--json", cwd=app),
        ok("env", "get", "STRIPE_SECRET_KEY", "--env", "development", cwd=app),
        ok("env", "get", "STRIPE_SECRET_KEY", "--env", "development", "--json", cwd=app),
        ok("check", "--json", cwd=app),
        ok("audit", "--json", cwd=app),
    ]
    for text in outputs:
        assert SECRET not in text
    rows = json.loads(outputs[3])
    by_name = {r["name"]: r for r in rows}
    assert by_name["STRIPE_SECRET_KEY"]["value"] == "****"
    assert by_name["STRIPE_SECRET_KEY"]["source"] == "environment"
    assert by_name["API_URL"] == {
        **by_name["API_URL"],
        "value": "https://api.example",
        "source": "shared",
        "from": "all environments",
    }
    assert outputs[4].strip() == "****"
    revealed = ok("env", "get", "STRIPE_SECRET_KEY", "--env", "development", "--reveal", cwd=app)
    assert revealed == SECRET + "\n"  # stdin's trailing newline is not part of the value
    for suffix in ("", "-wal"):
        path = home / f"state.db{suffix}"
        if path.exists():
            assert SECRET.encode() not in path.read_bytes()


TRICKY = {
    "QUOTES": """it's "quoted" """,
    "MULTILINE": "first line\nsecond = line\n  third # line",
    "HASH": "#not-a-comment",
    "EQUALS": "k=v&x==y",
    "SPACES": "  lead and trail  ",
    "UNICODE": "naïve café 日本 ✓",
    "BACKSLASHES": "a\\nb\\\\c",
}


def test_pull_development_round_trips_through_python_dotenv(app: Path) -> None:
    for name, value in TRICKY.items():
        ok("env", "set", name, "--env", "development", "--secret", cwd=app, input=value + "\n")
    ok("env", "set", "NEXT_PUBLIC_SITE", "https://dev.example", "--env", "development", cwd=app)
    expected = {**TRICKY, "NEXT_PUBLIC_SITE": "https://dev.example"}
    r = run_cli("env", "pull", "--env", "development", "-o", ".env.local", cwd=app)
    assert r.returncode == 0, r.stderr
    assert "wrote 8 variables to .env.local" in r.stderr
    target = app / ".env.local"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert dotenv_values(target) == expected
    stdout = ok("env", "pull", "--env", "development", cwd=app)
    assert stdout == target.read_text(encoding="utf-8")


def test_import_reports_added_and_changed(app: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "in.env"
    env_file.write_text("A=1\nB='two words'\nSTRIPE_SECRET_KEY=sk_test_abcdef\n", encoding="utf-8")
    out = ok("env", "import", str(env_file), "--env", "preview", cwd=app)
    assert "added (3): A, B, STRIPE_SECRET_KEY" in out
    env_file.write_text("A=1\nB=changed\n", encoding="utf-8")
    report = json.loads(ok("env", "import", str(env_file), "--env", "preview", "--json", cwd=app))
    assert report == {"added": [], "changed": ["B"], "unchanged": ["A"]}
    got = json.loads(ok("env", "get", "STRIPE_SECRET_KEY", "--env", "preview", "--json", cwd=app))
    assert got["secret"] is True and got["value"] == "****"
    env_file.write_text("GOOD=1\nthis is not dotenv\n", encoding="utf-8")
    r = run_cli("env", "import", str(env_file), "--env", "preview", cwd=app)
    assert r.returncode == 2 and "line 2" in r.stderr and "Traceback" not in r.stderr


def test_production_reveals_are_audited(app: Path, tmp_path: Path) -> None:
    ok("env", "set", "CLERK_SECRET_KEY", "--env", "production", cwd=app, input="sk_live_xyz12345")
    ok("env", "get", "CLERK_SECRET_KEY", "--env", "production", cwd=app)  # masked: not a reveal
    assert ok("env", "get", "CLERK_SECRET_KEY", "--env", "production", "--reveal", cwd=app) == (
        "sk_live_xyz12345\n"
    )
    r = run_cli("env", "pull", "--env", "production", "-o", str(tmp_path / "p.env"), cwd=app)
    assert r.returncode == 1 and "--yes" in r.stderr
    assert not (tmp_path / "p.env").exists()
    ok("env", "pull", "--env", "production", "-o", str(tmp_path / "p.env"), "--yes", cwd=app)
    events = json.loads(ok("audit", "--action", "env.*", "--json", cwd=app))
    assert [(e["action"], e["details"].get("via")) for e in events] == [
        ("env.reveal", "pull"),
        ("env.reveal", "get"),
        ("env.set", "set"),
    ]
    assert all("sk_live_xyz12345" not in json.dumps(e) for e in events)


def test_check_and_rm(app: Path) -> None:
    ok("env", "set", "STRIPE_SECRET_KEY", "--env", "preview", cwd=app, input="sk_live_51abcdef")
    r = run_cli("check", cwd=app)
    assert r.returncode == 1
    assert "error [stripe.live-outside-production] preview STRIPE_SECRET_KEY" in r.stdout
    assert "1 error, 0 warnings" in r.stdout
    assert "sk_live_51abcdef" not in r.stdout + r.stderr
    data = json.loads(run_cli("check", "--json", cwd=app).stdout)
    assert data["errors"] == 1
    assert data["findings"][0]["rule"] == "stripe.live-outside-production"
    assert (
        ok("check", "--env", "production", cwd=app).strip() == "0 errors, 0 warnings in production"
    )
    out = ok("env", "rm", "STRIPE_SECRET_KEY", "--env", "preview", cwd=app)
    assert "removed STRIPE_SECRET_KEY from preview" in out
    assert run_cli("check", cwd=app).returncode == 0
    r = run_cli("env", "rm", "STRIPE_SECRET_KEY", "--env", "preview", cwd=app)
    assert r.returncode == 1 and "not set" in r.stderr


def test_bad_usage_is_one_line(app: Path) -> None:
    r = run_cli("env", "set", "BAD-NAME", "x", "--env", "development", cwd=app)
    assert r.returncode == 2 and "not a variable name" in r.stderr
    r = run_cli("env", "set", "A", "x", "--env", "staging", cwd=app)
    assert r.returncode == 1 and "no environment named 'staging'" in r.stderr
    r = run_cli("env", "get", "MISSING", "--env", "development", cwd=app)
    assert r.returncode == 1 and "MISSING is not set for development" in r.stderr
    r = run_cli("env", "ls", "--resolved", cwd=app)
    assert r.returncode == 2 and "--env" in r.stderr
    for res in (r,):
        assert "Traceback" not in res.stderr


def test_set_runs_the_rules_on_the_new_value_at_once(app: Path) -> None:
    """A live Stripe key set in preview is flagged when it is set, not at the next deploy."""
    r = run_cli("env", "set", "STRIPE_SECRET_KEY", "--env", "preview", cwd=app,
                input="sk_live_51abcdef")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "added STRIPE_SECRET_KEY in preview" in r.stdout
    assert "error [stripe.live-outside-production] preview STRIPE_SECRET_KEY" in r.stderr
    assert "sk_live_51abcdef" not in r.stdout + r.stderr
    listed = json.loads(ok("env", "set", "STRIPE_SECRET_KEY", "--env", "preview", "--json",
                           cwd=app, input="sk_live_51abcdef"))  # fmt: skip
    assert [f["rule"] for f in listed[0]["findings"]] == ["stripe.live-outside-production"]
    # a value the rules accept prints no finding
    clean = run_cli("env", "set", "STRIPE_SECRET_KEY", "--env", "preview", cwd=app,
                    input="sk_test_51abcdef")  # fmt: skip
    assert clean.returncode == 0 and "error [" not in clean.stderr, clean.stderr


def test_strict_set_refuses_a_rule_error_and_writes_nothing(app: Path) -> None:
    ok("env", "set", "STRIPE_SECRET_KEY", "--env", "preview", cwd=app, input="sk_test_51keep")
    r = run_cli("env", "set", "STRIPE_SECRET_KEY", "--env", "preview", "--strict", cwd=app,
                input="sk_live_51abcdef")  # fmt: skip
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.startswith("error: change refused: 1 rule error"), r.stderr
    assert "[stripe.live-outside-production] STRIPE_SECRET_KEY" in r.stderr
    value = ok("env", "get", "STRIPE_SECRET_KEY", "--env", "preview", "--reveal", cwd=app)
    assert value.strip() == "sk_test_51keep"
    audit = json.loads(ok("audit", "--json", cwd=app))
    assert sum(e["action"] == "env.set" for e in audit) == 1  # the refused write left no event
