"""The `ask` endpoint of on-demand TLS: Caddy asks `GET /ask?domain=HOST` before it
requests a certificate for HOST; 200 lets it, anything else refuses.

A small HTTP/1.0-style server on a loopback port (Caddy 2.6 asks over TCP), answering
from a predicate over the router's current table, so a certificate is requested only
for a host tristage routes: a scan of random names costs the CA nothing. Local names
(`*.localhost`, IP literals) never get one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from ...domain.hostnames import is_local
from ..router import normalize_host

MAX_HEAD = 8192


class AskServer:
    def __init__(self, allowed: Callable[[str], bool]) -> None:
        self.allowed = allowed
        self.asked: list[tuple[str, bool]] = []  # the last questions and answers
        self._server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1") -> str:
        self._server = await asyncio.start_server(self._handle, host, 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://{host}:{port}/ask"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    def answer(self, domain: str) -> bool:
        host = normalize_host(domain)
        ok = bool(host) and not is_local(host) and self.allowed(host)
        self.asked = [*self.asked[-99:], (host, ok)]
        return ok

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            line = head[: min(len(head), MAX_HEAD)].split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split(" ")
            ok = False
            if len(parts) == 3 and parts[0] == "GET":
                query = parse_qs(urlsplit(parts[1]).query)
                domains = query.get("domain", [])
                ok = len(domains) == 1 and self.answer(domains[0])
            status = b"200 OK" if ok else b"404 Not Found"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
