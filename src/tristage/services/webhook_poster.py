"""Posting deliveries to the app: the router's lean pooled HTTP/1.1 client
(keep-alive per release); https destinations go through httpx."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import httpx

from ..domain import webhooks as dom
from ..edges.router.upstream import UpstreamClosed, UpstreamConnection, UpstreamPool


class Poster:
    def __init__(self, timeout: float, max_idle: int) -> None:
        self.timeout = timeout
        self.pool = UpstreamPool(connect_timeout=min(timeout, 5.0), max_idle=max_idle)
        self._tls: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Poster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.pool.close()
        if self._tls is not None:
            await self._tls.aclose()

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> dom.Outcome:
        target = urlsplit(url)
        if target.scheme == "https":
            return await self._post_tls(url, headers, body)
        addr = (target.hostname or "127.0.0.1", target.port or 80)
        path = (target.path or "/") + (f"?{target.query}" if target.query else "")
        lines = [f"POST {path} HTTP/1.1", f"Host: {target.netloc}"]
        lines += [f"{k}: {v}" for k, v in headers.items() if k not in _HOP_HEADERS]
        lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            return await asyncio.wait_for(self._exchange(addr, head, body), self.timeout)
        except TimeoutError:
            return dom.Outcome(None, f"timeout after {self.timeout:g}s")
        except (OSError, UpstreamClosed) as exc:
            return dom.Outcome(None, f"{type(exc).__name__}: {exc}"[:300])

    async def _post_tls(self, url: str, headers: dict[str, str], body: bytes) -> dom.Outcome:
        if self._tls is None:
            self._tls = httpx.AsyncClient(timeout=self.timeout, trust_env=False)
        sent = {k: v for k, v in headers.items() if k not in _HOP_HEADERS}
        try:
            resp = await self._tls.post(url, content=body, headers=sent)
        except httpx.TimeoutException:
            return dom.Outcome(None, f"timeout after {self.timeout:g}s")
        except httpx.HTTPError as exc:
            return dom.Outcome(None, f"{type(exc).__name__}: {exc}"[:300])
        return _outcome(resp.status_code, resp.headers.get("retry-after"), resp.content)

    async def _exchange(self, addr: tuple[str, int], head: bytes, body: bytes) -> dom.Outcome:
        conn = await self.pool.acquire(addr)
        try:
            try:
                status, headers = await self._request(conn, head, body)
            except UpstreamClosed:
                if not (conn.reused and not conn.any_bytes):
                    raise
                conn.close()  # a stale keep-alive connection: once more on a fresh one
                conn = await self.pool.connect(addr)
                status, headers = await self._request(conn, head, body)
            snippet = b""
            async for chunk in conn.body():
                if len(snippet) < 200:
                    snippet += chunk
        except BaseException:
            conn.close()
            raise
        self.pool.release(addr, conn)
        retry_after = None
        if not 200 <= status < 300:
            for name, value in headers:
                if name.lower() == b"retry-after":
                    retry_after = value.decode("latin-1")
                    break
        return _outcome(status, retry_after, snippet)

    @staticmethod
    async def _request(
        conn: UpstreamConnection, head: bytes, body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        if len(body) <= ONE_WRITE_BYTES:
            conn.begin(head + body, head_only=False)  # one send for the usual delivery
        else:
            conn.begin(head, head_only=False)
            await conn.write(body)
        return await conn.response_head()


def _outcome(status: int, retry_after: str | None, snippet: bytes) -> dom.Outcome:
    """An answer as an attempt's outcome: the error says the status and the first 200
    bytes of the body; `Retry-After` (seconds or an HTTP date) becomes a capped wait."""
    if 200 <= status < 300:
        return dom.Outcome(status)
    text = snippet[:200].decode("utf-8", "replace").strip()
    wait = dom.parse_retry_after(retry_after, time.time())
    return dom.Outcome(status, f"HTTP {status}" + (f": {text}" if text else ""), wait)


ONE_WRITE_BYTES = 65536  # a body up to this size goes out with the head in one write
_HOP_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding"})
