"""The HAProxy edge with real ACME: HAProxy in front of the embedded router, certificates
from Pebble on loopback through the `acme` library, clients resolving every name to
127.0.0.1 and trusting only Pebble's root. What is tested: certificates only for routed
hosts, loaded without a reload; the HTTP-01 challenge path; HTTP to HTTPS redirects,
alias domains, HSTS, HTTP/2, WebSockets; forwarding headers and the parser's refusals;
switches under HTTPS load through dynamic servers (no failures, no reload); an HAProxy
that exits is started again and a second edge adopts a running one."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from acme_ca import Pebble, async_https_client, needs_pebble, peer_certificate
from edge_fixtures import (
    answers_during_switches,
    assert_forwarding_headers_from_the_edge,
    assert_https_redirects_and_hsts,
    assert_websocket_echo,
    pebble_fixture,  # noqa: F401  (the fixture `pebble`)
    run,
    websocket_echo,
)
from haproxy_front import Front, haproxy_front, needs_haproxy
from test_edge_conformance import Upstream, raw_exchange, route
from tristage.edges.haproxy import HAProxyEdge, runtime_api
from tristage.edges.haproxy.config import haproxy_config
from tristage.edges.router import Route

pytestmark = [needs_haproxy, needs_pebble, pytest.mark.timeout(120)]


def front(tmp_path: Path, pebble: Pebble) -> Any:
    return haproxy_front(
        tmp_path / "edge", pebble.directory_url, (pebble.listener_cert,),
        redirects={"www.shop.test": "shop.test"}, hsts=("shop.test", "www.shop.test"),
    )  # fmt: skip


async def certify(f: Front, *hosts: str) -> None:
    assert f.issuer is not None
    for host in hosts:
        pem = await asyncio.to_thread(f.issuer.issue, host)
        await asyncio.to_thread(f.edge.install_certificate, host, pem)


def test_https_serves_with_a_certificate_from_the_acme_server_and_http_redirects(
    tmp_path: Path, pebble: Pebble
) -> None:
    async def main() -> None:
        async with front(tmp_path, pebble) as f, Upstream("prod") as up:
            f.replace({"shop.test": route("d1", up), "www.shop.test": route("d1", up)})
            pid = f.edge.pid
            await certify(f, "shop.test", "www.shop.test")
            path = f.edge.certificate_path("shop.test")
            assert path.stat().st_mode & 0o777 == 0o600
            assert f.edge.pid == pid  # loaded through the runtime API, no restart
            der = await assert_https_redirects_and_hsts(pebble, f.https_port, f.http_port)
            # straight to the release: the router saw none of it
            assert f.router.stats() == {}
            assert f.edge.stats()["d1"].requests == 1  # the redirects never reached it
            # a renewal replaces the certificate in place
            before = path.read_bytes()
            await certify(f, "shop.test")
            assert path.read_bytes() != before
            again = await asyncio.to_thread(
                peer_certificate, f.https_port, "shop.test", pebble.root_pem
            )
            assert again != der and f.edge.pid == pid

    run(main())


def test_a_host_has_a_certificate_once_routed_and_an_unknown_host_none(
    tmp_path: Path, pebble: Pebble
) -> None:
    async def main() -> None:
        async with front(tmp_path, pebble) as f, Upstream("branch") as up:
            host = "feature-x.preview.shop.test"
            for name in (host, "evil.test"):
                with pytest.raises(ssl.SSLError):  # strict SNI: no certificate, no handshake
                    await asyncio.to_thread(peer_certificate, f.https_port, name)
            f.replace({host: route("d2", up, "preview")})
            await certify(f, host)
            async with async_https_client(pebble.root_pem, timeout=60) as client:
                r = await client.get(f"https://{host}:{f.https_port}/")
                assert (r.status_code, r.content) == (200, b"branch")
                assert "strict-transport-security" not in r.headers  # not production
            with pytest.raises(ssl.SSLError):
                await asyncio.to_thread(peer_certificate, f.https_port, "evil.test")

    run(main())


def test_the_acme_challenge_is_answered_on_the_http_port(tmp_path: Path, pebble: Pebble) -> None:
    async def main() -> None:
        async with front(tmp_path, pebble) as f:
            f.challenges.put("tok-1", "tok-1.thumbprint")
            async with httpx.AsyncClient(timeout=10) as client:
                url = f"http://127.0.0.1:{f.http_port}/.well-known/acme-challenge/"
                r = await client.get(url + "tok-1", headers={"Host": "shop.test"})
                assert (r.status_code, r.text) == (200, "tok-1.thumbprint")
                r = await client.get(url + "other", headers={"Host": "shop.test"})
                assert r.status_code == 404
                r = await client.get(f"http://127.0.0.1:{f.http_port}/", headers={
                    "Host": "shop.test"
                })  # fmt: skip
                assert r.status_code == 308  # everything else moves to HTTPS

    run(main())


def test_forwarding_headers_come_from_the_edge_and_the_parser_refuses_ambiguity(
    tmp_path: Path, pebble: Pebble
) -> None:
    async def main() -> None:
        async with front(tmp_path, pebble) as f, Upstream("prod") as up:
            f.replace({"shop.test": route("d1", up), "shop.localhost": route("d1", up)})
            await certify(f, "shop.test")
            await assert_forwarding_headers_from_the_edge(pebble, f.https_port, up.seen)
            n = len(up.seen)
            smuggle = (
                b"POST / HTTP/1.1\r\nHost: shop.localhost\r\nConnection: content-length\r\n"
                b"Content-Length: 40\r\n\r\nGET /admin HTTP/1.1\r\nHost: shop.localhost\r\n\r\n"
            )
            for head in (
                smuggle,
                b"GET / HTTP/1.1\r\nHost: shop.localhost\r\nHost: evil.localhost\r\n",
                b"GET / HTTP/1.1\r\nHost: shop.localhost\r\nConnection: host\r\n",
                # a listed value, in any case, on any Connection line
                b"GET / HTTP/1.1\r\nHost: shop.localhost\r\nConnection: keep-alive, Host\r\n",
                b"GET / HTTP/1.1\r\nHost: shop.localhost\r\nConnection: keep-alive\r\n"
                b"Connection: close,Transfer-Encoding\r\n",
            ):
                answer = await raw_exchange(f.http_port, head)
                assert answer.startswith(b"HTTP/1.1 400 "), (head, answer[:80])
            assert len(up.seen) == n  # none of them reached the app
            # Content-Length with chunked: framed by the chunks (RFC 9112 6.1), the rest
            # is a request of its own, parsed (and refused: no Host) by HAProxy itself
            await raw_exchange(f.http_port, (
                b"POST / HTTP/1.1\r\nHost: shop.localhost\r\nContent-Length: 5\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n"
            ))  # fmt: skip
            assert [t for t, _ in up.seen[n:]] == [b"/"]

    run(main())


def test_the_configuration_bounds_slow_clients_and_connections(tmp_path: Path) -> None:
    from tristage.edges.haproxy import HAProxySettings

    text = haproxy_config(HAProxySettings(tmp_path, ("127.0.0.1", 1), ("127.0.0.1", 2), "t"))
    for line in ("timeout http-request 10s", "timeout client 30s", "timeout server 60s",
                 "maxconn 4096", "timeout tunnel 1h"):  # fmt: skip
        assert f"    {line}\n" in text


def test_a_slowloris_client_is_cut_at_the_header_timeout(tmp_path: Path, pebble: Pebble) -> None:
    async def main() -> None:
        async with front(tmp_path, pebble) as f:
            reader, writer = await asyncio.open_connection("127.0.0.1", f.http_port)
            writer.write(b"GET / HTTP/1.1\r\nHost: shop.localhost\r\n")  # never finished
            await writer.drain()
            began = time.monotonic()
            answer = await asyncio.wait_for(reader.read(), 20)
            assert answer.startswith(b"HTTP/1.1 408 ")
            assert 9 <= time.monotonic() - began < 15
            writer.close()

    run(main())


def test_a_websocket_echo_works_through_haproxy(tmp_path: Path, pebble: Pebble) -> None:
    async def main() -> None:
        async with front(tmp_path, pebble) as f, websocket_echo() as addr:
            f.replace({"shop.test": Route("shop", "production", "d1", addr)})
            await certify(f, "shop.test")
            await assert_websocket_echo(f.https_port, pebble.root_pem)

    run(main())


def test_requests_through_haproxy_during_switches_all_succeed_without_a_reload(
    tmp_path: Path, pebble: Pebble
) -> None:
    async def main() -> None:
        async with (
            front(tmp_path, pebble) as f,
            Upstream("one") as one,
            Upstream("two") as two,
            Upstream("two-b") as two_b,
        ):
            tables = [
                {"shop.test": route("d1", one)},
                {"shop.test": Route("shop", "production", "d2", two.addr, replicas=(two_b.addr,))},
            ]
            f.replace(tables[0])
            await certify(f, "shop.test")
            pid = f.edge.pid

            async def switch(i: int) -> None:
                await asyncio.to_thread(f.replace, tables[(i + 1) % 2])
                if i % 10 == 0:
                    await asyncio.to_thread(f.edge.retire)

            url = f"https://shop.test:{f.https_port}/"
            answers = await answers_during_switches(pebble.root_pem, url, switch)
            good = {(200, b"one"), (200, b"two"), (200, b"two-b")}
            assert len(answers) > 100
            assert {a for a in answers} <= good, [a for a in answers if a not in good][:5]
            assert {a for a in answers} == good  # both replicas of d2 took requests
            assert f.edge.pid == pid
            assert "Reload" not in f.edge.log_file.read_text()
            # the drained servers go once nothing is in flight
            for _ in range(50):
                await asyncio.to_thread(f.edge.retire)
                actual = f.edge.stats()
                state = await asyncio.to_thread(
                    runtime_api.actual_state, f.edge.s.admin_socket, f.edge.s.hosts_map, "be_h"
                )
                servers = sum(len(s) for s in state.servers.values())
                if servers == 1:
                    break
                await asyncio.sleep(0.2)
            assert servers == 1  # d1 serves at the end
            total = sum(s.requests for s in actual.values())
            assert total == len(answers)  # counted across deleted servers too

    run(main())


def test_an_haproxy_that_exits_is_started_again_and_another_edge_adopts_it(
    tmp_path: Path, pebble: Pebble
) -> None:
    async def main() -> None:
        async with front(tmp_path, pebble) as f, Upstream("prod") as up:
            f.replace({"shop.localhost": route("d1", up)})
            first = f.edge.pid
            assert first is not None and f.edge.healthy()
            os.kill(first, signal.SIGKILL)
            deadline = time.monotonic() + 30
            async with httpx.AsyncClient(timeout=10) as client:
                url = f"http://127.0.0.1:{f.http_port}/"
                while True:  # serving again once the new haproxy listens
                    try:
                        r = await client.get(url, headers={"Host": "shop.localhost"})
                        if f.edge.pid != first and r.status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    assert time.monotonic() < deadline, "haproxy was not started again"
                    await asyncio.sleep(0.1)
                assert r.content == b"prod"
                # a second edge on the same directory (a control plane back after kill -9)
                again = HAProxyEdge(f.edge.s, binary=f.edge.binary)
                await again.start({}, ())
                try:
                    assert again.pid == f.edge.pid
                    await asyncio.to_thread(again.apply, f.router.table.snapshot())
                    r = await client.get(url, headers={"Host": "shop.localhost"})
                    assert r.content == b"prod"
                finally:
                    assert again._watch is not None
                    again._watch.cancel()

    run(main())


def test_a_running_haproxy_with_other_ports_is_replaced_not_adopted(tmp_path: Path) -> None:
    from acme_ca import free_port
    from haproxy_front import HAPROXY
    from tristage.edges.haproxy import HAProxySettings
    from tristage.edges.runtime import proc_start

    async def main() -> None:
        assert HAPROXY is not None
        s = HAProxySettings(tmp_path / "e", ("127.0.0.1", 9), ("127.0.0.1", 9), "t" * 48,
                            free_port(), free_port(), "127.0.0.1", slots=2)  # fmt: skip
        first = HAProxyEdge(s, binary=HAPROXY)
        await first.start({}, ())
        assert first._watch is not None
        first._watch.cancel()  # its control plane is gone; haproxy runs on
        old = first.pid
        assert old is not None
        moved = HAProxyEdge(dataclasses.replace(s, http_port=free_port()), binary=HAPROXY)
        await moved.start({}, ())
        try:
            assert moved.pid != old and proc_start(old) is None
            again = HAProxyEdge(moved.s, binary=HAPROXY)
            await again.start({}, ())  # the same settings: adopted
            assert again.pid == moved.pid
            assert again._watch is not None
            again._watch.cancel()
        finally:
            await moved.stop()

    run(main())
