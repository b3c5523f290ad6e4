"""The promotion preflight: the pure comparison, the dry runs of known release
commands, and a real promote --dry-run / refusal / HTTP call against a real control
plane, with a release command whose dry run runs in production's sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from conftest import git, run_cli
from test_deploy_helpers import ControlPlane, commit, deployment_id, make_project, push
from tristage.domain.preflight import compare, migration_dry_run


def test_compare_names_differences_never_values() -> None:
    findings = compare(
        "preview",
        "production",
        source_vars={"A", "ONLY_PREVIEW"},
        target_vars={"A", "ONLY_PROD"},
        source_build_hash="aaa",
        target_build_hash="bbb",
        source_webhooks={"stripe"},
        target_webhooks={"stripe", "clerk"},
        rule_errors=["[required] API_KEY: missing"],
        release_command="python manage.py migrate",
    )
    by_kind = {(f.kind, f.severity): f for f in findings}
    assert by_kind[("rules", "error")].message.startswith("production: [required] API_KEY")
    assert by_kind[("variables", "warning")].names in (("ONLY_PREVIEW",), ("ONLY_PROD",))
    assert [f.names for f in findings if f.kind == "variables"] == [
        ("ONLY_PREVIEW",),
        ("ONLY_PROD",),
    ]
    assert "rebuilds" in by_kind[("build", "info")].message
    assert by_kind[("webhooks", "warning")].names == ("clerk",)
    assert "a release command will run" in by_kind[("migrations", "info")].message
    same = compare(
        "preview", "production", source_vars={"A"}, target_vars={"A"},
        source_build_hash="h", target_build_hash="h", source_webhooks=(), target_webhooks=(),
    )  # fmt: skip
    assert same == ()


def test_known_release_commands_have_their_own_dry_run() -> None:
    assert migration_dry_run("python manage.py migrate") == "python manage.py migrate --plan"
    assert migration_dry_run("alembic upgrade head") == "alembic upgrade head --sql"
    assert migration_dry_run("npx prisma migrate deploy") == "npx prisma migrate status"
    assert migration_dry_run("bin/rails db:migrate") == "bin/rails db:migrate:status"
    assert migration_dry_run("python migrate.py") == "python migrate.py --dry-run"
    assert migration_dry_run("./run-migrations.sh") is None


MIGRATE = """\
import os, sys
marker = os.path.join(os.environ["TRISTAGE_DATA_DIR"], "migrated")
if "--dry-run" in sys.argv:
    print("migrate: pending 0002 add a column" if not os.path.exists(marker) else "up to date")
    sys.exit(0)
open(marker, "w").write("yes")
print("migrate: applied 0002")
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_promote_dry_run_prints_the_preflight_and_errors_refuse(repo: Path, home: Path) -> None:
    project = make_project(repo, migrate='"python migrate.py"')
    commit(project, {"migrate.py": MIGRATE}, "a release command")
    cp = ControlPlane(home).start()
    try:
        for name, env in (("ONLY_PREVIEW", "preview"), ("ONLY_PROD", "production")):
            r = run_cli("env", "set", name, "--env", env, input="s3cret-value\n", cwd=project)
            assert r.returncode == 0, r.stderr
        r = push(project, "main")
        assert r.returncode == 0, r.stderr
        prod = deployment_id(r.stderr)
        git(project, "checkout", "-qb", "test")
        commit(project, {"note.txt": "v2\n"}, "v2")
        preview = deployment_id(push(project, "test").stderr)
        # production's data was migrated by its own deploy: make the preview's pending
        marker = home / "data" / "shop" / "production" / "migrated"
        assert marker.exists()
        marker.unlink()

        r = run_cli("promote", preview, "--dry-run", cwd=project)
        assert r.returncode == 0, r.stderr
        out = r.stdout
        assert f"preflight: {preview} (preview) -> production" in out
        assert "set in preview, missing in production: ONLY_PREVIEW" in out
        assert "set in production, missing in preview (untested there): ONLY_PROD" in out
        assert "pending migrations (python migrate.py --dry-run)" in out
        assert "| migrate: pending 0002 add a column" in out
        assert "s3cret-value" not in out
        assert not marker.exists()  # the dry run applied nothing
        assert cp.serves("shop.localhost") == prod  # and moved nothing

        # the HTTP API gives the same, as data (for the dashboard's promote button)
        info = json.loads((home / "controlplane.json").read_text())
        token = json.loads(run_cli("token", "create", "ui", "--role", "deployer", "--json").stdout)[
            "token"
        ]
        with httpx.Client(
            base_url=f"http://127.0.0.1:{info['dashboard_port']}",
            headers={"authorization": f"Bearer {token}"},
            timeout=60,
            trust_env=False,
        ) as c:
            r = c.get(f"/api/v1/projects/shop/deployments/{preview}/preflight")
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["ok"] is True and body["target"] == "production"
            names = {n for f in body["findings"] for n in f["names"]}
            assert {"ONLY_PREVIEW", "ONLY_PROD"} <= names
            r = c.get(f"/api/v1/projects/shop/deployments/{preview}/preflight?migrations=false")
            kinds = {f["kind"]: f for f in r.json()["findings"]}
            assert "a release command will run" in kinds["migrations"]["message"]

        # an error of production's rules refuses the promote, and nothing moves
        toml = (project / "tristage.toml").read_text()
        start = toml.index("[environments.production]")
        toml = toml[:start] + toml[start:].replace("required = []", 'required = ["API_KEY"]', 1)
        (project / "tristage.toml").write_text(toml)
        r = run_cli("promote", preview, cwd=project)
        assert r.returncode == 1
        assert "error: production: [required.missing] API_KEY" in r.stdout
        assert "promote refused by the preflight" in r.stderr
        assert cp.serves("shop.localhost") == prod
    finally:
        cp.stop()


def test_reference_app_migrate_dry_run_applies_nothing(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    app = Path(__file__).parent.parent / "examples" / "saas-app"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}"}

    def migrate(*args: str) -> str:
        r = subprocess.run(
            [sys.executable, "migrate.py", *args], cwd=app, env=env, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert "migrate: pending 0001" in migrate("--dry-run")
    assert "migrate: pending 0001" in migrate("--dry-run")  # still pending: nothing applied
    assert "applied 0001" in migrate()
    assert "up to date" in migrate("--dry-run")
