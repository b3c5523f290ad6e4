"""The HAProxy front door end to end: `tristage up --edge haproxy` with Pebble as the CA,
a real project with public domains, real pushes, promote and rollback under HTTPS load
(straight from HAProxy to the releases), and a control plane killed with -9."""

from __future__ import annotations

import json
import os
import signal
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from acme_ca import Pebble, https_client, needs_pebble, peer_certificate
from conftest import run_cli
from edge_fixtures import (
    assert_edge_outlives_a_kill9,
    assert_production_over_https,
    assert_start_errors,
    edge_control_plane,
    pebble_fixture,  # noqa: F401  (the fixture `pebble`)
    project_fixture,  # noqa: F401  (the fixture `project`)
    promote_and_roll_back_under_load,
    push_a_branch,
)
from haproxy_front import needs_haproxy
from test_deploy_helpers import ControlPlane, deployment_id, push, wait_for
from tristage.edges.haproxy import runtime_api
from tristage.paths import socket_path

pytestmark = [pytest.mark.slow, needs_haproxy, needs_pebble, pytest.mark.timeout(300)]


def edge_dir(home: Path) -> Path:
    return home / "edge" / "haproxy"


def stop_haproxy(home: Path) -> None:
    """An HAProxy left by a control plane killed in a failed test."""
    try:
        pid = json.loads((edge_dir(home) / "haproxy.pid").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def cp(home: Path, pebble: Pebble) -> Iterator[ControlPlane]:
    plane = edge_control_plane(home, pebble, "haproxy")
    try:
        yield plane
    finally:
        plane.stop()
        stop_haproxy(home)


def has_certificate(port: int, host: str, root: str) -> bool:
    try:
        peer_certificate(port, host, root)
    except (ssl.SSLError, OSError):
        return False
    return True


def served_by_haproxy(home: Path, deployment: str) -> int:
    """Answers HAProxy relayed from `deployment`'s servers (its runtime API)."""
    rows = runtime_api.stat_rows(socket_path(edge_dir(home) / "admin.sock"))
    return sum(
        int(r["hrsp_2xx"] or 0)
        for r in rows
        if r["pxname"].startswith("be_h") and r["svname"].startswith(f"{deployment}_")
    )


def test_production_on_its_domain_over_https_through_haproxy_and_switches_drop_nothing(
    project: Path,
    cp: ControlPlane,
    pebble: Pebble,
    home: Path,
) -> None:
    https, http = cp.https_port, cp.http_port  # type: ignore[attr-defined]
    sock = socket_path(edge_dir(home) / "admin.sock")
    assert sock.stat().st_mode & 0o777 == 0o600
    assert socket_path(edge_dir(home) / "master.sock").stat().st_mode & 0o777 == 0o600
    r = push(project, "main")
    assert r.returncode == 0, r.stderr + cp.output()
    first = deployment_id(r.stderr)
    wait_for(lambda: has_certificate(https, "shop.test", pebble.root_pem), 60, "a certificate")
    with https_client(pebble.root_pem, timeout=60) as client:
        assert_production_over_https(client, https, http, first)
        wait_for(lambda: has_certificate(https, "www.shop.test", pebble.root_pem), 60, "www")
        alias = client.get(f"https://www.shop.test:{https}/")
        assert alias.headers["location"] == f"https://shop.test:{https}/"
        served = client.get(f"https://shop.test:{https}/")
        assert served.headers["strict-transport-security"] == "max-age=31536000"
    assert pebble.issued_by_pebble(peer_certificate(https, "shop.test", pebble.root_pem))
    cert = edge_dir(home) / "certs" / "shop.test.pem"
    assert cert.stat().st_mode & 0o777 == 0o600
    assert served_by_haproxy(home, first) >= 2  # straight from HAProxy to the release
    assert cp.serves("shop.localhost") == first  # the router keeps serving local names

    # a branch host: its certificate once it is routed; an unknown host: none
    preview = push_a_branch(project)
    host = "test.preview.shop.test"
    wait_for(lambda: has_certificate(https, host, pebble.root_pem), 60, "the branch's cert")
    with https_client(pebble.root_pem, timeout=60) as client:
        body = client.get(f"https://{host}:{https}/").json()
        assert body["deployment"] == preview and body["url"] == "https://staging.shop.test"
    with pytest.raises(ssl.SSLError):
        peer_certificate(https, "nobody.preview.shop.test", pebble.root_pem)

    # promote and rollback, several times, under load through HAProxy
    load, promoted = promote_and_roll_back_under_load(
        project, cp, https, pebble.root_pem, first, preview
    )
    assert served_by_haproxy(home, promoted) > 0
    assert "Reload" not in (edge_dir(home) / "haproxy.log").read_text()

    # the monitor counts what HAProxy relayed (the router never saw these requests)
    def counted() -> bool:
        r = run_cli("metrics", "--env", "production", "--json", cwd=project)
        rows = {m["deployment"]: m for m in json.loads(r.stdout)}
        return rows.get(promoted, {}).get("requests", 0) >= load.seen[promoted]

    wait_for(counted, 20, "the monitor to count HAProxy's answers")

    # kill -9 of the control plane: HAProxy keeps serving production; the next control
    # plane takes it over instead of starting another
    assert_edge_outlives_a_kill9(cp, "haproxy", https, pebble.root_pem, promoted)


def test_an_haproxy_edge_that_cannot_start_is_one_clear_error(home: Path) -> None:
    assert_start_errors(home, "haproxy")
