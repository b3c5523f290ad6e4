"""Automatic rollback behind HAProxy: with `tristage up --edge haproxy`, traffic reaches
the release from HAProxy straight (never through the router), so the monitor can only
see the failing deployment's 500s in HAProxy's counters."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from acme_ca import free_port
from conftest import run_cli
from haproxy_front import needs_haproxy
from test_deploy_helpers import ControlPlane, Load, commit, deployment_id, push, wait_for
from test_haproxy_e2e import stop_haproxy
from test_monitor_e2e import Receiver, project, receiver  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.slow, needs_haproxy, pytest.mark.timeout(180)]


@pytest.fixture
def cp(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ControlPlane]:
    monkeypatch.setenv("TRISTAGE_MONITOR_TICK", "0.1")
    http_port = free_port()
    plane = ControlPlane(home, args=(
        "--edge", "haproxy", "--edge-bind", "127.0.0.1", "--http-port", str(http_port),
        "--https-port", str(free_port()),
    )).start()  # fmt: skip
    plane.http_port = http_port  # type: ignore[attr-defined]
    try:
        yield plane
    finally:
        plane.stop()
        stop_haproxy(home)


def test_a_failing_deployment_behind_haproxy_is_rolled_back(
    project: Path,  # noqa: F811
    cp: ControlPlane,
    receiver: Receiver,  # noqa: F811
) -> None:
    http = cp.http_port  # type: ignore[attr-defined]
    edge = httpx.Client(timeout=5, trust_env=False)

    def through_haproxy() -> httpx.Response:
        return edge.get(f"http://127.0.0.1:{http}/", headers={"Host": "shop.localhost"})

    good = deployment_id(push(project, "main").stderr)
    wait_for(lambda: through_haproxy().status_code == 200, 20, "haproxy to serve it")
    commit(project, {"ERRORS": "1\n"}, "answers 500")
    r = push(project, "main")
    assert r.returncode == 0, r.stderr
    bad = deployment_id(r.stderr)
    wait_for(lambda: through_haproxy().status_code == 500, 20, "the bad deployment live")
    with Load(http, "shop.localhost") as load:
        wait_for(
            lambda: through_haproxy().json()["deployment"] == good, 30, "the automatic rollback"
        )
        time.sleep(1.0)
    assert set(load.failures) <= {"HTTP 500"}, load.failures[:5]
    assert load.failures and load.seen.get(good, 0) > 0
    alerts = json.loads(run_cli("alerts", "--json", cwd=project).stdout)
    rollbacks = [a for a in alerts if a["kind"] == "auto_rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["deployment"] == bad
    edge.close()
