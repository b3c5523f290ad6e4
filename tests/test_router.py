"""The embedded router over real loopback sockets: real upstream servers, real HTTP clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import uvicorn

from tristage.edges.embedded_server import bind_socket
from tristage.edges.router import Route, Router, RouteTable
from tristage.edges.router.headers import end_to_end, upstream_request_headers
from tristage.edges.runtime import free_port

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

pytestmark = pytest.mark.timeout(60)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


class Upstream:
    """A real uvicorn server on a free loopback port, in the test's loop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.client_ports: list[int] = []
        self.paths: list[str] = []
        self.connections = 0
        self.gates: dict[str, asyncio.Event] = {}
        self.server: uvicorn.Server | None = None
        self.port = 0

    def gate(self, key: str) -> asyncio.Event:
        return self.gates.setdefault(key, asyncio.Event())

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    async def start(self) -> Upstream:
        sock = bind_socket("127.0.0.1", 0)
        config = uvicorn.Config(
            self.app,
            interface="asgi3",
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
        )
        config.load()
        upstream, base = self, config.http_protocol_class

        class Counting(base):  # type: ignore[misc, valid-type]
            def connection_made(self, transport: Any) -> None:
                upstream.connections += 1
                super().connection_made(transport)

        config.http_protocol_class = Counting
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        self.server, self.port = server, sock.getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.force_exit = True
            await self.server.shutdown()

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # no WebSocket route here: refuse (uvicorn says 403)
            self.paths.append("ws:" + scope["path"])
            await send({"type": "websocket.close"})
            return
        assert scope["type"] == "http"
        self.client_ports.append(scope["client"][1])
        path = scope["path"]
        self.paths.append(path)
        status, body, extra = 200, b"", []
        if path == "/count":
            # Count the request body; signal after the first chunk arrives.
            total, chunks = 0, 0
            while True:
                msg = await receive()
                total += len(msg.get("body", b""))
                chunks += 1
                self.gate("first-chunk").set()
                if not msg.get("more_body"):
                    break
            body = json.dumps({"bytes": total, "chunks": chunks}).encode()
        elif path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first;", "more_body": True})
            await self.gate("client-saw-first").wait()
            for i in range(3):
                await send({"type": "http.response.body", "body": b"%d;" % i, "more_body": True})
            await send({"type": "http.response.body", "body": b"end"})
            return
        elif path == "/endless":
            await send({"type": "http.response.start", "status": 200, "headers": []})

            async def until_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass

            gone = asyncio.ensure_future(until_disconnect())
            while not gone.done():
                await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
                await asyncio.sleep(0.01)
            self.gate("endless-ended").set()
            return
        elif path == "/no-content":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        elif path == "/slow":
            await self.gate("release").wait()
            body = self.name.encode()
        elif path == "/headers":
            body = json.dumps(
                {k.decode(): v.decode() for k, v in scope["headers"]}, sort_keys=True
            ).encode()
        elif path == "/refuse":
            # answer before reading the upload, and close (as an app refusing a large body does)
            status, body = 413, b"too large"
            extra = [(b"connection", b"close")]
        elif path == "/teapot":
            status, body = 418, b"short and stout"
        elif path.startswith("/echo-path"):
            body = scope["raw_path"] + b"?" + scope["query_string"]
        else:
            body = self.name.encode()
            extra = [(b"x-upstream", self.name.encode())]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), *extra],
            }
        )
        await send({"type": "http.response.body", "body": body})


class Stack:
    def __init__(self, router: Router, port: int, ups: list[Upstream]) -> None:
        self.router, self.port, self.ups = router, port, ups
        self.base = f"http://127.0.0.1:{port}"


def route(up: Upstream | None, dep: str | None = "dep-a", env: str = "production") -> Route:
    return Route("myapp", env, dep, up.addr if up else None)


async def stack(
    n_upstreams: int = 1, internal_app: Any = None, **options: Any
) -> tuple[Router, RouteTable, list[Upstream], str]:
    ups = [await Upstream(name).start() for name in "AB"[:n_upstreams]]
    table = RouteTable()
    table.replace({"myapp.localhost": route(ups[0])})
    router = Router(table, internal_app=internal_app, **options)
    port = await router.start(host="127.0.0.1", port=0)
    return router, table, ups, f"http://127.0.0.1:{port}"


async def teardown(router: Router, ups: list[Upstream]) -> None:
    await router.stop()
    for u in ups:
        await u.stop()


# --- routing ------------------------------------------------------------------------------


def test_route_table_lookup_strips_port_and_case() -> None:
    t = RouteTable()
    r = Route("p", "production", "d1", ("127.0.0.1", 1))
    t.replace({"MyApp.Localhost": r})
    assert t.lookup("myapp.localhost") is r
    assert t.lookup("MYAPP.localhost:8080") is r
    assert t.lookup("myapp.localhost.") is r
    assert t.lookup("other.localhost") is None
    assert t.lookup("") is None


def test_routes_by_host_with_and_without_port() -> None:
    async def main() -> None:
        router, table, ups, base = await stack(2)
        try:
            table.replace(
                {
                    "myapp.localhost": route(ups[0]),
                    "preview.myapp.localhost": route(ups[1], "dep-b", "preview"),
                }
            )
            port = base.rsplit(":", 1)[1]
            async with httpx.AsyncClient() as c:
                for host, want in [
                    ("myapp.localhost", "A"),
                    (f"MyApp.localhost:{port}", "A"),
                    ("preview.myapp.localhost", "B"),
                    (f"preview.myapp.localhost:{port}", "B"),
                ]:
                    r = await c.get(base + "/", headers={"host": host})
                    assert r.status_code == 200, host
                    assert r.text == want, host
                    assert r.headers["x-upstream"] == want
                r = await c.get(
                    base + "/echo-path/a%20b/%2F",
                    params={"q": "1 2"},
                    headers={"host": "myapp.localhost"},
                )
                assert r.text == "/echo-path/a%20b/%2F?q=1+2"
        finally:
            await teardown(router, ups)

    run(main())


def test_unknown_host_gets_plain_404_naming_the_host() -> None:
    async def main() -> None:
        router, _table, ups, base = await stack()
        try:
            async with httpx.AsyncClient() as c:
                r = await c.get(base + "/x", headers={"host": "nope.localhost:8080"})
                assert r.status_code == 404
                assert r.headers["content-type"].startswith("text/html")
                assert "nope.localhost" in r.text
                assert "myapp" not in r.text  # other hosts are not listed
                r = await c.get(base + "/", headers={"host": "<script>.localhost"})
                assert r.status_code == 404
                assert "<script>" not in r.text and "&lt;script&gt;" in r.text
        finally:
            await teardown(router, ups)

    run(main())


def test_503_when_route_has_no_upstream_and_502_when_upstream_down() -> None:
    async def main() -> None:
        router, table, ups, base = await stack()
        try:
            dead = ("127.0.0.1", free_port())
            table.replace(
                {
                    "idle.myapp.localhost": Route("myapp", "preview", None, None),
                    "down.myapp.localhost": Route("myapp", "production", "dep-down", dead),
                }
            )
            async with httpx.AsyncClient() as c:
                r = await c.get(base + "/", headers={"host": "idle.myapp.localhost"})
                assert r.status_code == 503
                assert "idle.myapp.localhost" in r.text
                r = await c.get(base + "/", headers={"host": "down.myapp.localhost"})
                assert r.status_code == 502
                assert "down.myapp.localhost" in r.text
                assert str(dead[1]) not in r.text  # the upstream address stays private
            assert router.inflight(dead) == 0
            s = router.stats()["dep-down"]
            assert (s.requests, s.status_5xx, s.upstream_errors) == (1, 1, 1)
        finally:
            await teardown(router, ups)

    run(main())


# --- headers ------------------------------------------------------------------------------


def test_hop_by_hop_headers_are_dropped() -> None:
    h = [
        (b"Connection", b"keep-alive, X-Private-Hop"),
        (b"X-Private-Hop", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Upgrade", b"h2c"),
        (b"Content-Type", b"text/plain"),
    ]
    assert end_to_end(h) == [(b"Content-Type", b"text/plain")]
    out = upstream_request_headers(
        [(b"host", b"myapp.localhost"), (b"x-forwarded-for", b"6.6.6.6")], "127.0.0.1", "http"
    )
    assert (b"x-forwarded-for", b"127.0.0.1") in out
    assert (b"x-forwarded-for", b"6.6.6.6") not in out  # the edge does not trust client claims


def test_forwarded_headers_reach_the_upstream() -> None:
    async def main() -> None:
        router, _table, ups, base = await stack()
        try:
            port = base.rsplit(":", 1)[1]
            async with httpx.AsyncClient() as c:
                r = await c.get(
                    base + "/headers",
                    headers={
                        "host": f"myapp.localhost:{port}",
                        "connection": "keep-alive, x-drop-me",
                        "x-drop-me": "1",
                        "x-keep-me": "2",
                    },
                )
            seen = r.json()
            assert seen["x-forwarded-for"] == "127.0.0.1"
            assert seen["x-forwarded-proto"] == "http"
            assert seen["x-forwarded-host"] == f"myapp.localhost:{port}"
            assert seen["host"] == f"myapp.localhost:{port}"
            assert seen["x-keep-me"] == "2"
            assert "x-drop-me" not in seen
        finally:
            await teardown(router, ups)

    run(main())


def test_behind_the_production_edge_its_forwarding_headers_are_kept_on_every_path() -> None:
    async def main() -> None:
        router, _table, ups, base = await stack()
        router.trust_edge("edge-secret")
        try:
            async with httpx.AsyncClient() as c:
                for method in ("GET", "POST"):  # the fast path and the ASGI path
                    r = await c.request(
                        method,
                        base + "/headers",
                        content=b"x" if method == "POST" else None,
                        headers={
                            "host": "myapp.localhost",
                            "x-tristage-edge": "edge-secret",
                            "x-forwarded-for": "203.0.113.7",
                            "x-forwarded-proto": "https",
                        },
                    )
                    seen = r.json()
                    assert seen["x-forwarded-for"] == "203.0.113.7", method
                    assert seen["x-forwarded-proto"] == "https", method
                    assert "x-tristage-edge" not in seen, method
                    # without the edge's token the client's claims are replaced
                    r = await c.request(
                        method,
                        base + "/headers",
                        content=b"x" if method == "POST" else None,
                        headers={
                            "host": "myapp.localhost",
                            "x-tristage-edge": "guess",
                            "x-forwarded-for": "203.0.113.7",
                        },
                    )
                    seen = r.json()
                    assert seen["x-forwarded-for"] == "127.0.0.1", method
                    assert "x-tristage-edge" not in seen, method
        finally:
            await teardown(router, ups)

    run(main())


# --- streaming ----------------------------------------------------------------------------

MB = 1024 * 1024


def test_large_request_body_is_streamed_not_buffered() -> None:
    async def main() -> None:
        router, _table, ups, base = await stack()
        up = ups[0]
        try:

            async def body() -> AsyncIterator[bytes]:
                yield b"x" * MB
                # The upstream must see the first chunk before the client sends the rest:
                # a router that buffered the whole body would deadlock here.
                await asyncio.wait_for(up.gate("first-chunk").wait(), 10)
                for _ in range(19):
                    yield b"y" * MB

            async with httpx.AsyncClient(timeout=20) as c:
                r = await c.post(
                    base + "/count", content=body(), headers={"host": "myapp.localhost"}
                )
                assert r.status_code == 200
                assert r.json()["bytes"] == 20 * MB
                assert r.json()["chunks"] > 1
                # Same with a Content-Length instead of chunked encoding.
                up.gates.clear()
                r = await c.post(
                    base + "/count",
                    content=body(),
                    headers={"host": "myapp.localhost", "content-length": str(20 * MB)},
                )
                assert r.json()["bytes"] == 20 * MB
        finally:
            await teardown(router, ups)

    run(main())


def test_response_is_streamed_incrementally() -> None:
    async def main() -> None:
        router, _table, ups, base = await stack()
        up = ups[0]
        try:
            async with httpx.AsyncClient(timeout=10) as c:
                req = c.build_request("GET", base + "/stream", headers={"host": "myapp.localhost"})
                resp = await c.send(req, stream=True)
                got = b""
                it = resp.aiter_raw()
                # The first piece arrives while the upstream is still holding the rest.
                while not got.startswith(b"first;"):
                    got += await asyncio.wait_for(it.__anext__(), 5)
                up.gate("client-saw-first").set()
                async for chunk in it:
                    got += chunk
                await resp.aclose()
            assert got == b"first;0;1;2;end"
        finally:
            await teardown(router, ups)

    run(main())


# --- connections and swaps ----------------------------------------------------------------


def test_upstream_connections_are_kept_alive_and_reused() -> None:
    async def main() -> None:
        router, _table, ups, base = await stack()
        try:
            async with httpx.AsyncClient() as c:
                for _ in range(20):
                    r = await c.get(base + "/", headers={"host": "myapp.localhost"})
                    assert r.status_code == 200
            assert len(ups[0].client_ports) == 20
            assert ups[0].connections == 1
        finally:
            await teardown(router, ups)

    run(main())


def test_atomic_swap_under_load_loses_nothing_and_drains_old_upstream() -> None:
    async def main() -> None:
        router, table, ups, base = await stack(2)
        a, b = ups
        routes = [{"myapp.localhost": route(a, "dep-a")}, {"myapp.localhost": route(b, "dep-b")}]
        try:
            async with httpx.AsyncClient(timeout=10) as c:
                hdr = {"host": "myapp.localhost"}
                # A slow request starts on A ...
                slow = asyncio.create_task(c.get(base + "/slow", headers=hdr))
                while router.inflight(a.addr) == 0:
                    await asyncio.sleep(0.005)
                # ... the table flips to B; new requests go to B at once.
                table.replace(routes[1])
                assert (await c.get(base + "/", headers=hdr)).text == "B"
                assert router.inflight(a.addr) == 1
                assert not slow.done()
                a.gate("release").set()
                r = await slow
                assert r.status_code == 200 and r.text == "A"
                assert router.inflight(a.addr) == 0

                # Continuous load while the table flips back and forth.
                stop = asyncio.Event()
                results: list[tuple[int, str]] = []
                failures: list[BaseException] = []

                async def worker() -> None:
                    while not stop.is_set():
                        try:
                            resp = await c.get(base + "/", headers=hdr)
                            results.append((resp.status_code, resp.text))
                        except httpx.HTTPError as e:
                            failures.append(e)

                workers = [asyncio.create_task(worker()) for _ in range(8)]
                for i in range(40):
                    table.replace(routes[i % 2])
                    await asyncio.sleep(0.005)
                stop.set()
                await asyncio.gather(*workers)
            assert failures == []
            assert len(results) > 40
            assert {s for s, _ in results} == {200}
            assert {t for _, t in results} == {"A", "B"}
            stats = router.stats()
            assert stats["dep-a"].requests + stats["dep-b"].requests == len(results) + 2
        finally:
            await teardown(router, ups)

    run(main())


# --- internal app and stats ---------------------------------------------------------------


def test_internal_paths_go_to_internal_app_with_route_in_scope() -> None:
    seen: list[Route] = []

    async def internal(scope: Scope, receive: Receive, send: Send) -> None:
        r = scope["tristage.route"]
        seen.append(r)
        body = f"{r.project}/{r.environment}{scope['path']}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def main() -> None:
        router, table, ups, base = await stack(internal_app=internal)
        try:
            table.replace(
                {
                    "myapp.localhost": route(ups[0]),
                    "preview.myapp.localhost": Route("myapp", "preview", None, None),
                }
            )
            async with httpx.AsyncClient() as c:
                r = await c.post(
                    base + "/.tristage/webhooks/stripe",
                    headers={"host": "myapp.localhost"},
                    content=b"{}",
                )
                assert r.text == "myapp/production/.tristage/webhooks/stripe"
                # Works even when the environment has nothing running.
                r = await c.post(
                    base + "/.tristage/webhooks/clerk", headers={"host": "preview.myapp.localhost"}
                )
                assert r.text == "myapp/preview/.tristage/webhooks/clerk"
                r = await c.get(base + "/.tristage/x", headers={"host": "unknown.localhost"})
                assert r.status_code == 404
            assert [s.environment for s in seen] == ["production", "preview"]
            assert ups[0].client_ports == []  # nothing reached the release
        finally:
            await teardown(router, ups)

    run(main())


def test_internal_paths_404_without_internal_app() -> None:
    async def main() -> None:
        router, _table, ups, base = await stack()
        try:
            async with httpx.AsyncClient() as c:
                r = await c.get(base + "/.tristage/webhooks/x", headers={"host": "myapp.localhost"})
            assert r.status_code == 404
            assert ups[0].client_ports == []
        finally:
            await teardown(router, ups)

    run(main())


def test_stats_count_per_deployment() -> None:
    async def main() -> None:
        router, _table, ups, base = await stack()
        try:
            async with httpx.AsyncClient() as c:
                for _ in range(5):
                    await c.get(base + "/", headers={"host": "myapp.localhost"})
                for _ in range(2):
                    await c.get(base + "/teapot", headers={"host": "myapp.localhost"})
                await c.get(base + "/", headers={"host": "unknown.localhost"})
            s = router.stats()["dep-a"]
            assert s.requests == 7
            assert (s.status_2xx, s.status_3xx, s.status_4xx, s.status_5xx) == (5, 0, 2, 0)
            assert s.upstream_errors == 0
            assert s.p50_ms is not None and s.p99_ms is not None
            assert 0 < s.p50_ms <= s.p99_ms
            assert s.last_request_at is not None
            assert list(router.stats()) == ["dep-a"]
        finally:
            await teardown(router, ups)

    run(main())


def test_start_on_busy_port_fails_and_stop_is_idempotent() -> None:
    async def main() -> None:
        router, _table, ups, base = await stack()
        try:
            port = int(base.rsplit(":", 1)[1])
            other = Router(RouteTable())
            with pytest.raises(OSError):
                await other.start(host="127.0.0.1", port=port)
            await other.stop()
        finally:
            await teardown(router, ups)
            await router.stop()

    run(main())


# --- edge cases ---------------------------------------------------------------------------


def test_head_and_204_responses_do_not_hang() -> None:
    async def main() -> None:
        router, _table, ups, base = await stack()
        try:
            async with httpx.AsyncClient(timeout=5) as c:
                hdr = {"host": "myapp.localhost"}
                r = await c.head(base + "/", headers=hdr)
                assert r.status_code == 200 and r.headers["content-length"] == "1"
                r = await c.get(base + "/no-content", headers=hdr)
                assert r.status_code == 204 and r.content == b""
                r = await c.get(base + "/", headers=hdr)
                assert r.text == "A"
        finally:
            await teardown(router, ups)

    run(main())


def test_client_leaving_an_endless_stream_releases_the_upstream() -> None:
    async def main() -> None:
        router, _table, ups, base = await stack()
        up = ups[0]
        try:
            async with httpx.AsyncClient(timeout=5) as c:
                req = c.build_request("GET", base + "/endless", headers={"host": "myapp.localhost"})
                resp = await c.send(req, stream=True)
                async for chunk in resp.aiter_raw():
                    assert chunk.startswith(b"tick")
                    break
                assert router.inflight(up.addr) == 1
                await resp.aclose()  # drops the client connection mid-stream
            await asyncio.wait_for(up.gate("endless-ended").wait(), 5)
            while router.inflight(up.addr):
                await asyncio.sleep(0.01)
        finally:
            await teardown(router, ups)

    run(main())


async def _close_after_each_response(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """A keep-alive-claiming upstream that closes the connection right after answering."""
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    await writer.drain()
    await asyncio.sleep(0)
    writer.close()


def test_upstream_closing_idle_connections_causes_no_failures() -> None:
    async def main() -> None:
        server = await asyncio.start_server(_close_after_each_response, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()[:2]
        table = RouteTable({"myapp.localhost": Route("myapp", "production", "d", addr)})
        router = Router(table)
        port = await router.start(host="127.0.0.1", port=0)
        try:
            async with httpx.AsyncClient(timeout=5) as c:
                for _ in range(50):
                    r = await c.get(
                        f"http://127.0.0.1:{port}/", headers={"host": "myapp.localhost"}
                    )
                    assert (r.status_code, r.text) == (200, "ok")
            assert router.stats()["d"].upstream_errors == 0
        finally:
            await router.stop()
            server.close()

    run(main())


async def _die_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
    await writer.drain()
    writer.close()


def test_upstream_dying_mid_body_cuts_the_client_and_counts_an_error() -> None:
    async def main() -> None:
        server = await asyncio.start_server(_die_mid_body, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()[:2]
        table = RouteTable({"myapp.localhost": Route("myapp", "production", "d", addr)})
        router = Router(table)
        port = await router.start(host="127.0.0.1", port=0)
        try:
            async with httpx.AsyncClient(timeout=5) as c:
                with pytest.raises(httpx.HTTPError):
                    await c.get(f"http://127.0.0.1:{port}/", headers={"host": "myapp.localhost"})
            s = router.stats()["d"]
            assert (s.requests, s.upstream_errors) == (1, 1)
            assert router.inflight(addr) == 0
        finally:
            await router.stop()
            server.close()

    run(main())


# --- hardening: raw sockets ---------------------------------------------------------------


async def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes to the router, read until it closes (or `timeout` of silence)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
            if not chunk:
                break
            out += chunk
    except (TimeoutError, ConnectionError):
        pass
    writer.close()
    return out


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: myapp.localhost\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
CHUNKED_SMUGGLED = b"%x\r\n%b\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)


@pytest.mark.parametrize(
    "request_bytes",
    [
        # Connection naming a framing header would make the router drop it but still
        # send the body, which the app then parses as a second request
        b"POST / HTTP/1.1\r\nHost: myapp.localhost\r\nConnection: content-length\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(SMUGGLED), SMUGGLED),
        b"POST / HTTP/1.1\r\nHost: myapp.localhost\r\nConnection: keep-alive, Content-Length\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(SMUGGLED), SMUGGLED),
        b"POST / HTTP/1.1\r\nHost: myapp.localhost\r\nConnection: transfer-encoding\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%b" % CHUNKED_SMUGGLED,
        b"GET /x HTTP/1.1\r\nHost: myapp.localhost\r\nConnection: host\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: myapp.localhost\r\nHost: other.localhost\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: myapp.localhost\r\nHost: myapp.localhost\r\n\r\n",
        b"GET /x HTTP/1.1\r\nX-Host: myapp.localhost\r\n\r\n",
    ],
    ids=[
        "conn-cl",
        "conn-list-cl",
        "conn-te",
        "conn-host",
        "two-hosts",
        "same-host-twice",
        "no-host",
    ],
)
def test_requests_that_could_smuggle_or_confuse_routing_get_400(request_bytes: bytes) -> None:
    async def main() -> None:
        router, _table, ups, base = await stack()
        try:
            out = await raw_exchange(_port(base), request_bytes)
            assert out.startswith(b"HTTP/1.1 400 "), out[:200]
            assert b"connection: close" in out.lower()
            await asyncio.sleep(0.2)  # an upstream that got the request would have parsed it
            assert ups[0].paths == []
            # and a normal request on a new connection is still served
            out = await raw_exchange(
                _port(base), b"GET / HTTP/1.1\r\nHost: myapp.localhost\r\nConnection: close\r\n\r\n"
            )
            assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"A")
        finally:
            await teardown(router, ups)

    run(main())


def test_client_forwarding_headers_are_replaced_not_passed_through() -> None:
    async def main() -> None:
        router, _table, ups, base = await stack()
        try:
            out = await raw_exchange(
                _port(base),
                b"GET /headers HTTP/1.1\r\nHost: myapp.localhost\r\n"
                b"Forwarded: for=6.6.6.6;proto=https\r\nX-Real-IP: 6.6.6.6\r\n"
                b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil.example\r\n"
                b"X-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\n"
                b"X-Forwarded-Prefix: /admin\r\nX-Forwarded-Ssl: on\r\n"
                b"Connection: close\r\n\r\n",
            )
            seen = json.loads(out.split(b"\r\n\r\n", 1)[1])
            assert "6.6.6.6" not in json.dumps(seen)
            assert seen["x-real-ip"] == "127.0.0.1"
            assert seen["x-forwarded-for"] == "127.0.0.1"
            assert seen["x-forwarded-proto"] == "http"
            assert seen["x-forwarded-host"] == "myapp.localhost"
            for gone in ("forwarded", "x-forwarded-port", "x-forwarded-prefix", "x-forwarded-ssl"):
                assert gone not in seen, gone
        finally:
            await teardown(router, ups)

    run(main())


def test_an_early_response_before_the_upload_is_read_reaches_the_client() -> None:
    async def main() -> None:
        router, _table, ups, base = await stack()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", _port(base))
            size = 16 * MB
            writer.write(
                b"POST /refuse HTTP/1.1\r\nHost: myapp.localhost\r\n"
                b"Content-Length: %d\r\n\r\n" % size
            )

            async def upload() -> None:
                chunk = b"x" * 65536
                try:
                    for _ in range(size // len(chunk)):
                        writer.write(chunk)
                        await writer.drain()
                except ConnectionError:
                    pass

            sender = asyncio.ensure_future(upload())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 413 "), head
            body = await asyncio.wait_for(reader.readexactly(9), 10)
            assert body == b"too large"
            # the rest of the upload is read and dropped; the connection then serves again
            await asyncio.wait_for(sender, 20)
            writer.write(b"GET / HTTP/1.1\r\nHost: myapp.localhost\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 "), head
            assert await asyncio.wait_for(reader.readexactly(1), 10) == b"A"
            writer.close()
            s = router.stats()["dep-a"]
            assert (s.requests, s.status_4xx, s.status_5xx, s.upstream_errors) == (2, 1, 0, 0)
            assert router.inflight(ups[0].addr) == 0
        finally:
            await teardown(router, ups)

    run(main())


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True when the router closes the connection (EOF or reset) within `seconds`."""
    try:
        while await asyncio.wait_for(reader.read(65536), seconds):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def test_slowloris_and_idle_connections_are_closed_by_the_timeouts() -> None:
    async def main() -> None:
        router, _table, ups, base = await stack(header_timeout=0.5, idle_timeout=0.8)
        port = _port(base)
        try:
            conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(30)]
            # conns[:10] connect and say nothing
            slow = conns[10:20]  # headers one byte at a time, never finishing
            slow_body = conns[20:]  # headers, then a body that stops coming
            for _, w in slow_body:
                w.write(
                    b"POST /count HTTP/1.1\r\nHost: myapp.localhost\r\n"
                    b"Content-Length: 100\r\n\r\nab"
                )

            async def drip(w: asyncio.StreamWriter) -> None:
                try:
                    for b in b"GET / HTTP/1.1\r\nHost: myapp.localhost\r\nX-Pad: " + b"a" * 100:
                        w.write(bytes([b]))
                        await asyncio.sleep(0.05)
                except ConnectionError:
                    pass

            drips = [asyncio.ensure_future(drip(w)) for _, w in slow]
            closed = await asyncio.gather(*(_closed_within(r, 3.0) for r, _ in conns))
            assert all(closed), closed
            for d in drips:
                d.cancel()
            # a keep-alive connection idle after a response is closed too
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET / HTTP/1.1\r\nHost: myapp.localhost\r\n\r\n")
            assert (await r.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
            assert await r.readexactly(1) == b"A"
            assert await _closed_within(r, 3.0)
            # one kept busy (a request every 0.5 s) outlives the idle timeout many times over
            r, w = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(5):
                w.write(b"GET / HTTP/1.1\r\nHost: myapp.localhost\r\n\r\n")
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 2.0)
                assert head.startswith(b"HTTP/1.1 200 ")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await r.readexactly(length)
                await asyncio.sleep(0.5)
            assert await _closed_within(r, 3.0)
            # a client that stalls mid-upload is not an upstream failure
            s = router.stats()["dep-a"]
            assert s.upstream_errors == 0 and s.status_5xx == 0
            assert router.inflight(ups[0].addr) == 0
            # a prompt client is served meanwhile
            out = await raw_exchange(
                port, b"GET / HTTP/1.1\r\nHost: myapp.localhost\r\nConnection: close\r\n\r\n"
            )
            assert out.startswith(b"HTTP/1.1 200 ")
            for _, w in conns:
                w.close()
        finally:
            await teardown(router, ups)

    run(main())


def test_connections_over_the_cap_get_503_and_the_rest_are_served() -> None:
    async def main() -> None:
        router, _table, ups, base = await stack(max_connections=5)
        port = _port(base)
        try:
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
            await asyncio.sleep(0.1)
            out = await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: myapp.localhost\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 503 "), out
            r, w = held[0]  # the held connections still work
            w.write(b"GET / HTTP/1.1\r\nHost: myapp.localhost\r\n\r\n")
            assert (await r.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
            for _, w in held:
                w.close()
            await asyncio.sleep(0.2)
            out = await raw_exchange(
                port, b"GET / HTTP/1.1\r\nHost: myapp.localhost\r\nConnection: close\r\n\r\n"
            )
            assert out.startswith(b"HTTP/1.1 200 ")
        finally:
            await teardown(router, ups)

    run(main())


EMFILE_ROUTER = """
import asyncio, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
from tristage.edges.router import Router, RouteTable

async def main():
    router = Router(RouteTable(), max_connections=10_000, header_timeout=60, idle_timeout=60)
    port = await router.start(host="127.0.0.1", port=0)
    print(port, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_running_out_of_file_descriptors_backs_off_without_flooding_the_log(
    tmp_path: Any,
) -> None:
    import subprocess
    import sys

    err = tmp_path / "router.err"
    with err.open("wb") as errf:
        proc = subprocess.Popen(
            [sys.executable, "-c", EMFILE_ROUTER], stdout=subprocess.PIPE, stderr=errf
        )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())

        async def main() -> None:
            conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(150)]
            await asyncio.sleep(2.0)  # the router is out of descriptors all this time
            for _, w in conns:
                w.close()
            await asyncio.sleep(0.1)
            out = await raw_exchange(
                port, b"GET / HTTP/1.1\r\nHost: x.localhost\r\nConnection: close\r\n\r\n", 5
            )
            assert out.startswith(b"HTTP/1.1 404 "), out  # serving again

        run(main())
        log = err.read_text()
        assert len(log.splitlines()) <= 10, log[:2000]
        assert "file descriptors" in log  # said once, plainly
    finally:
        proc.kill()
        proc.wait()


# --- WebSocket ----------------------------------------------------------------------------


def test_websocket_upgrade_is_proxied_both_ways() -> None:
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import ServerConnection, serve

    seen_headers: list[dict[str, str]] = []

    async def echo(ws: ServerConnection) -> None:
        seen_headers.append({k.lower(): v for k, v in ws.request.headers.raw_items()})
        await ws.send("hello from the app")  # the app speaks first
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        router, table, ups, base = await stack()
        async with serve(echo, "127.0.0.1", 0, compression=None) as server:
            ws_addr = server.sockets[0].getsockname()[:2]
            table.replace(
                {
                    "127.0.0.1": Route("myapp", "production", "dep-ws", ws_addr),
                    "plain.localhost": route(ups[0]),
                }
            )
            try:
                uri = f"ws://127.0.0.1:{_port(base)}/socket?x=1"
                async with connect(
                    uri, additional_headers={"X-Forwarded-For": "6.6.6.6"}, compression=None
                ) as ws:
                    assert await asyncio.wait_for(ws.recv(), 5) == "hello from the app"
                    await ws.send("ping")
                    assert await asyncio.wait_for(ws.recv(), 5) == "ping"
                    big = bytes(range(256)) * 4000  # ~1 MB, more than any socket buffer
                    await ws.send(big)
                    assert await asyncio.wait_for(ws.recv(), 10) == big
                assert seen_headers[0]["x-forwarded-for"] == "127.0.0.1"
                assert seen_headers[0]["host"] == f"127.0.0.1:{_port(base)}"
                s = router.stats()["dep-ws"]
                assert (s.requests, s.upstream_errors) == (1, 0)
                # an app without a WebSocket route answers the upgrade as plain HTTP, and
                # the connection ends there (nothing after it reaches the app unchecked)
                out = await raw_exchange(
                    _port(base),
                    b"GET /teapot HTTP/1.1\r\nHost: plain.localhost\r\nConnection: Upgrade\r\n"
                    b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                    b"GET /smuggled HTTP/1.1\r\nHost: plain.localhost\r\n\r\n",
                )
                assert out.startswith(b"HTTP/1.1 403 "), out
                assert ups[0].paths == ["ws:/teapot"]  # and not /smuggled
                # an unknown host is refused by the router itself
                out = await raw_exchange(
                    _port(base),
                    b"GET / HTTP/1.1\r\nHost: nope.localhost\r\nConnection: Upgrade\r\n"
                    b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                )
                assert out.startswith(b"HTTP/1.1 404 "), out
                # stopping the router closes the sockets it holds open
                held = await connect(uri, compression=None)
                assert await asyncio.wait_for(held.recv(), 5) == "hello from the app"
                await asyncio.wait_for(router.stop(), 10)
                await asyncio.wait_for(held.wait_closed(), 10)
            finally:
                await teardown(router, ups)

    run(main())


def test_an_upstream_slower_than_the_request_timeout_gets_504() -> None:
    async def main() -> None:
        router, table, ups, base = await stack(request_timeout=5.0)
        try:
            table.replace(
                {
                    "myapp.localhost": Route(
                        "myapp", "production", "dep-a", ups[0].addr, request_timeout=0.3
                    ),
                    "patient.localhost": Route("myapp", "preview", "dep-p", ups[0].addr),
                }
            )
            async with httpx.AsyncClient(timeout=10) as c:
                t0 = asyncio.get_running_loop().time()
                r = await c.get(base + "/slow", headers={"host": "myapp.localhost"})
                took = asyncio.get_running_loop().time() - t0
                assert r.status_code == 504 and "myapp.localhost" in r.text
                assert 0.25 < took < 3.0, took
                s = router.stats()["dep-a"]
                assert (s.requests, s.status_5xx, s.upstream_errors) == (1, 1, 1)
                # the router's own default applies to a route without one
                slow = asyncio.ensure_future(
                    c.get(base + "/slow", headers={"host": "patient.localhost"})
                )
                await asyncio.sleep(0.6)
                assert not slow.done()
                ups[0].gate("release").set()
                r = await slow
                assert (r.status_code, r.text) == (200, "A")
            assert router.inflight(ups[0].addr) == 0
        finally:
            await teardown(router, ups)

    run(main())


def test_websocket_upgrade_to_a_dead_upstream_gets_502_and_counts_an_error() -> None:
    async def main() -> None:
        router, table, ups, base = await stack()
        try:
            dead = ("127.0.0.1", free_port())
            table.replace({"myapp.localhost": Route("myapp", "production", "dep-d", dead)})
            out = await raw_exchange(
                _port(base),
                b"GET /socket HTTP/1.1\r\nHost: myapp.localhost\r\nConnection: Upgrade\r\n"
                b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            )
            assert out.startswith(b"HTTP/1.1 502 "), out
            assert str(dead[1]).encode() not in out
            s = router.stats()["dep-d"]
            assert (s.requests, s.status_5xx, s.upstream_errors) == (1, 1, 1)
        finally:
            await teardown(router, ups)

    run(main())


# --- the fast path (bodiless requests proxied without ASGI) --------------------------------


async def _framings(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers by path: chunked, delimited by closing, with a Connection-named header."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1]
            if path == b"/chunked":
                writer.write(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                )
            elif path == b"/close":
                writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
                await writer.drain()
                writer.close()
                return
            else:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\n"
                    b"Keep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok"
                )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def test_fast_path_reframes_chunked_and_close_delimited_responses_and_drops_hop_by_hop() -> None:
    async def main() -> None:
        server = await asyncio.start_server(_framings, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()[:2]
        table = RouteTable({"myapp.localhost": Route("myapp", "production", "d", addr)})
        router = Router(table)
        port = await router.start(host="127.0.0.1", port=0)
        try:
            async with httpx.AsyncClient(timeout=5) as c:
                for _ in range(3):
                    base = f"http://127.0.0.1:{port}"
                    host = {"host": "myapp.localhost"}
                    r = await c.get(f"{base}/chunked", headers=host)
                    assert (r.status_code, r.text) == (200, "hello world")
                    r = await c.get(f"{base}/close", headers=host)
                    assert (r.status_code, r.text) == (200, "until the end")
                    r = await c.get(f"{base}/plain", headers=host)
                    assert (r.status_code, r.text) == (200, "ok")
                    assert "x-secret" not in r.headers and "keep-alive" not in r.headers
            # pipelined requests on one connection are answered in order
            raw = b"GET /plain HTTP/1.1\r\nHost: myapp.localhost\r\n\r\n" * 3
            raw += b"GET /chunked HTTP/1.1\r\nHost: myapp.localhost\r\nConnection: close\r\n\r\n"
            out = await raw_exchange(port, raw)
            assert out.count(b"HTTP/1.1 200 OK") == 4 and out.count(b"\r\n\r\nok") == 3
            assert out.endswith(b"b\r\nhello world\r\n0\r\n\r\n")
            s = router.stats()["d"]
            assert (s.requests, s.upstream_errors) == (13, 0)
            assert router.inflight(addr) == 0
        finally:
            await router.stop()
            server.close()

    run(main())


async def _in_pieces(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers by path with a Content-Length body sent in several writes; `/extra` sends
    bytes past the end of its body (an upstream out of step with its connection)."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1]
            if path == b"/split":
                parts = [b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", b"hello", b" world"]
            elif path == b"/extra":
                # the end of the body and the start of something else in one write
                parts = [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\no", b"kHTTP/1.1 200 OK"]
            else:
                parts = [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain"]
            for part in parts:
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(0.05)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def test_fast_path_reads_a_body_in_pieces_and_drops_an_upstream_out_of_step() -> None:
    async def main() -> None:
        connections = 0

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            await _in_pieces(reader, writer)

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()[:2]
        table = RouteTable({"myapp.localhost": Route("myapp", "production", "d", addr)})
        router = Router(table)
        port = await router.start(host="127.0.0.1", port=0)
        try:
            async with httpx.AsyncClient(timeout=5) as c:
                base, host = f"http://127.0.0.1:{port}", {"host": "myapp.localhost"}
                for _ in range(3):
                    r = await c.get(f"{base}/split", headers=host)
                    assert (r.status_code, r.text) == (200, "hello world")
                    r = await c.get(f"{base}/plain", headers=host)
                    assert (r.status_code, r.text) == (200, "plain")
                assert connections == 1  # one upstream connection, kept alive throughout
                r = await c.get(f"{base}/extra", headers=host)
                assert (r.status_code, r.text) == (200, "ok")
                await asyncio.sleep(0.2)
                r = await c.get(f"{base}/plain", headers=host)
                assert (r.status_code, r.text) == (200, "plain")
                assert connections == 2  # the one out of step was not used again
            s = router.stats()["d"]
            assert (s.requests, s.upstream_errors) == (8, 0)
            assert router.inflight(addr) == 0
        finally:
            await router.stop()
            server.close()

    run(main())
