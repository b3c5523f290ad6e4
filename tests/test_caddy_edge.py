"""The production edge with real ACME: Caddy in front of the embedded router gets its
certificates from Pebble on loopback; clients resolve every name to 127.0.0.1 and trust
only Pebble's root. What is tested: certificates on demand only for routed hosts, the
HTTP to HTTPS redirect, alias domains, HSTS, HTTP/2, WebSockets, forwarding headers,
and requests across route-table swaps (no failures)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import ssl
import time
from collections.abc import Iterator
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
    needs_caddy,
    needs_pebble,
    negotiated_protocol,
    peer_certificate,
    trust,
)
from caddy_front import caddy_front
from test_edge_conformance import Upstream, route
from tristage.edges.caddy import CaddyEdge, EdgePlan
from tristage.edges.router import Route

pytestmark = [needs_caddy, needs_pebble, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    with Pebble(tmp_path_factory.mktemp("pebble")) as ca:
        yield ca


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 100))


PLAN = EdgePlan.of(
    {
        "production": (("shop.test", "www.shop.test"), True),
        "preview": (("staging.shop.test",), False),
    }
)


def front(tmp_path: Path, pebble: Pebble) -> Any:
    return caddy_front(tmp_path / "edge", pebble.directory_url, (pebble.listener_cert,), PLAN)


def test_https_serves_with_a_certificate_from_the_acme_server_and_http_redirects(
    tmp_path: Path, pebble: Pebble
) -> None:
    async def main() -> None:
        async with front(tmp_path, pebble) as f, Upstream("prod") as up:
            f.router.table.replace({"shop.test": route("d1", up), "www.shop.test": route("d1", up)})
            async with async_https_client(pebble.root_pem, timeout=60) as client:
                r = await client.get(f"https://shop.test:{f.https_port}/")
                assert (r.status_code, r.content) == (200, b"prod")
                assert r.headers["strict-transport-security"] == "max-age=31536000"
                plain = await client.get(f"http://shop.test:{f.http_port}/a/b?c=d")
                assert plain.status_code == 308
                assert plain.headers["location"] == f"https://shop.test:{f.https_port}/a/b?c=d"
                alias = await client.get(f"https://www.shop.test:{f.https_port}/x?y=1")
                assert alias.status_code == 308
                assert alias.headers["location"] == f"https://shop.test:{f.https_port}/x?y=1"
            der = await asyncio.to_thread(
                peer_certificate, f.https_port, "shop.test", pebble.root_pem
            )
            assert pebble.issued_by_pebble(der)
            alpn = await asyncio.to_thread(
                negotiated_protocol, f.https_port, "shop.test", pebble.root_pem
            )
            assert alpn == "h2"
            assert f.router.stats()["d1"].requests == 1  # the redirects never reached it

    run(main())


def test_a_branch_host_gets_its_certificate_on_first_request_an_unknown_host_none(
    tmp_path: Path, pebble: Pebble
) -> None:
    async def main() -> None:
        async with front(tmp_path, pebble) as f, Upstream("branch") as up:
            host = "feature-x.preview.shop.test"
            with pytest.raises(ssl.SSLError):  # not routed yet: no certificate
                await asyncio.to_thread(peer_certificate, f.https_port, host, pebble.root_pem)
            with pytest.raises(ssl.SSLError):
                await asyncio.to_thread(
                    peer_certificate, f.https_port, "evil.test", pebble.root_pem
                )
            f.router.table.replace({host: route("d2", up, "preview")})
            async with async_https_client(pebble.root_pem, timeout=60) as client:
                r = await client.get(f"https://{host}:{f.https_port}/")
                assert (r.status_code, r.content) == (200, b"branch")
                assert "strict-transport-security" not in r.headers  # not production
            asked = dict(f.edge.ask.asked)
            assert asked["evil.test"] is False and asked[host] is True
            with pytest.raises(ssl.SSLError):
                await asyncio.to_thread(
                    peer_certificate, f.https_port, "evil.test", pebble.root_pem
                )

    run(main())


def test_forwarding_headers_come_from_the_edge_and_never_from_the_client(
    tmp_path: Path, pebble: Pebble
) -> None:
    async def main() -> None:
        async with front(tmp_path, pebble) as f, Upstream("prod") as up:
            f.router.table.replace({"shop.test": route("d1", up)})
            forged = {
                "X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6", "Forwarded": "for=6.6.6.6",
                "X-Forwarded-Proto": "gopher", "X-Forwarded-Host": "evil.test",
                "X-Tristage-Edge": "guess",
            }  # fmt: skip
            async with async_https_client(pebble.root_pem, timeout=60) as client:
                r = await client.get(f"https://shop.test:{f.https_port}/", headers=forged)
                assert r.status_code == 200
            seen = {k.decode(): v.decode() for k, v in up.seen[-1][1]}
            assert seen["x-forwarded-for"] == "127.0.0.1" and seen["x-real-ip"] == "127.0.0.1"
            assert seen["x-forwarded-proto"] == "https"
            assert seen["x-forwarded-host"].startswith("shop.test")
            assert "forwarded" not in seen and "x-tristage-edge" not in seen
            # straight to the router with a forged token: nothing trusted
            async with httpx.AsyncClient(timeout=10) as client:
                await client.get(f"http://127.0.0.1:{f.router.port}/", headers={
                    **forged, "Host": "shop.test", "X-Forwarded-Proto": "https"
                })  # fmt: skip
            seen = {k.decode(): v.decode() for k, v in up.seen[-1][1]}
            assert seen["x-forwarded-proto"] == "http" and seen["x-forwarded-for"] == "127.0.0.1"
            assert "x-tristage-edge" not in seen

    run(main())


def test_a_websocket_echo_works_through_caddy(tmp_path: Path, pebble: Pebble) -> None:
    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with front(tmp_path, pebble) as f, ws_serve(echo, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            f.router.table.replace(
                {"shop.test": Route("shop", "production", "d1", ("127.0.0.1", port))}
            )
            async with ws_connect(
                f"wss://shop.test:{f.https_port}/socket", host="127.0.0.1", port=f.https_port,
                ssl=trust(pebble.root_pem), server_hostname="shop.test", open_timeout=60,
            ) as ws:  # fmt: skip
                for text in ("hello", "x" * 100_000):
                    await ws.send(text)
                    assert await ws.recv() == text

    run(main())


def test_requests_through_caddy_during_route_swaps_all_succeed(
    tmp_path: Path, pebble: Pebble
) -> None:
    async def main() -> None:
        async with front(tmp_path, pebble) as f, Upstream("one") as one, Upstream("two") as two:
            tables = [{"shop.test": route("d1", one)}, {"shop.test": route("d2", two)}]
            f.router.table.replace(tables[0])
            answers: list[tuple[int, bytes] | str] = []
            done = asyncio.Event()
            async with async_https_client(pebble.root_pem, timeout=60) as client:
                await client.get(f"https://shop.test:{f.https_port}/")  # the certificate first

                async def load() -> None:
                    while not done.is_set():
                        try:
                            r = await client.get(f"https://shop.test:{f.https_port}/")
                            answers.append((r.status_code, r.content))
                        except httpx.HTTPError as exc:
                            answers.append(repr(exc))

                clients = [asyncio.ensure_future(load()) for _ in range(8)]
                for i in range(100):
                    f.router.table.replace(tables[(i + 1) % 2])
                    await asyncio.sleep(0.01)
                done.set()
                await asyncio.gather(*clients)
            assert len(answers) > 100
            assert {a for a in answers} <= {(200, b"one"), (200, b"two")}, [
                a for a in answers if a not in ((200, b"one"), (200, b"two"))
            ][:5]

    run(main())


def test_the_config_changes_only_with_the_public_names(tmp_path: Path, pebble: Pebble) -> None:
    async def main() -> None:
        async with front(tmp_path, pebble) as f:
            loads: list[Any] = []
            original = f.edge._load

            async def counting(config: dict[str, object]) -> None:
                loads.append(json.dumps(config))
                await original(config)

            f.edge._load = counting  # type: ignore[method-assign]
            await f.edge.apply(PLAN)  # the same names: nothing loaded
            assert loads == []
            more = EdgePlan.of({"production": (("shop.test", "shop2.test"), True)})
            await f.edge.apply(more)
            assert len(loads) == 1 and "shop2.test" in loads[0]
            assert f.edge.healthy()

    run(main())


def test_a_caddy_that_exits_is_started_again_and_a_restarted_control_plane_adopts_it(
    tmp_path: Path, pebble: Pebble
) -> None:
    async def main() -> None:
        async with front(tmp_path, pebble) as f, Upstream("prod") as up:
            f.router.table.replace({"shop.localhost": route("d1", up)})
            first = f.edge.pid
            assert first is not None and f.edge.healthy()
            os.kill(first, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while not (f.edge.healthy() and f.edge.pid != first):
                assert time.monotonic() < deadline, "caddy was not started again"
                await asyncio.sleep(0.1)
            async with httpx.AsyncClient(timeout=10) as client:
                url = f"http://127.0.0.1:{f.http_port}/"
                while True:  # serving again once the new caddy listens
                    try:
                        r = await client.get(url, headers={"Host": "shop.localhost"})
                        break
                    except httpx.ConnectError:
                        assert time.monotonic() < deadline, "caddy does not listen again"
                        await asyncio.sleep(0.1)
                assert r.content == b"prod"
                # a second edge on the same directory (a control plane back after kill -9)
                # takes the running caddy over instead of starting another
                assert f.edge.settings is not None
                settings = f.edge.settings
                again = CaddyEdge(
                    f.edge.directory,
                    lambda ask, token: dataclasses.replace(settings, ask_url=ask, token=token),
                    allowed=lambda host: True,
                    binary=f.edge.binary,
                )
                await again.start(PLAN)
                try:
                    assert again.pid == f.edge.pid
                    f.router.trust_edge(again.token)
                    r = await client.get(url, headers={"Host": "shop.localhost"})
                    assert r.content == b"prod"
                    seen = {k.decode(): v.decode() for k, v in up.seen[-1][1]}
                    assert "x-tristage-edge" not in seen
                finally:
                    again._watch.cancel()  # type: ignore[union-attr]
                    await again.ask.stop()

    run(main())


@pytest.mark.parametrize("path", ["asgi", "fast"])
def test_both_router_paths_trust_forwarding_headers_only_with_the_edge_token(path: str) -> None:
    from tristage.edges.router.fastpath import request_head
    from tristage.edges.router.headers import upstream_request_headers

    def sent(headers: list[tuple[bytes, bytes]], token: bytes | None) -> dict[bytes, bytes]:
        if path == "asgi":
            return dict(upstream_request_headers(headers, "127.0.0.1", "http", token))
        head = request_head(b"GET", b"/", headers, b"127.0.0.1", b"http", token)
        assert head is not None
        lines = head.split(b"\r\n")[1:-2]
        return dict(tuple(line.split(b": ", 1)) for line in lines)  # type: ignore[misc]

    base = [(b"host", b"shop.test"), (b"x-forwarded-for", b"6.6.6.6, 203.0.113.9"),
            (b"x-forwarded-proto", b"https"), (b"x-forwarded-host", b"shop.test")]  # fmt: skip
    trusted = sent([*base, (b"x-tristage-edge", b"s3cret")], b"s3cret")
    assert trusted[b"x-forwarded-for"] == b"203.0.113.9"  # the address the edge saw
    assert trusted[b"x-real-ip"] == b"203.0.113.9"
    assert trusted[b"x-forwarded-proto"] == b"https"
    assert b"x-tristage-edge" not in trusted
    for token, header in ((b"s3cret", b"guess"), (None, b"s3cret")):
        forged = sent([*base, (b"x-tristage-edge", header)], token)
        assert forged[b"x-forwarded-for"] == b"127.0.0.1"
        assert forged[b"x-forwarded-proto"] == b"http"
        assert forged[b"x-forwarded-host"] == b"shop.test"
        assert b"x-tristage-edge" not in forged
