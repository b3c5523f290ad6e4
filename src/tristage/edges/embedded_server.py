"""uvicorn inside the caller's running asyncio loop: the router and the HTTP API both use it."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from starlette.types import ASGIApp


def bind_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening, non-blocking TCP socket on host:port (0 picks a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose
    # proto says TCP, and without it every response pays a delayed-ACK stall (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class EmbeddedServer:
    """Serve an ASGI app with uvicorn in the running loop: no access log, no signal handlers.

    `options` are `uvicorn.Config` keyword arguments on top of these defaults.
    """

    def __init__(self, app: ASGIApp, name: str, backlog: int = 2048, **options: Any) -> None:
        self.app = app
        self.name = name
        self.backlog = backlog
        self.options: dict[str, Any] = {
            "access_log": False,  # an access log line could carry a token in a query string
            "log_config": None,
            "log_level": "warning",
            "server_header": False,
            "proxy_headers": False,
            **options,
        }
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @property
    def port(self) -> int | None:
        return int(self._sock.getsockname()[1]) if self._sock is not None else None

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0 picks a free port); returns the bound port."""
        if self._server is not None:
            raise RuntimeError(f"{self.name} already started")
        sock = bind_socket(host, port, self.backlog)
        config = uvicorn.Config(self.app, **self.options)
        server = uvicorn.Server(config)
        config.load()
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        if server.should_exit:  # the app's startup failed
            sock.close()
            raise OSError(f"{self.name} could not start on {host}:{port}")
        self._server, self._sock = server, sock
        self._task = asyncio.create_task(server.main_loop(), name=f"{self.name}-tick")
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and let requests in flight finish (bounded by the graceful timeout)."""
        server, task = self._server, self._task
        if server is None:
            return
        server.should_exit = True
        if task is not None:
            await task
        await server.shutdown(sockets=[self._sock] if self._sock else None)
        self._server = self._task = self._sock = None
