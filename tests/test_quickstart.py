"""`tristage quickstart` end to end: the same command a user runs, as a real subprocess,
with a fresh platform home and a free port; then the state is checked over real HTTP
through the router, in the real SQLite data stores and in the state store."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import run_cli, run_cli_process
from tristage.api import Tristage
from tristage.domain.config import parse_config
from tristage.edges.runtime import free_port
from tristage.services.quickstart import (
    SANITIZE_RULES,
    pipeline_text,
    project_name,
    sample_variables,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


class Running:
    """`tristage quickstart` in the foreground, its output collected line by line."""

    def __init__(self, *args: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tristage", "quickstart", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"},
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, marker: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(marker in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                self.reader.join(2)
                raise AssertionError(f"quickstart exited {self.proc.returncode}:\n{self.output}")
            time.sleep(0.05)
        raise AssertionError(f"no {marker!r} within {timeout}s:\n{self.output}")

    def interrupt(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout)
        self.reader.join(2)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def get(port: int, host: str, path: str) -> httpx.Response:
    with httpx.Client(timeout=5, trust_env=False) as client:
        return client.get(f"http://127.0.0.1:{port}{path}", headers={"Host": host})


def users(port: int, host: str) -> dict[str, Any]:
    r = get(port, host, "/api/users?limit=1000&include_deleted=1")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def sqlite_path(url: str) -> Path:
    assert url.startswith("sqlite:///"), url
    return Path(url.removeprefix("sqlite://"))


def every_cell(db: Path) -> Iterator[tuple[str, str, object]]:
    conn = sqlite3.connect(db)
    try:
        tables = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            if not r[0].startswith("sqlite_")
        ]
        for table in tables:
            cur = conn.execute(f'SELECT * FROM "{table}"')
            columns = [d[0] for d in cur.description]
            for row in cur:
                for column, value in zip(columns, row, strict=True):
                    yield table, column, value
    finally:
        conn.close()


def pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    return alive


def stop_controlplane(home: Path) -> None:
    """Stop a control plane a failed test left behind (it runs in its own session)."""
    try:
        pid = json.loads((home / "controlplane.json").read_text())["pid"]
    except (OSError, ValueError):
        return
    if pids_alive([pid]):
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 20
        while pids_alive([pid]) and time.monotonic() < deadline:
            time.sleep(0.05)


def test_quickstart_end_to_end_then_again_then_ctrl_c(
    tmp_path: Path, home: Path, api: Tristage
) -> None:
    port = free_port()
    app_dir = tmp_path / "shop"
    started = time.monotonic()
    first = Running("--dir", str(app_dir), "--port", str(port))
    try:
        first.wait_for("Serving. Press Ctrl-C", timeout=180)
        elapsed = time.monotonic() - started
        print(f"quickstart took {elapsed:.1f}s")
        out = first.output
        project = project_name(app_dir)
        assert project == "shop"
        for host in ("shop.localhost", "preview.shop.localhost", "development.shop.localhost"):
            assert f"http://{host}:{port}" in out
        assert "drill PASS" in out and "tristage promote" in out and "tristage rollback" in out
        assert "feature/broken" in out and "svix-signature: v1," in out  # what to try next
        # the platform's dashboard, and how to open it signed in
        assert f"dashboard: http://127.0.0.1:{port + 1}/" in out and "tristage open" in out

        # three environments, each serving its own data at its own host
        prod = users(port, "shop.localhost")
        preview = users(port, "preview.shop.localhost")
        dev = users(port, "development.shop.localhost")
        assert (prod["environment"], preview["environment"], dev["environment"]) == (
            "production",
            "preview",
            "development",
        )
        for host, env in (
            ("shop.localhost", "production"),
            ("preview.shop.localhost", "preview"),
            ("development.shop.localhost", "development"),
        ):
            health = get(port, host, "/health")
            assert health.status_code == 200 and health.json()["environment"] == env
            page = get(port, host, "/dashboard")
            assert page.status_code == 200 and env in page.text
        assert prod["count"] >= 20 and dev["count"] >= 5
        prod_ids = {u["clerk_id"] for u in prod["users"]}
        dev_ids = {u["clerk_id"] for u in dev["users"]}
        assert not prod_ids & dev_ids  # development has its own rows

        # preview holds production's rows (keys kept) and no production email anywhere
        preview_ids = {u["clerk_id"] for u in preview["users"]}
        assert len(prod_ids & preview_ids) >= prod["count"] - 1  # all but prod's test webhook
        emails = {u["email"].lower() for u in prod["users"] if u["email"]}
        assert len(emails) >= 20
        preview_db = sqlite_path(api.data.database_url(project, "preview"))
        cells = 0
        for table, column, value in every_cell(preview_db):
            cells += 1
            text = str(value).lower()
            leaked = [e for e in emails if e in text]
            assert not leaked, f"{table}.{column} holds production email {leaked[0]}"
        assert cells > 200
        paid = [u for u in preview["users"] if u["clerk_id"] in prod_ids]
        assert all(u["email"] and "@" in u["email"] for u in paid)  # sanitized, not emptied

        # a delivered test webhook in each environment, applied by that environment's app
        for env, listing in (("production", prod), ("preview", preview), ("development", dev)):
            delivered = api.webhooks.deliveries(project, environment=env, status="delivered")
            assert delivered, f"no delivered webhook in {env}"
            body = json.loads(api.webhooks.show(delivered[0].id).body)
            assert body["type"] == "user.created"
            assert body["data"]["id"] in {u["clerk_id"] for u in listing["users"]}

        # one verified backup of production
        backups = [b for b in api.data.backups(project, "production") if b.kind == "manual"]
        assert len(backups) == 1  # (and the deploy's pre-migration snapshot)
        api.data.verify(project, "production", backups[0].id).close()
        assert backups[0].rows >= prod["count"]

        # the isolation rules pass; production has live-looking, clearly fake keys
        r = run_cli("check", cwd=app_dir)
        assert r.returncode == 0, r.stdout + r.stderr
        live = api.variables.get(project, "STRIPE_SECRET_KEY", "production")
        assert live.value.startswith("sk_live_FAKE")

        # running it again is safe: it reuses the control plane and the live deployments
        again = run_cli_process("quickstart", "--dir", str(app_dir), "--no-wait", timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "using the running one" in again.stdout
        assert again.stdout.count("already live") == 3
        assert users(port, "shop.localhost")["count"] == prod["count"] + 1  # one more webhook
        assert [b.kind for b in api.data.backups(project, "production")].count("manual") == 2

        # Ctrl-C stops the control plane it started, and every release
        sql = "SELECT json_extract(handle, '$.pid') AS pid FROM releases"
        releases = [r["pid"] for r in api.store.query(sql)]
        cp_pid = json.loads((home / "controlplane.json").read_text())["pid"]
        assert releases and pids_alive([cp_pid, *releases])
        assert first.interrupt() == 0, first.output
        assert "stopped the control plane" in first.output
        assert not pids_alive([cp_pid])
        deadline = time.monotonic() + 10
        while pids_alive(releases) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pids_alive(releases)
        assert api.deploys.controlplane() is None
        with pytest.raises(httpx.ConnectError):
            get(port, "shop.localhost", "/health")
    finally:
        first.kill()
        stop_controlplane(home)


def test_ctrl_c_mid_flow_stops_the_control_plane_and_a_rerun_finishes(
    tmp_path: Path, home: Path, api: Tristage
) -> None:
    app_dir = tmp_path / "halted"
    run = Running("--dir", str(app_dir), "--port", "0")
    try:
        run.wait_for("Deploy dev, test and main", timeout=60)
        cp_pid = json.loads((home / "controlplane.json").read_text())["pid"]
        assert run.interrupt() == 130, run.output
        assert "interrupted" in run.output and "stopped the control plane" in run.output
        assert not pids_alive([cp_pid]) and api.deploys.controlplane() is None
        # the pushed deployments wait in the store; a second run carries them out
        r = run_cli_process(
            "quickstart", "--dir", str(app_dir), "--port", "0", "--no-wait", "--json"
        )
        assert r.returncode == 0, r.stdout + r.stderr
        summary = json.loads(r.stdout)
        assert [e["health"] for e in summary["environments"]] == ["healthy"] * 3
        assert len(api.deploys.list_deployments("halted")) <= 3 + 3  # no pile-up
    finally:
        run.kill()
        stop_controlplane(home)


def test_quickstart_simple_preset_no_wait(tmp_path: Path, home: Path, api: Tristage) -> None:
    port = free_port()
    app_dir = tmp_path / "simple-app"
    r = run_cli_process(
        "quickstart", "--dir", str(app_dir), "--preset", "simple", "--port", str(port),
        "--no-wait", "--json", timeout=180,
    )  # fmt: skip
    info = api.deploys.controlplane()
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        summary = json.loads(r.stdout)
        assert summary["router_port"] == port and summary["started_controlplane"]
        assert {e["environment"]: e["health"] for e in summary["environments"]} == {
            "development": "healthy",
            "preview": "healthy",
            "production": "healthy",
        }
        assert info is not None and info.pid == summary["controlplane_pid"]
        # preview shares development's store: the clone went there, sanitized
        assert api.data.database_url("simple-app", "preview") == api.data.database_url(
            "simple-app", "development"
        )
        shared = users(port, "preview.simple-app.localhost")
        prod = users(port, "simple-app.localhost")
        emails = {u["email"] for u in prod["users"]}
        assert shared["environment"] == "preview" and shared["count"] >= 20
        assert not emails & {u["email"] for u in shared["users"]}
        assert users(port, "development.simple-app.localhost")["environment"] == "development"
    finally:
        stop_controlplane(home)


def test_quickstart_refuses_a_directory_it_did_not_create(tmp_path: Path, home: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me\n")
    r = run_cli("quickstart", "--dir", str(target), "--no-wait")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "is not empty and is not a quickstart repository" in r.stdout
    assert "hint: pass --dir with a new or empty directory" in r.stdout
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]
    assert not (home / "controlplane.json").exists()


@pytest.mark.parametrize("preset", ["professional", "simple"])
def test_pipeline_and_sample_variables_pass_the_rules(
    preset: str, tmp_path: Path, api: Tristage
) -> None:
    text = pipeline_text(preset, "demo")  # type: ignore[arg-type]
    cfg = parse_config(text)
    assert cfg.sanitize == SANITIZE_RULES
    assert cfg.settings("production").migrate == "python migrate.py"
    assert cfg.settings("preview").health_path == "/health"
    for env in cfg.environments.values():
        assert env.webhooks["clerk"].path == "/clerk-users-webhook"
    root = tmp_path / "demo"
    root.mkdir()
    (root / "tristage.toml").write_text(text)
    api.open_project(root)
    secrets: dict[str, set[str]] = {}
    for name, env in cfg.environments.items():
        if cfg.owner(name) != name:
            continue
        values = sample_variables("demo", env.tier)
        api.variables.import_values("demo", values, environments=[name])
        for k, v in values.items():
            secrets.setdefault(k, set()).add(v)
    findings = api.variables.check("demo")
    assert not [f.line() for f in findings if f.severity == "error"]
    owners = [n for n in cfg.environments if cfg.owner(n) == n]
    assert len(secrets["CLERK_WEBHOOK_SECRET"]) == len(owners)  # distinct per environment
    prod = api.variables.get("demo", "CLERK_SECRET_KEY", "production").value
    assert prod.startswith("sk_live_FAKE")
    assert api.variables.get("demo", "CLERK_SECRET_KEY", "development").value.startswith("sk_test_")
