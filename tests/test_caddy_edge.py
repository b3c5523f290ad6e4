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
from pathlib import Path
from typing import Any

import httpx
import pytest

from acme_ca import Pebble, async_https_client, needs_caddy, needs_pebble, peer_certificate
from caddy_front import caddy_front
from edge_fixtures import (
    FORGED,
    answers_during_switches,
    assert_forwarding_headers_from_the_edge,
    assert_https_redirects_and_hsts,
    assert_websocket_echo,
    headers_seen,
    pebble_fixture,  # noqa: F401  (the fixture `pebble`)
    run,
    websocket_echo,
)
from test_edge_conformance import Upstream, route
from tristage.edges.caddy import CaddyEdge, EdgePlan
from tristage.edges.router import Route

pytestmark = [needs_caddy, needs_pebble, pytest.mark.timeout(120)]

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
            await assert_https_redirects_and_hsts(pebble, f.https_port, f.http_port)
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
            await assert_forwarding_headers_from_the_edge(pebble, f.https_port, up.seen)
            # straight to the router with a forged token: nothing trusted
            async with httpx.AsyncClient(timeout=10) as client:
                await client.get(f"http://127.0.0.1:{f.router.port}/", headers={
                    **FORGED, "Host": "shop.test", "X-Forwarded-Proto": "https"
                })  # fmt: skip
            seen = headers_seen(up.seen[-1][1])
            assert seen["x-forwarded-proto"] == "http" and seen["x-forwarded-for"] == "127.0.0.1"
            assert "x-tristage-edge" not in seen

    run(main())


def test_a_websocket_echo_works_through_caddy(tmp_path: Path, pebble: Pebble) -> None:
    async def main() -> None:
        async with front(tmp_path, pebble) as f, websocket_echo() as addr:
            f.router.table.replace({"shop.test": Route("shop", "production", "d1", addr)})
            await assert_websocket_echo(f.https_port, pebble.root_pem)

    run(main())


def test_requests_through_caddy_during_route_swaps_all_succeed(
    tmp_path: Path, pebble: Pebble
) -> None:
    async def main() -> None:
        async with front(tmp_path, pebble) as f, Upstream("one") as one, Upstream("two") as two:
            tables = [{"shop.test": route("d1", one)}, {"shop.test": route("d2", two)}]
            f.router.table.replace(tables[0])
            url = f"https://shop.test:{f.https_port}/"
            async with async_https_client(pebble.root_pem, timeout=60) as client:
                await client.get(url)  # the certificate first

            async def switch(i: int) -> None:
                f.router.table.replace(tables[(i + 1) % 2])

            answers = await answers_during_switches(pebble.root_pem, url, switch)
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
                    assert "x-tristage-edge" not in headers_seen(up.seen[-1][1])
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
