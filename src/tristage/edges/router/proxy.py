"""The proxying ASGI app: host lookup, internal dispatch, streaming to the upstream."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import pages
from .headers import end_to_end, request_problem, upstream_request_headers
from .routes import Balancer, RouteTable
from .stats import StatsRecorder
from .upstream import UpstreamClosed, UpstreamConnection, UpstreamPool, UpstreamTimeout

INTERNAL_PREFIX = "/.tristage/"
_REPLAYABLE = frozenset({"GET", "HEAD", "OPTIONS"})  # sent again to another replica

log = logging.getLogger(__name__)


class ClientGone(Exception):
    """The client went away (or was timed out) while sending its request body."""


def _host_of(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"host":
            return str(value.decode("latin-1"))
    server = scope.get("server")
    return f"{server[0]}:{server[1]}" if server else ""


async def _page(send: Send, status: int, body: bytes, *, close: bool = False) -> None:
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Inflight:
    """Requests in flight per upstream address."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, int], int] = {}

    def enter(self, upstream: tuple[str, int]) -> None:
        self.counts[upstream] = self.counts.get(upstream, 0) + 1

    def leave(self, upstream: tuple[str, int]) -> None:
        n = self.counts.get(upstream, 0) - 1
        if n > 0:
            self.counts[upstream] = n
        else:
            self.counts.pop(upstream, None)

    def get(self, upstream: tuple[str, int]) -> int:
        return self.counts.get(upstream, 0)


class ProxyApp:
    def __init__(
        self,
        table: RouteTable,
        internal_app: ASGIApp | None,
        stats: StatsRecorder,
        inflight: Inflight,
        pool: UpstreamPool,
        request_timeout: float = 60.0,
    ) -> None:
        self.request_timeout = request_timeout
        self.edge_token: bytes | None = None  # set by `Router.trust_edge`
        self.table = table
        self.internal_app = internal_app
        self.stats = stats
        self.inflight = inflight
        self.pool = pool
        self.balancer = Balancer()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        problem = request_problem(scope["headers"], scope["http_version"])
        if problem is not None:
            # the rest of the connection cannot be trusted to be framed as the client meant
            await _page(send, 400, pages.bad_request(problem), close=True)
            return
        host = _host_of(scope)
        route = self.table.lookup(host)
        if route is None:
            await _page(send, 404, pages.not_found(host))
            return
        path: str = scope["path"]
        if path.startswith(INTERNAL_PREFIX):
            if self.internal_app is None:
                await _page(send, 404, pages.internal_missing(host))
                return
            await self.internal_app({**scope, "tristage.route": route}, receive, send)
            return
        tries = self.balancer.order(route)
        if not tries:
            if route.deployment is not None:
                self.stats.record(route.deployment, 503, None)
            await _page(send, 503, pages.no_upstream(host))
            return
        timeout = route.request_timeout or self.request_timeout
        for i, upstream in enumerate(tries):
            self.inflight.enter(upstream)
            try:
                done = await self._proxy(
                    scope, receive, send, host, route.deployment, upstream, timeout,
                    another=i < len(tries) - 1,
                )  # fmt: skip
            finally:
                self.inflight.leave(upstream)
            if done:
                return
            # that replica failed before answering and the request can be sent again
            self.balancer.failed(upstream)

    async def _proxy(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        host: str,
        dep: str | None,
        upstream: tuple[str, int],
        timeout: float,
        another: bool = False,
    ) -> bool:
        """Proxy one request to `upstream`; False (nothing sent to the client) when it
        failed before answering, `another` replica may take it and it can be sent
        again: it was refused a connection, or it is a bodiless GET/HEAD/OPTIONS."""
        started = time.perf_counter()
        method: str = scope["method"]
        head, framing = _request_head(scope, self.edge_token)
        conn: UpstreamConnection | None = None
        try:
            conn = await self.pool.acquire(upstream)
            try:
                status, headers, cut = await self._exchange(
                    conn, head, method, framing, receive, timeout
                )
            except UpstreamClosed:
                # A reused keep-alive connection the upstream had just closed: replay a
                # bodiless request once on a fresh connection.
                if not (conn.reused and not conn.any_bytes and framing is None):
                    raise
                conn.close()
                conn = await self.pool.connect(upstream)
                status, headers, cut = await self._exchange(
                    conn, head, method, framing, receive, timeout
                )
        except ClientGone:
            if conn is not None:
                conn.close()  # the upstream holds half a request
            return True
        except UpstreamTimeout:
            if conn is not None:
                conn.close()
            if dep is not None:
                self.stats.record_error(dep, 504)
            await _page(send, 504, pages.gateway_timeout(host))
            return True
        except (TimeoutError, OSError):
            if conn is not None:
                conn.close()
            if another and (
                conn is None or (framing is None and not conn.any_bytes and method in _REPLAYABLE)
            ):
                return False
            if dep is not None:
                self.stats.record_error(dep, 502)
            await _page(send, 502, pages.bad_gateway(host))
            return True
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        if dep is not None:
            self.stats.record(dep, status, time.perf_counter() - started)
        # After an early answer the client may still be sending its body: the server reads
        # and discards the rest (closing now would reset the connection and could destroy
        # the answer before the client reads it).
        try:
            await send(
                {"type": "http.response.start", "status": status, "headers": end_to_end(headers)}
            )
            whole = conn.take_buffered()
            if whole is not None:
                await send({"type": "http.response.body", "body": whole})
            else:
                await self._relay_body(conn, headers, receive, send, dep)
        finally:
            if cut:
                conn.close()  # it may still hold part of the request the upstream never read
            self.pool.release(upstream, conn)
        return True

    @staticmethod
    async def _exchange(
        conn: UpstreamConnection,
        head: bytes,
        method: str,
        framing: bytes | None,
        receive: Receive,
        timeout: float,
    ) -> tuple[int, list[tuple[bytes, bytes]], bool]:
        """Send the request, return the response's status and headers and whether the
        upload was cut short because the upstream answered (403, 413...) before it."""
        conn.begin(head, head_only=method == "HEAD", timeout=timeout)
        cut = False
        if framing is not None:
            try:
                await _upload(conn, framing == b"chunked", receive)
            except UpstreamClosed:
                if not conn.headers_done:
                    raise
                cut = True  # the app answered early: its answer is the response
        status, headers = await conn.response_head()
        return status, headers, cut

    async def _relay_body(
        self,
        conn: UpstreamConnection,
        headers: list[tuple[bytes, bytes]],
        receive: Receive,
        send: Send,
        dep: str | None,
    ) -> None:
        """Copy the upstream body to the client chunk by chunk.

        A response of unknown length (a stream) is cut off when the client goes
        away, so an endless stream does not keep the upstream busy.
        """
        watcher: asyncio.Task[Any] | None = None
        if not any(n.lower() == b"content-length" for n, _ in headers):
            watcher = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            async for chunk in conn.body():
                if watcher is not None and watcher.done():
                    conn.close()
                    return
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except UpstreamClosed as e:
            # Headers already went out: all we can do is cut the client connection short
            # (returning without finishing the response makes the server close it).
            if dep is not None:
                self.stats.count_error(dep)
            log.warning("upstream of deployment %s failed mid-response: %s", dep, e)
        finally:
            if watcher is not None:
                watcher.cancel()


def _request_head(scope: Scope, edge_token: bytes | None = None) -> tuple[bytes, bytes | None]:
    """The request line and headers for the upstream, and how the body is framed:
    None (no body), b"chunked", or b"length"."""
    client = scope.get("client")
    raw: list[tuple[bytes, bytes]] = scope["headers"]
    framing: bytes | None = None
    length = b""
    for name, value in raw:
        if name == b"transfer-encoding":
            framing = b"chunked"
            break
        if name == b"content-length":
            length = value.strip()
            framing = b"length" if length != b"0" else None
    headers = upstream_request_headers(
        raw, client[0] if client else "", scope.get("scheme", "http"), edge_token
    )
    target: bytes = scope.get("raw_path") or scope["path"].encode()
    qs: bytes = scope.get("query_string", b"")
    if qs:
        target += b"?" + qs
    lines = [scope["method"].encode(), b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if name == b"expect" or name == b"content-length":
            continue
        lines += (name, b": ", value, b"\r\n")
    # The body's framing is always the router's own, whatever the client's headers said.
    if framing == b"chunked":
        lines.append(b"transfer-encoding: chunked\r\n")
    elif length:
        lines += (b"content-length: ", length, b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines), framing


async def _upload(conn: UpstreamConnection, chunked: bool, receive: Receive) -> None:
    async for chunk in _request_body(receive):
        if chunked:
            await conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            await conn.write(chunk)
    if chunked:
        await conn.write(b"0\r\n\r\n")


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone("client disconnected")
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
