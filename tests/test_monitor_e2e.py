"""Monitoring end to end: a real control plane, real releases, real HTTP through the
router, a real alert receiver; automatic rollback, metrics and health alerts."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli
from test_deploy_helpers import (
    ControlPlane,
    Load,
    commit,
    deployment_id,
    deployments,
    make_project,
    push,
    wait_for,
)
from tristage.api import Tristage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

# The app under watch: "/" answers 500 when the file ERRORS is in its directory,
# "/health" answers 500 while the file SICK is there.
APP = """
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ERRORS = Path("ERRORS").exists()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith("/health"):
            code = 500 if Path("SICK").exists() else 200
        else:
            code = 500 if ERRORS else 200
        body = json.dumps({"deployment": os.environ.get("TRISTAGE_DEPLOYMENT")}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
server.daemon_threads = True
server.serve_forever()
"""

MONITOR = """
[monitor]
error_rate = 0.5
min_requests = 5
window_seconds = 2
watch_seconds = 60
health_interval = 0.2
health_failures = 3
alert_url = "http://127.0.0.1:{port}/alerts"
"""


class Receiver:
    """An HTTP endpoint that records the alerts POSTed to it."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, fmt: str, *args: object) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def project(repo: Path, receiver: Receiver) -> Path:
    root = make_project(repo)
    toml = (root / "tristage.toml").read_text() + MONITOR.format(port=receiver.port)
    files = {"tristage.toml": toml, "monitored.py": APP, "Procfile": "web: python monitored.py\n"}
    commit(root, files, "watched app")
    assert run_cli("resolve", "main", cwd=root).returncode == 0  # registers the configuration
    return root


@pytest.fixture
def cp(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ControlPlane]:
    monkeypatch.setenv("TRISTAGE_MONITOR_TICK", "0.1")
    plane = ControlPlane(home).start()
    yield plane
    plane.stop()


def _json(*args: str, cwd: Path) -> Any:
    r = run_cli(*args, "--json", cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_failing_deployment_is_rolled_back_once(
    project: Path, cp: ControlPlane, receiver: Receiver
) -> None:
    good = deployment_id(push(project, "main").stderr)
    commit(project, {"ERRORS": "1\n"}, "answers 500")
    r = push(project, "main")
    assert r.returncode == 0, r.stderr
    bad = deployment_id(r.stderr)
    assert cp.get("shop.localhost").status_code == 500  # it passed its health check, then fails
    with Load(cp.port, "shop.localhost") as load:
        wait_for(lambda: cp.serves("shop.localhost") == good, 20, "the automatic rollback")
        rolled_at = time.monotonic()
        # keep the traffic going well past the window: nothing may switch again
        while time.monotonic() - rolled_at < 3.0:
            time.sleep(0.1)
    # every failed request is the bad deployment's own 500: the switch dropped nothing
    assert set(load.failures) <= {"HTTP 500"}, load.failures[:5]
    assert load.failures and load.seen.get(good, 0) > 20
    assert set(load.seen) == {good}
    assert cp.serves("shop.localhost") == good

    alerts = _json("alerts", cwd=project)
    rollbacks = [a for a in alerts if a["kind"] == "auto_rollback"]
    assert len(rollbacks) == 1
    alert = rollbacks[0]
    assert alert["deployment"] == bad and alert["environment"] == "production"
    assert alert["details"]["rolled_back_to"] == good
    assert "tristage-monitor" in alert["message"] and "error rate" in alert["message"]
    assert not alert["open"] and alert["resolution"] == f"rolled back to {good}"
    # no alert about the deployment that serves again
    assert not [a for a in alerts if a["deployment"] == good]

    events = _json("audit", cwd=project)
    rb = [e for e in events if e["action"] == "deploy.rollback"]
    assert len(rb) == 1
    assert rb[0]["actor"] == "tristage-monitor"
    assert rb[0]["target"] == good and rb[0]["details"]["from"] == bad
    assert any(e["action"] == "monitor.alert" and e["actor"] == "tristage-monitor" for e in events)

    # the alert was POSTed to alert_url and its delivery recorded
    wait_for(lambda: receiver.received, 10, "the alert POST")
    posted = receiver.received[0]
    assert posted["event"] == "raised" and posted["alert"]["kind"] == "auto_rollback"
    assert posted["alert"]["deployment"] == bad
    wait_for(
        lambda: _json("alerts", cwd=project)[0]["delivery"] == "raised: HTTP 204", 10, "delivery"
    )
    assert f"ALERT [critical] shop/production {bad}" in cp.output()

    # never re-promoted: the bad deployment is still ready but not live
    listed = {d["id"]: d for d in deployments(project)}
    assert listed[good]["live"] and not listed[bad]["live"]
    assert listed[bad]["status"] == "ready"
    # a person may still put it back; the monitor then leaves it (no second rollback)
    r = run_cli("rollback", "--to", bad, cwd=project)
    assert r.returncode == 0, r.stderr
    for _ in range(30):
        cp.get("shop.localhost")
    time.sleep(0.5)
    assert cp.get("shop.localhost").json()["deployment"] == bad
    alerts = _json("alerts", cwd=project)
    assert len([a for a in alerts if a["kind"] == "auto_rollback"]) == 1
    assert any(a["kind"] == "error_rate" and a["open"] and a["deployment"] == bad for a in alerts)


def test_healthy_deployment_is_left_alone_and_metrics_count_requests(
    project: Path, cp: ControlPlane, receiver: Receiver, home: Path
) -> None:
    first = deployment_id(push(project, "main").stderr)
    commit(project, {"note.txt": "v2\n"}, "v2")
    second = deployment_id(push(project, "main").stderr)
    assert cp.serves("shop.localhost") == second
    for _ in range(30):
        assert cp.get("shop.localhost").status_code == 200
    for _ in range(7):
        assert cp.get(f"{first}.shop.localhost").status_code == 200
    assert cp.get(f"{first}.shop.localhost", "/nothing-here").status_code == 200

    def by_id() -> dict[str, Any]:
        return {m["deployment"]: m for m in _json("metrics", cwd=project)}

    # 31: `serves` asked once more
    wait_for(lambda: by_id().get(second, {}).get("requests") == 31, 10, "the metrics")
    wait_for(lambda: by_id().get(first, {}).get("requests") == 8, 10, "the metrics")

    def past_the_window() -> dict[str, Any] | None:
        m = by_id()
        return m if m[second]["window_requests"] == 0 else None

    # more than the window after the traffic: still live, still quiet
    m = wait_for(past_the_window, 10, "the window to move past the traffic")
    assert m[second]["live"] and not m[first]["live"]
    assert m[second]["status_2xx"] == 31 and m[second]["status_5xx"] == 0
    assert m[second]["p50_ms"] is not None and m[second]["p99_ms"] >= m[second]["p50_ms"]
    assert m[second]["health"] == "healthy" and m[second]["environment"] == "production"
    assert m[second]["window_requests"] == 0  # the window has moved past the traffic
    assert cp.serves("shop.localhost") == second
    assert _json("alerts", cwd=project) == []
    only_prod = _json("metrics", "--env", "production", cwd=project)
    assert {x["deployment"] for x in only_prod} == {first, second}
    assert _json("metrics", "--env", "preview", cwd=project) == []
    text = run_cli("metrics", cwd=project).stdout
    assert second in text and "live" in text and "healthy" in text

    # a live release whose health check fails 3 times in a row raises an alert
    api = Tristage(home, actor="tester")
    artifact = Path(api.deploys.get(second).artifact or "")
    api.close()
    (artifact / "SICK").write_text("1")

    def open_health() -> list[dict[str, Any]]:
        return [a for a in _json("alerts", "--open", cwd=project) if a["kind"] == "health"]

    alert = wait_for(open_health, 10, "the health alert")[0]
    assert alert["deployment"] == second
    assert "failed 3 times in a row (last: HTTP 500)" in alert["message"]
    assert by_id()[second]["health"] == "failing"
    (artifact / "SICK").unlink()
    wait_for(lambda: not open_health(), 10, "the health alert to resolve")
    assert _json("alerts", cwd=project)[0]["resolution"].startswith("health check answers again")
    wait_for(lambda: len(receiver.received) == 2, 10, "the resolution POST")
    assert [x["event"] for x in receiver.received] == ["raised", "resolved"]
    # health alerts never switch production
    assert cp.serves("shop.localhost") == second
    assert "deploy.rollback" not in {e["action"] for e in _json("audit", cwd=project)}
