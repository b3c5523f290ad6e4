"""The `Edge` protocol's conformance suite: one set of tests run against every edge
(the embedded router, on a real loopback port; the production edge, a real Caddy in front
of it, reached through Caddy's HTTP port) and the fake of `fake_edge.py`, in front of real
upstream servers (uvicorn on free loopback ports).

An `Edge` adapter gives each test the edge in the core's terms: replace the route table,
send a request for a host, read requests in flight per upstream and counters per
deployment. Only the router is reached over a socket; the fake is called directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
import uvicorn

from acme_ca import CADDY
from caddy_front import caddy_front
from fake_edge import FakeEdge
from haproxy_front import HAPROXY, Front, haproxy_front
from tristage.edges.embedded_server import bind_socket
from tristage.edges.router import DeploymentStats, Route, Router, RouteTable

pytestmark = pytest.mark.timeout(60)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Edge(Protocol):
    def replace(self, routes: Mapping[str, Route]) -> None: ...
    def snapshot(self) -> Mapping[str, Route]: ...
    def inflight(self, upstream: tuple[str, int]) -> int: ...
    def stats(self) -> dict[str, DeploymentStats]: ...
    async def request(self, host: str, path: str = "/") -> tuple[int, bytes]: ...


class RouterEdge:
    def __init__(self, router: Router, client: httpx.AsyncClient, port: int | None = None) -> None:
        self.router, self.client = router, client
        self.raw_port = port or router.port  # where requests go: the router, or Caddy

    def replace(self, routes: Mapping[str, Route]) -> None:
        self.router.table.replace(routes)

    def snapshot(self) -> Mapping[str, Route]:
        return self.router.table.snapshot()

    def inflight(self, upstream: tuple[str, int]) -> int:
        return self.router.inflight(upstream)

    def stats(self) -> dict[str, DeploymentStats]:
        return self.router.stats()

    async def request(self, host: str, path: str = "/") -> tuple[int, bytes]:
        r = await self.client.get(f"http://127.0.0.1:{self.raw_port}{path}", headers={"host": host})
        return r.status_code, r.content


class FakeAdapter:
    def __init__(self, fake: FakeEdge) -> None:
        self.fake = fake
        self.replace, self.snapshot = fake.replace, fake.snapshot
        self.inflight, self.stats = fake.inflight, fake.stats

    async def request(self, host: str, path: str = "/") -> tuple[int, bytes]:
        return await self.fake.handle(host, path)


@contextlib.asynccontextmanager
async def open_router() -> AsyncIterator[Edge]:
    router = Router(RouteTable(), connect_timeout=2.0)
    await router.start(port=0)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            yield RouterEdge(router, client)
    finally:
        await router.stop()


@contextlib.asynccontextmanager
async def open_fake() -> AsyncIterator[Edge]:
    fake = FakeEdge()
    try:
        yield FakeAdapter(fake)
    finally:
        await fake.close()


@contextlib.asynccontextmanager
async def open_caddy() -> AsyncIterator[Edge]:
    """Caddy in front of the router: counters and the table are the router's, every
    request goes through Caddy (its plain HTTP port serves `*.localhost` as it is)."""
    with tempfile.TemporaryDirectory(prefix="tristage-edge-") as tmp:
        async with caddy_front(Path(tmp)) as front, httpx.AsyncClient(timeout=10) as client:
            yield RouterEdge(front.router, client, front.http_port)


class HAProxyAdapter(RouterEdge):
    """HAProxy in front of the router: a replace goes to both (what the control plane
    does), hosts with running releases are served by HAProxy straight, the others by the
    router; counters and requests in flight are the two edges' together."""

    def __init__(self, front: Front, client: httpx.AsyncClient) -> None:
        super().__init__(front.router, client, front.http_port)
        self.front = front

    def replace(self, routes: Mapping[str, Route]) -> None:
        self.front.replace(routes)

    def inflight(self, upstream: tuple[str, int]) -> int:
        return self.front.inflight(upstream)

    def stats(self) -> dict[str, DeploymentStats]:
        return self.front.stats()


@contextlib.asynccontextmanager
async def open_haproxy() -> AsyncIterator[Edge]:
    with tempfile.TemporaryDirectory(prefix="tristage-edge-") as tmp:
        async with haproxy_front(Path(tmp)) as front, httpx.AsyncClient(timeout=10) as client:
            yield HAProxyAdapter(front, client)


EDGES = {"router": open_router, "fake": open_fake, "caddy": open_caddy, "haproxy": open_haproxy}


@pytest.fixture(params=sorted(EDGES))
def opener(
    request: pytest.FixtureRequest,
) -> Callable[[], contextlib.AbstractAsyncContextManager[Edge]]:
    if request.param == "caddy" and CADDY is None:
        pytest.skip("caddy is not installed (apt-get install caddy)")
    if request.param == "haproxy" and HAPROXY is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    return EDGES[request.param]


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 40))


class Upstream:
    """A real uvicorn server on a free loopback port: `/` answers its name,
    `/status/N` answers N, `/slow` waits for `release` first."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.release = asyncio.Event()
        self.slow_started = asyncio.Event()
        self.server: uvicorn.Server | None = None
        self.port = 0
        self.seen: list[tuple[bytes, list[tuple[bytes, bytes]]]] = []  # (target, headers)

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    async def __aenter__(self) -> Upstream:
        sock = bind_socket("127.0.0.1", 0)
        config = uvicorn.Config(self.app, interface="asgi3", lifespan="off", log_config=None,
                                log_level="warning", access_log=False)  # fmt: skip
        server = uvicorn.Server(config)
        config.load()
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        self.server, self.port = server, sock.getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.force_exit = True
            await self.server.shutdown()
            self.server = None

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        self.seen.append((scope.get("raw_path") or path.encode(), list(scope["headers"])))
        status = 200
        if path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
        elif path == "/slow":
            self.slow_started.set()
            await self.release.wait()
        body = self.name.encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(body)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})


def route(dep: str | None, up: Upstream | None, env: str = "production") -> Route:
    return Route("shop", env, dep, up.addr if up else None)


# -- hosts and pages ------------------------------------------------------------------


def test_unknown_host_gets_its_own_page_naming_it(opener: Any) -> None:
    async def main() -> None:
        async with opener() as edge, Upstream("a") as up:
            edge.replace({"shop.localhost": route("d1", up)})
            status, body = await edge.request("nobody.localhost")
            assert status == 404 and b"nobody.localhost" in body
            assert body != b"a"  # the edge's own page, not an upstream's answer
            # a host that is not a name: refused as such (Caddy), or named, escaped
            status, body = await edge.request("<nobody>.localhost")
            assert status in (400, 404) and b"<nobody>" not in body
            if status == 404:
                assert b"&lt;nobody&gt;.localhost" in body
            assert await edge.request("Shop.LOCALHOST:8080") == (200, b"a")  # case, port
            assert set(edge.stats()) == {"d1"}  # unknown hosts count for no deployment

    run(main())


def test_a_route_without_upstream_is_503_and_a_dead_upstream_502(opener: Any) -> None:
    async def main() -> None:
        async with opener() as edge:
            dead = Upstream("dead")
            async with dead:
                pass  # started, then stopped: its port refuses connections
            dead_route = Route("shop", "preview", "d-dead", ("127.0.0.1", dead.port))
            edge.replace({"idle.localhost": route("d-idle", None), "dead.localhost": dead_route})
            assert (await edge.request("idle.localhost"))[0] == 503
            assert (await edge.request("dead.localhost"))[0] == 502
            stats = edge.stats()
            assert stats["d-idle"].status_5xx == 1 and stats["d-idle"].upstream_errors == 0
            assert stats["d-dead"].status_5xx == 1 and stats["d-dead"].upstream_errors == 1

    run(main())


# -- counters -------------------------------------------------------------------------


def test_counters_are_kept_per_deployment(opener: Any) -> None:
    async def main() -> None:
        async with opener() as edge, Upstream("a") as a, Upstream("b") as b:
            edge.replace({"a.localhost": route("dep-a", a), "b.localhost": route("dep-b", b)})
            for path in ("/", "/", "/status/302", "/status/404", "/status/500", "/"):
                await edge.request("a.localhost", path)
            for _ in range(2):
                assert await edge.request("b.localhost") == (200, b"b")
            stats = edge.stats()
            sa, sb = stats["dep-a"], stats["dep-b"]
            assert (sa.requests, sa.status_2xx, sa.status_3xx, sa.status_4xx, sa.status_5xx) == (
                6, 3, 1, 1, 1
            )  # fmt: skip
            assert (sb.requests, sb.status_2xx, sb.upstream_errors) == (2, 2, 0)
            for s in (sa, sb):
                assert s.p50_ms is not None and s.p99_ms is not None
                assert 0 <= s.p50_ms <= s.p99_ms
                assert s.last_request_at is not None

    run(main())


# -- the route table, replaced atomically ---------------------------------------------


def test_a_replace_that_fails_part_way_keeps_the_old_table(opener: Any) -> None:
    async def main() -> None:
        async with opener() as edge, Upstream("old") as old, Upstream("new") as new:
            edge.replace({"a.localhost": route("d1", old), "b.localhost": route("d1", old)})
            bad: dict[Any, Route] = {"a.localhost": route("d2", new), None: route("d2", new)}
            with pytest.raises(AttributeError):  # a host that is not a string
                edge.replace(bad)
            assert await edge.request("a.localhost") == (200, b"old")
            assert await edge.request("b.localhost") == (200, b"old")
            assert {r.deployment for r in edge.snapshot().values()} == {"d1"}

    run(main())


def test_no_reader_sees_a_half_replaced_table(opener: Any) -> None:
    async def main() -> None:
        async with opener() as edge:
            hosts = [f"h{i}.localhost" for i in range(200)]
            versions = [{h: route(f"v{v}", None) for h in hosts} for v in range(2)]
            edge.replace(versions[0])
            seen: list[set[str | None]] = []
            stop = threading.Event()

            def reader() -> None:
                while not stop.is_set():
                    table = edge.snapshot()
                    seen.append({table[h].deployment for h in hosts})

            t = threading.Thread(target=reader)
            t.start()
            for i in range(300):
                edge.replace(versions[i % 2])
                await asyncio.sleep(0)
            stop.set()
            t.join(10)
            assert seen and all(len(s) == 1 for s in seen)

    run(main())


def test_requests_during_replaces_all_succeed_and_then_go_to_the_new_upstream(
    opener: Any,
) -> None:
    async def main() -> None:
        async with opener() as edge, Upstream("one") as one, Upstream("two") as two:
            tables = [{"shop.localhost": route("d1", one)}, {"shop.localhost": route("d2", two)}]
            edge.replace(tables[0])
            answers: list[tuple[int, bytes]] = []
            done = asyncio.Event()

            async def client() -> None:
                while not done.is_set():
                    answers.append(await edge.request("shop.localhost"))

            clients = [asyncio.ensure_future(client()) for _ in range(8)]
            for i in range(40):
                edge.replace(tables[(i + 1) % 2])
                await asyncio.sleep(0.005)
            edge.replace(tables[1])
            done.set()
            await asyncio.gather(*clients)
            assert len(answers) > 40
            assert {a for a in answers} <= {(200, b"one"), (200, b"two")}
            assert await edge.request("shop.localhost") == (200, b"two")
            edge.replace({})
            assert (await edge.request("shop.localhost"))[0] == 404

    run(main())


# -- drain ----------------------------------------------------------------------------


def test_a_replaced_upstream_drains_its_requests_in_flight(opener: Any) -> None:
    async def main() -> None:
        async with opener() as edge, Upstream("old") as old, Upstream("new") as new:
            edge.replace({"shop.localhost": route("d1", old)})
            assert edge.inflight(old.addr) == 0
            slow = [
                asyncio.ensure_future(edge.request("shop.localhost", "/slow")) for _ in range(3)
            ]
            await asyncio.wait_for(old.slow_started.wait(), 10)
            for _ in range(100):
                if edge.inflight(old.addr) == 3:
                    break
                await asyncio.sleep(0.01)
            assert edge.inflight(old.addr) == 3
            edge.replace({"shop.localhost": route("d2", new)})
            assert await edge.request("shop.localhost") == (200, b"new")
            assert edge.inflight(old.addr) == 3  # still in flight after the swap
            assert edge.inflight(new.addr) == 0
            old.release.set()
            assert await asyncio.gather(*slow) == [(200, b"old")] * 3
            assert edge.inflight(old.addr) == 0
            assert edge.stats()["d1"].requests == 3 and edge.stats()["d2"].requests == 1

    run(main())


# -- what an edge that parses HTTP itself must refuse ----------------------------------
# (RFC 9112 3.2; the fake is handed a host, not bytes: these apply to the router)

AMBIGUOUS = {
    "two Host headers": b"GET / HTTP/1.1\r\nHost: a.localhost\r\nHost: b.localhost\r\n",
    "no Host header": b"GET / HTTP/1.1\r\n",
}


async def raw_exchange(port: int, head: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + b"Connection: close\r\n\r\n")
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


@pytest.mark.parametrize("case", sorted(AMBIGUOUS))
def test_a_request_naming_its_host_ambiguously_is_refused(opener: Any, case: str) -> None:
    if opener is open_fake:
        pytest.skip("the fake edge is handed a host, it parses no HTTP")

    async def main() -> None:
        async with opener() as edge, Upstream("a") as a, Upstream("b") as b:
            edge.replace({"a.localhost": route("da", a), "b.localhost": route("db", b)})
            assert isinstance(edge, RouterEdge) and edge.raw_port
            answer = await raw_exchange(edge.raw_port, AMBIGUOUS[case])
            assert answer.startswith(b"HTTP/1.1 400 "), answer[:80]
            assert a.seen == [] and b.seen == []

    run(main())
