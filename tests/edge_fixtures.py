"""What the tests of the production edges (Caddy, HAProxy) share.

- `pebble`: Pebble on loopback as the CA (one per test module);
- the checks an edge in front of an app passes the same way whichever it is: HTTPS with
  redirects, an alias and HSTS; forwarding headers set by the edge alone; a WebSocket
  echo; requests while the table switches;
- for the end-to-end tests: a project with public names, a control plane started with an
  edge and Pebble, HTTPS load through it, promote and rollback under that load, a control
  plane killed with -9 whose edge the next one adopts, and the start errors.

A test module takes a fixture by importing it: `from edge_fixtures import pebble_fixture`
(`# noqa: F401`); the tests name it `pebble` (`project` for `project_fixture`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve

from acme_ca import (
    Pebble,
    async_https_client,
    free_port,
    https_client,
    negotiated_protocol,
    peer_certificate,
    trust,
)
from conftest import git, run_cli
from test_deploy_helpers import (
    ControlPlane,
    Load,
    commit,
    deployment_id,
    make_project,
    push,
    wait_for,
)

Answer = tuple[int, bytes] | str  # (status, body), or the client's error

# what a client may send to pass for the edge: none of it reaches the app
FORGED = {
    "X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6", "Forwarded": "for=6.6.6.6",
    "X-Forwarded-Proto": "gopher", "X-Forwarded-Host": "evil.test",
    "X-Tristage-Edge": "guess",
}  # fmt: skip


@pytest.fixture(scope="module", name="pebble")
def pebble_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    with Pebble(tmp_path_factory.mktemp("pebble")) as ca:
        yield ca


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 100))


def headers_seen(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in headers}


# -- an edge in front of a test app -------------------------------------------------------
async def assert_https_redirects_and_hsts(pebble: Pebble, https_port: int, http_port: int) -> bytes:
    """shop.test (routed to an app answering "prod") over HTTPS with HSTS and HTTP/2, with
    a certificate from Pebble; plain HTTP and the alias www.shop.test redirect (308) to
    it, path and query kept. Returns the certificate (DER)."""
    async with async_https_client(pebble.root_pem, timeout=60) as client:
        r = await client.get(f"https://shop.test:{https_port}/")
        assert (r.status_code, r.content) == (200, b"prod")
        assert r.headers["strict-transport-security"] == "max-age=31536000"
        plain = await client.get(f"http://shop.test:{http_port}/a/b?c=d")
        assert plain.status_code == 308
        assert plain.headers["location"] == f"https://shop.test:{https_port}/a/b?c=d"
        alias = await client.get(f"https://www.shop.test:{https_port}/x?y=1")
        assert alias.status_code == 308
        assert alias.headers["location"] == f"https://shop.test:{https_port}/x?y=1"
    der: bytes = await asyncio.to_thread(peer_certificate, https_port, "shop.test", pebble.root_pem)
    assert pebble.issued_by_pebble(der)
    alpn = await asyncio.to_thread(negotiated_protocol, https_port, "shop.test", pebble.root_pem)
    assert alpn == "h2"
    return der


async def assert_forwarding_headers_from_the_edge(
    pebble: Pebble, https_port: int, seen: list[tuple[bytes, list[tuple[bytes, bytes]]]]
) -> None:
    """A request to shop.test with forged forwarding headers: the app (whose requests are
    `seen`) gets the edge's, none of the client's."""
    async with async_https_client(pebble.root_pem, timeout=60) as client:
        r = await client.get(f"https://shop.test:{https_port}/", headers=FORGED)
        assert r.status_code == 200
    got = headers_seen(seen[-1][1])
    assert got["x-forwarded-for"] == "127.0.0.1" and got["x-real-ip"] == "127.0.0.1"
    assert got["x-forwarded-proto"] == "https"
    assert got["x-forwarded-host"].startswith("shop.test")
    assert "forwarded" not in got and "x-tristage-edge" not in got


@contextlib.asynccontextmanager
async def websocket_echo() -> AsyncIterator[tuple[str, int]]:
    """A WebSocket server on loopback sending back what it gets; yields its address."""

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with ws_serve(echo, "127.0.0.1", 0) as server:
        yield "127.0.0.1", next(iter(server.sockets)).getsockname()[1]


async def assert_websocket_echo(https_port: int, root_pem: str) -> None:
    """wss://shop.test through the edge to `websocket_echo`: small and large messages."""
    async with ws_connect(
        f"wss://shop.test:{https_port}/socket", host="127.0.0.1", port=https_port,
        ssl=trust(root_pem), server_hostname="shop.test", open_timeout=60,
    ) as ws:  # fmt: skip
        for text in ("hello", "x" * 100_000):
            await ws.send(text)
            assert await ws.recv() == text


async def answers_during_switches(
    root_pem: str, url: str, switch: Callable[[int], Awaitable[None]], rounds: int = 100
) -> list[Answer]:
    """Eight clients requesting `url` while `switch(i)` runs `rounds` times; every
    answer (or error)."""
    answers: list[Answer] = []
    done = asyncio.Event()
    async with async_https_client(root_pem, timeout=60) as client:

        async def load() -> None:
            while not done.is_set():
                try:
                    r = await client.get(url)
                    answers.append((r.status_code, r.content))
                except httpx.HTTPError as exc:
                    answers.append(repr(exc))

        clients = [asyncio.ensure_future(load()) for _ in range(8)]
        for i in range(rounds):
            await switch(i)
            await asyncio.sleep(0.01)
        done.set()
        await asyncio.gather(*clients)
    return answers


# -- end to end: `tristage up --edge ...` -------------------------------------------------
@pytest.fixture(name="project")
def project_fixture(repo: Path) -> Path:
    """The hello app with public names: shop.test (and its alias www.shop.test) in
    production, staging.shop.test and {branch}.preview.shop.test for previews."""
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


def edge_control_plane(home: Path, pebble: Pebble, edge: str) -> ControlPlane:
    """A control plane started with `--edge EDGE` on loopback, Pebble its CA; its ports
    as `http_port` and `https_port`."""
    http_port, https_port = free_port(), free_port()
    plane = ControlPlane(home, args=(
        "--edge", edge, "--edge-bind", "127.0.0.1", "--http-port", str(http_port),
        "--https-port", str(https_port), "--acme-ca", pebble.directory_url,
        "--acme-ca-root", str(pebble.listener_cert),
    )).start()  # fmt: skip
    plane.http_port, plane.https_port = http_port, https_port  # type: ignore[attr-defined]
    return plane


class HttpsLoad(Load):
    """Clients hammering `url` over HTTPS (trusting `root_pem`) through the edge."""

    def __init__(self, url: str, root_pem: str, workers: int = 4) -> None:
        super().__init__(0, "", workers)
        self.url, self.root = url, root_pem

    def answered(self, more: int = 20, timeout: float = 30.0) -> None:
        super().answered(more, timeout)

    def _client(self) -> httpx.Client:
        return https_client(self.root, timeout=20)

    def _get(self, client: httpx.Client) -> httpx.Response:
        return client.get(self.url)


def assert_production_over_https(client: httpx.Client, https: int, http: int, dep: str) -> None:
    """shop.test serves `dep` over HTTPS (the edge's header trusted by the router) and
    plain HTTP redirects to it."""
    body = client.get(f"https://shop.test:{https}/").json()
    assert body["deployment"] == dep and body["environment"] == "production"
    assert body["url"] == "https://shop.test"
    assert body["proto"] == "https"
    redirect = client.get(f"http://shop.test:{http}/pricing")
    assert redirect.status_code == 308
    assert redirect.headers["location"] == f"https://shop.test:{https}/pricing"


def push_a_branch(project: Path) -> str:
    """A commit on a new branch `test`, pushed: its preview deployment's id."""
    git(project, "checkout", "-qb", "test")
    commit(project, {"note.txt": "v2\n"}, "v2")
    r = push(project, "test")
    assert r.returncode == 0, r.stderr
    return deployment_id(r.stderr)


def promote_and_roll_back_under_load(
    project: Path, cp: ControlPlane, https: int, root_pem: str, first: str, preview: str
) -> tuple[HttpsLoad, str]:
    """`preview` promoted, then rollbacks to `first` and back, twice, under HTTPS load on
    shop.test: no request failed, both answered. The load and the promoted deployment."""
    with HttpsLoad(f"https://shop.test:{https}/", root_pem) as load:
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
    return load, promoted


def assert_edge_outlives_a_kill9(
    cp: ControlPlane, edge: str, https: int, root_pem: str, live: str
) -> None:
    """kill -9 of the control plane: the edge keeps serving `live` on shop.test; the next
    control plane adopts the running edge instead of starting another."""
    cp.kill9()
    with https_client(root_pem, timeout=30) as client:
        for _ in range(20):
            body = client.get(f"https://shop.test:{https}/").json()
            assert body["deployment"] == live and body["proto"] == "https"
    cp.start()
    wait_for(lambda: f"adopted the running {edge}" in cp.output(), 30, f"{edge} adopted")
    with https_client(root_pem, timeout=30) as client:
        body = client.get(f"https://shop.test:{https}/").json()
        assert body["deployment"] == live and body["proto"] == "https"


def assert_start_errors(home: Path, edge: str) -> str:
    """`tristage up --edge EDGE` with a binary that is not there, then with its HTTP port
    taken: one clear error each, no control plane left. The second one's stderr."""
    ports = ["--http-port", str(free_port()), "--https-port", str(free_port())]
    r = run_cli("up", "--port", "0", "--edge", edge, f"--{edge}", f"/nonexistent/{edge}", *ports)
    assert r.returncode == 1
    missing = f"error: the production edge needs {edge}, and '/nonexistent/{edge}' was not found"
    assert missing in r.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = str(taken.getsockname()[1])
        r = run_cli("up", "--port", "0", "--edge", edge, "--edge-bind", "127.0.0.1",
                    "--http-port", busy, "--https-port", str(free_port()))  # fmt: skip
    assert r.returncode == 1
    assert f"error: {edge} did not start" in r.stderr, r.stderr
    assert f"ports {busy} and" in r.stderr
    assert not (home / "controlplane.json").exists()
    return r.stderr
