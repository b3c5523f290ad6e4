"""The HAProxy front door end to end: `tristage up --edge haproxy` with Pebble as the CA,
a real project with public domains, real pushes, promote and rollback under HTTPS load
(straight from HAProxy to the releases), and a control plane killed with -9."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from acme_ca import Pebble, free_port, https_client, needs_pebble, peer_certificate
from conftest import git, run_cli
from haproxy_front import needs_haproxy
from test_deploy_helpers import ControlPlane, commit, deployment_id, push, wait_for
from test_frontdoor_e2e import HttpsLoad, project  # noqa: F401  (a fixture)
from tristage.edges.haproxy import runtime_api
from tristage.paths import socket_path

pytestmark = [pytest.mark.slow, needs_haproxy, needs_pebble, pytest.mark.timeout(300)]


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[Pebble]:
    with Pebble(tmp_path / "pebble") as ca:
        yield ca


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
    http_port, https_port = free_port(), free_port()
    plane = ControlPlane(home, args=(
        "--edge", "haproxy", "--edge-bind", "127.0.0.1", "--http-port", str(http_port),
        "--https-port", str(https_port), "--acme-ca", pebble.directory_url,
        "--acme-ca-root", str(pebble.listener_cert),
    )).start()  # fmt: skip
    plane.http_port, plane.https_port = http_port, https_port  # type: ignore[attr-defined]
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
    project: Path,  # noqa: F811
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
        body = client.get(f"https://shop.test:{https}/").json()
        assert body["deployment"] == first and body["environment"] == "production"
        assert body["url"] == "https://shop.test"
        assert body["proto"] == "https"
        redirect = client.get(f"http://shop.test:{http}/pricing")
        assert redirect.status_code == 308
        assert redirect.headers["location"] == f"https://shop.test:{https}/pricing"
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
    git(project, "checkout", "-qb", "test")
    commit(project, {"note.txt": "v2\n"}, "v2")
    r = push(project, "test")
    assert r.returncode == 0, r.stderr
    preview = deployment_id(r.stderr)
    host = "test.preview.shop.test"
    wait_for(lambda: has_certificate(https, host, pebble.root_pem), 60, "the branch's cert")
    with https_client(pebble.root_pem, timeout=60) as client:
        body = client.get(f"https://{host}:{https}/").json()
        assert body["deployment"] == preview and body["url"] == "https://staging.shop.test"
    with pytest.raises(ssl.SSLError):
        peer_certificate(https, "nobody.preview.shop.test", pebble.root_pem)

    # promote and rollback, several times, under load through HAProxy
    with HttpsLoad(f"https://shop.test:{https}/", pebble.root_pem) as load:
        load.answered()
        r = run_cli("promote", preview, cwd=project)
        assert r.returncode == 0, r.stderr
        promoted = r.stdout.split("production deployment ")[1].split()[0]
        load.answered()
        for target in (first, promoted, first, promoted):
            r = run_cli("rollback", "--to", target, cwd=project)
            assert r.returncode == 0, r.stderr
            wait_for(lambda t=target: cp.serves("shop.localhost") == t, 20, f"{target} live")
            load.answered()
    assert load.failures == [], load.failures[:5]
    assert load.requests > 100
    assert set(load.seen) == {first, promoted}
    assert served_by_haproxy(home, promoted) > 0
    assert "Reload" not in (edge_dir(home) / "haproxy.log").read_text()

    # the monitor counts what HAProxy relayed (the router never saw these requests)
    def counted() -> bool:
        r = run_cli("metrics", "--env", "production", "--json", cwd=project)
        rows = {m["deployment"]: m for m in json.loads(r.stdout)}
        return rows.get(promoted, {}).get("requests", 0) >= load.seen[promoted]

    wait_for(counted, 20, "the monitor to count HAProxy's answers")

    # kill -9 of the control plane: HAProxy keeps serving production
    live = promoted
    cp.kill9()
    with https_client(pebble.root_pem, timeout=30) as client:
        for _ in range(20):
            body = client.get(f"https://shop.test:{https}/").json()
            assert body["deployment"] == live and body["proto"] == "https"
    # the next control plane takes it over instead of starting another
    cp.start()
    wait_for(lambda: "adopted the running haproxy" in cp.output(), 30, "haproxy adopted")
    with https_client(pebble.root_pem, timeout=30) as client:
        body = client.get(f"https://shop.test:{https}/").json()
        assert body["deployment"] == live and body["proto"] == "https"


def test_an_haproxy_edge_that_cannot_start_is_one_clear_error(home: Path) -> None:
    ports = ["--http-port", str(free_port()), "--https-port", str(free_port())]
    r = run_cli("up", "--port", "0", "--edge", "haproxy", "--haproxy", "/nonexistent/haproxy",
                *ports)  # fmt: skip
    assert r.returncode == 1
    assert (
        "error: the production edge needs haproxy, and '/nonexistent/haproxy' was not found"
        in r.stderr
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = str(taken.getsockname()[1])
        r = run_cli("up", "--port", "0", "--edge", "haproxy", "--edge-bind", "127.0.0.1",
                    "--http-port", busy, "--https-port", str(free_port()))  # fmt: skip
    assert r.returncode == 1
    assert "error: haproxy did not start" in r.stderr, r.stderr
    assert f"ports {busy} and" in r.stderr
    assert not (home / "controlplane.json").exists()
