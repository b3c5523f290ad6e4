"""WebSocket upgrades: the request goes to the upstream with its Upgrade headers, and
once the upstream answers 101 the two connections are spliced byte for byte.

Any other answer (the app has no WebSocket there) is relayed as it is and both
connections are then closed, so nothing after it can reach the upstream unchecked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httptools

from ..embedded_server import UpgradeRequest
from . import pages
from .headers import RawHeaders, request_problem, upstream_request_headers
from .routes import Balancer, RouteTable
from .stats import StatsRecorder

INTERNAL_PREFIX = b"/.tristage/"


def _reply(transport: asyncio.Transport, status: int, reason: bytes, body: bytes) -> None:
    transport.write(
        b"HTTP/1.1 %d %b\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: %d\r\n"
        b"cache-control: no-store\r\nconnection: close\r\n\r\n%b"
        % (status, reason, len(body), body)
    )
    transport.close()


def _host_of(headers: RawHeaders) -> str:
    for name, value in headers:
        if name == b"host":
            return value.decode("latin-1")
    return ""


class _Side(asyncio.Protocol):
    """One end of the splice: what arrives is written to the other end; the other end
    stops reading while this end's send buffer is full."""

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel
        self.transport: asyncio.Transport | None = None
        self.peer: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer.write(data)

    def eof_received(self) -> bool:
        if self.peer is not None and self.peer.can_write_eof():
            self.peer.write_eof()
            return True  # keep the other direction open
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.close()

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume_reading()


class _UpstreamSide(_Side):
    """The upstream end: parses the response head until it is a 101, or the whole
    response when it is not."""

    def __init__(self, tunnel: Tunnel) -> None:
        super().__init__(tunnel)
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.status = 0

    def on_headers_complete(self) -> None:
        if self.parser is not None:
            self.status = self.parser.get_status_code()
            if self.status >= 200 or self.status == 101:
                self.tunnel.answered(self.status)

    def on_message_complete(self) -> None:
        if self.status == 101 or self.status < 200:
            return  # switched (the parser stops next), or an interim response
        self.parser = None
        self.tunnel.close_after_flush()  # not upgraded: the response was relayed, end here

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.parser is None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.parser = None  # 101: from now on, bytes both ways
        except httptools.HttpParserError:
            self.parser = None
            self.tunnel.close()


class Tunnel:
    """A client connection upgraded through the router. Registered with the server's
    connections so the cap counts it and shutdown closes it."""

    def __init__(
        self,
        client: asyncio.Transport,
        deployment: str | None,
        stats: StatsRecorder,
        on_close: Callable[[Tunnel], None],
    ) -> None:
        self.client = client
        self.deployment = deployment
        self.stats = stats
        self.on_close = on_close
        self.started = time.perf_counter()
        self.upstream: asyncio.Transport | None = None
        self.closed = False
        self.client_side = _Side(self)
        self.client_side.connection_made(client)
        client.set_protocol(self.client_side)

    async def open(self, addr: tuple[str, int], head: bytes, timeout: float, host: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, side = await asyncio.wait_for(
                loop.create_connection(lambda: _UpstreamSide(self), addr[0], addr[1]), timeout
            )
        except (OSError, TimeoutError):
            if self.deployment is not None:
                self.stats.record_error(self.deployment, 502)
            if not self.closed:
                _reply(self.client, 502, b"Bad Gateway", pages.bad_gateway(host))
            self.close()
            return
        if self.closed:
            transport.close()
            return
        self.upstream = transport
        side.peer = self.client
        self.client_side.peer = transport
        transport.write(head)
        self.client.resume_reading()

    def answered(self, status: int) -> None:
        if self.deployment is not None:
            self.stats.record(self.deployment, status, time.perf_counter() - self.started)

    def close_after_flush(self) -> None:
        self.client.close()  # a transport's close() sends what is buffered first

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.client.close()
        if self.upstream is not None:
            self.upstream.close()
        self.on_close(self)

    def shutdown(self) -> None:  # called by the server when it stops
        self.close()


class UpgradeHandler:
    """Takes over a client connection whose request asks for a WebSocket upgrade."""

    def __init__(
        self,
        table: RouteTable,
        stats: StatsRecorder,
        connect_timeout: float = 5.0,
        balancer: Balancer | None = None,
    ) -> None:
        self.table = table
        self.balancer = balancer or Balancer()
        self.stats = stats
        self.connect_timeout = connect_timeout
        self.edge_token: bytes | None = None  # set by `Router.trust_edge`
        self.tasks: set[asyncio.Task[None]] = set()

    def __call__(
        self,
        req: UpgradeRequest,
        client: asyncio.Transport,
        rest: bytes,
        on_close: Callable[[Tunnel], None],
    ) -> Tunnel | None:
        problem = request_problem(req.headers)
        if problem is not None:
            _reply(client, 400, b"Bad Request", pages.bad_request(problem))
            return None
        host = _host_of(req.headers)
        route = self.table.lookup(host)
        if route is None or req.target.startswith(INTERNAL_PREFIX):
            _reply(client, 404, b"Not Found", pages.not_found(host))
            return None
        upstream = self.balancer.order(route)[:1]
        if not upstream:
            if route.deployment is not None:
                self.stats.record(route.deployment, 503, None)
            _reply(client, 503, b"Service Unavailable", pages.no_upstream(host))
            return None
        client.pause_reading()
        tunnel = Tunnel(client, route.deployment, self.stats, on_close)
        head = upgrade_head(req, self.edge_token)
        task = asyncio.get_running_loop().create_task(
            tunnel.open(upstream[0], head + rest, self.connect_timeout, host)
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return tunnel


def upgrade_head(req: UpgradeRequest, edge_token: bytes | None = None) -> bytes:
    """The upgrade request for the upstream: end-to-end headers, the router's forwarding
    headers, and the Upgrade/Connection pair the hop-by-hop rules would otherwise drop."""
    upgrade = b"websocket"
    for name, value in req.headers:
        if name == b"upgrade":
            upgrade = value
    headers = upstream_request_headers(req.headers, req.client_ip, req.scheme, edge_token)
    lines = [req.method, b" ", req.target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if name != b"content-length":
            lines += (name, b": ", value, b"\r\n")
    lines += (b"connection: upgrade\r\nupgrade: ", upgrade, b"\r\n\r\n")
    return b"".join(lines)
