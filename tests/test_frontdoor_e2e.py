"""The production front door end to end: `tristage up --edge caddy` with Pebble as the CA,
a real project with public domains, real pushes, promote and rollback under HTTPS load."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from acme_ca import Pebble, free_port, https_client, needs_caddy, needs_pebble, peer_certificate
from conftest import git, run_cli
from test_deploy_helpers import ControlPlane, commit, deployment_id, make_project, push, wait_for

pytestmark = [pytest.mark.slow, needs_caddy, needs_pebble, pytest.mark.timeout(240)]


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[Pebble]:
    with Pebble(tmp_path / "pebble") as ca:
        yield ca


@pytest.fixture
def project(repo: Path) -> Path:
    make_project(repo)
    toml = (repo / "tristage.toml").read_text()
    toml = toml.replace(
        "[environments.production]\n",
        '[environments.production]\ndomains = ["shop.test", "www.shop.test"]\n',
    )
    toml = toml.replace(
        "[environments.preview]\n",
        '[environments.preview]\ndomains = ["staging.shop.test"]\n'
        'branch_domain = "{branch}.preview.shop.test"\n',
    )
    (repo / "tristage.toml").write_text(toml)
    commit(repo, {}, "public names")
    r = run_cli("check", cwd=repo)  # a command in the working copy reads tristage.toml again
    assert "domains" not in r.stderr, r.stderr
    return repo


@pytest.fixture
def cp(home: Path, pebble: Pebble) -> Iterator[ControlPlane]:
    http_port, https_port = free_port(), free_port()
    plane = ControlPlane(home, args=(
        "--edge", "caddy", "--edge-bind", "127.0.0.1", "--http-port", str(http_port),
        "--https-port", str(https_port), "--acme-ca", pebble.directory_url,
        "--acme-ca-root", str(pebble.listener_cert),
    )).start()  # fmt: skip
    plane.http_port, plane.https_port = http_port, https_port  # type: ignore[attr-defined]
    yield plane
    plane.stop()


class HttpsLoad:
    """Clients hammering https://HOST through the edge; failures and who answered."""

    def __init__(self, url: str, root_pem: str, workers: int = 4) -> None:
        self.url, self.root = url, root_pem
        self.failures: list[str] = []
        self.seen: dict[str, int] = {}
        self.requests = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def __enter__(self) -> HttpsLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(20)

    def answered(self, more: int = 20) -> None:
        with self._lock:
            target = self.requests + more
        wait_for(lambda: self.requests >= target, 30, f"{more} more requests")

    def _run(self) -> None:
        with https_client(self.root, timeout=20) as client:
            while not self._stop.is_set():
                try:
                    r = client.get(self.url)
                    ok = r.status_code == 200
                    dep = r.json()["deployment"] if ok else f"HTTP {r.status_code}"
                except (httpx.HTTPError, ValueError) as exc:
                    ok, dep = False, f"{type(exc).__name__}: {exc}"
                with self._lock:
                    self.requests += 1
                    if ok:
                        self.seen[dep] = self.seen.get(dep, 0) + 1
                    else:
                        self.failures.append(dep)


def test_production_on_its_domain_over_https_and_promote_rollback_drop_nothing(
    project: Path, cp: ControlPlane, pebble: Pebble
) -> None:
    https, http = cp.https_port, cp.http_port  # type: ignore[attr-defined]
    r = push(project, "main")
    assert r.returncode == 0, r.stderr + cp.output()
    first = deployment_id(r.stderr)
    with https_client(pebble.root_pem, timeout=60) as client:
        body = client.get(f"https://shop.test:{https}/").json()
        assert body["deployment"] == first and body["environment"] == "production"
        assert body["url"] == "https://shop.test"
        assert body["proto"] == "https"  # the edge's header, trusted by the router process
        assert {"shop.test", "www.shop.test", "shop.localhost"} <= set(body["hosts"])
        redirect = client.get(f"http://shop.test:{http}/pricing")
        assert redirect.status_code == 308
        assert redirect.headers["location"] == f"https://shop.test:{https}/pricing"
        alias = client.get(f"https://www.shop.test:{https}/")
        assert alias.headers["location"] == f"https://shop.test:{https}/"
    assert pebble.issued_by_pebble(peer_certificate(https, "shop.test", pebble.root_pem))
    # local hosts stay on the router as they were
    assert cp.serves("shop.localhost") == first

    # a branch host: its certificate on its first request; an unknown host: none
    git(project, "checkout", "-qb", "test")
    commit(project, {"note.txt": "v2\n"}, "v2")
    r = push(project, "test")
    assert r.returncode == 0, r.stderr
    preview = deployment_id(r.stderr)
    with https_client(pebble.root_pem, timeout=60) as client:
        body = client.get(f"https://test.preview.shop.test:{https}/").json()
        assert body["deployment"] == preview and body["url"] == "https://staging.shop.test"
        assert client.get(f"https://{preview}.preview.shop.test:{https}/").status_code == 200
        assert client.get(f"https://staging.shop.test:{https}/").json()["deployment"] == preview
    with pytest.raises(ssl.SSLError):
        peer_certificate(https, "nobody.preview.shop.test", pebble.root_pem)

    # promote and rollback, several times, under load through the edge
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
    assert "edge: configuration updated" not in cp.output()  # no Caddy reload on a switch

    # kill -9 of the control plane: Caddy and the router process keep serving production
    live = promoted
    cp.kill9()
    with https_client(pebble.root_pem, timeout=30) as client:
        for _ in range(20):
            body = client.get(f"https://shop.test:{https}/").json()
            assert body["deployment"] == live and body["proto"] == "https"
    # the next control plane takes both over instead of starting others
    cp.start()
    wait_for(lambda: "adopted the running caddy" in cp.output(), 30, "caddy adopted")
    assert "re-adopted" in cp.output()
    with https_client(pebble.root_pem, timeout=30) as client:
        body = client.get(f"https://shop.test:{https}/").json()
        assert body["deployment"] == live and body["proto"] == "https"


def test_an_edge_that_cannot_start_is_one_clear_error(home: Path) -> None:
    ports = ["--http-port", str(free_port()), "--https-port", str(free_port())]
    r = run_cli("up", "--port", "0", "--edge", "caddy", "--caddy", "/nonexistent/caddy", *ports)
    assert r.returncode == 1
    assert "error: the production edge needs caddy, and '/nonexistent/caddy' was not found" in (
        r.stderr
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = str(taken.getsockname()[1])
        r = run_cli("up", "--port", "0", "--edge", "caddy", "--edge-bind", "127.0.0.1",
                    "--http-port", busy, "--https-port", str(free_port()))  # fmt: skip
    assert r.returncode == 1
    assert "error: caddy did not start" in r.stderr and "address already in use" in r.stderr
    assert f"ports {busy} and" in r.stderr
    assert not (home / "controlplane.json").exists()
