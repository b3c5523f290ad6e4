"""The proxying ASGI app: host lookup, internal dispatch, streaming to the upstream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import pages
from .headers import end_to_end, upstream_request_headers
from .routes import Route, RouteTable
from .stats import StatsRecorder

INTERNAL_PREFIX = "/.tristage/"


def _host_of(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"host":
            return str(value.decode("latin-1"))
    server = scope.get("server")
    return f"{server[0]}:{server[1]}" if server else ""


async def _page(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-length":
            return value.strip() != b"0"
        if name == b"transfer-encoding":
            return True
    return False


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
        client_factory: Callable[[], httpx.AsyncClient],
    ) -> None:
        self.table = table
        self.internal_app = internal_app
        self.stats = stats
        self.inflight = inflight
        self._client_factory = client_factory
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
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
        if route.upstream is None:
            if route.deployment is not None:
                self.stats.record(route.deployment, 503, None)
            await _page(send, 503, pages.no_upstream(host))
            return
        await self._proxy(scope, receive, send, host, route, route.upstream)

    async def _proxy(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        host: str,
        route: Route,
        upstream: tuple[str, int],
    ) -> None:
        started = time.perf_counter()
        dep = route.deployment
        client_addr = scope.get("client")
        headers = upstream_request_headers(
            scope["headers"], client_addr[0] if client_addr else "", scope.get("scheme", "http")
        )
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        qs: bytes = scope.get("query_string", b"")
        url = httpx.URL(
            scheme="http",
            host=upstream[0],
            port=upstream[1],
            raw_path=raw_path + (b"?" + qs if qs else b""),
        )
        content: AsyncIterator[bytes] | None = None
        if _has_body(scope["headers"]):
            content = _request_body(receive)
        self.inflight.enter(upstream)
        try:
            request = self.client.build_request(
                scope["method"], url, headers=headers, content=content
            )
            try:
                response = await self.client.send(request, stream=True)
            except (httpx.TransportError, OSError):
                if dep is not None:
                    self.stats.record_error(dep, 502)
                await _page(send, 502, pages.bad_gateway(host))
                return
            try:
                status = response.status_code
                if dep is not None:
                    self.stats.record(dep, status, time.perf_counter() - started)
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": end_to_end(response.headers.raw),
                    }
                )
                if scope["method"] == "HEAD":
                    await send({"type": "http.response.body", "body": b""})
                    return
                await self._relay_body(response, receive, send, dep)
            finally:
                await response.aclose()
        finally:
            self.inflight.leave(upstream)

    async def _relay_body(
        self, response: httpx.Response, receive: Receive, send: Send, dep: str | None
    ) -> None:
        """Copy the upstream body to the client chunk by chunk.

        A response of unknown length (a stream) is cut off when the client goes
        away, so an endless stream does not keep the upstream busy.
        """
        watcher: asyncio.Task[Any] | None = None
        if "content-length" not in response.headers:
            watcher = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            async for chunk in response.aiter_raw():
                if watcher is not None and watcher.done():
                    return
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except (httpx.TransportError, OSError):
            # Headers already went out: all we can do is close the client connection.
            if dep is not None:
                self.stats.count_error(dep)
            raise
        finally:
            if watcher is not None:
                watcher.cancel()


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client disconnected")
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
