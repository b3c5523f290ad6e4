"""`Router`: the embedded HTTP/1.1 front door, run inside the caller's asyncio loop."""

from __future__ import annotations

import asyncio
import logging
import socket

import uvicorn
from starlette.types import ASGIApp

from .proxy import Inflight, ProxyApp
from .routes import RouteTable
from .stats import DeploymentStats, StatsRecorder
from .upstream import UpstreamPool

log = logging.getLogger(__name__)


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose
    # proto says TCP, and without it every response pays a delayed-ACK stall.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class Router:
    """Host-based reverse proxy over a `RouteTable`.

    ```
    router = Router(table, internal_app=app)
    port = await router.start(host="127.0.0.1", port=8080)
    ...
    await router.stop()
    ```
    """

    def __init__(
        self,
        table: RouteTable,
        internal_app: ASGIApp | None = None,
        *,
        connect_timeout: float = 5.0,
        pool_size: int = 256,
        graceful_timeout: float = 5.0,
    ) -> None:
        self.table = table
        self.internal_app = internal_app
        self._stats = StatsRecorder()
        self._inflight = Inflight()
        self._connect_timeout = connect_timeout
        self._pool_size = pool_size
        self._graceful_timeout = graceful_timeout
        self._pool = UpstreamPool(connect_timeout=connect_timeout, max_idle=pool_size)
        self._app = ProxyApp(table, internal_app, self._stats, self._inflight, self._pool)
        self._server: uvicorn.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @property
    def port(self) -> int | None:
        return self._sock.getsockname()[1] if self._sock is not None else None

    async def start(self, host: str = "127.0.0.1", port: int = 8080) -> int:
        """Listen on host:port (0 picks a free port); returns the bound port."""
        if self._server is not None:
            raise RuntimeError("router already started")
        sock = bind_socket(host, port)
        config = uvicorn.Config(
            self._app,
            http="httptools",
            interface="asgi3",
            ws="none",
            lifespan="off",
            access_log=False,
            log_config=None,
            log_level="warning",
            server_header=False,
            date_header=False,
            proxy_headers=False,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=int(self._graceful_timeout),
        )
        server = uvicorn.Server(config)
        config.load()
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        self._server, self._sock = server, sock
        self._ticker = asyncio.create_task(server.main_loop(), name="tristage-router-tick")
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        """Stop listening, let requests in flight finish (bounded), close upstream connections."""
        server, ticker = self._server, self._ticker
        if server is None:
            return
        server.should_exit = True
        if ticker is not None:
            await ticker
        await server.shutdown(sockets=[self._sock] if self._sock else None)
        self._pool.close()
        self._server = self._ticker = self._sock = None

    def inflight(self, upstream: tuple[str, int]) -> int:
        """Requests currently being proxied to `upstream` (0 once it is drained)."""
        return self._inflight.get(upstream)

    def stats(self) -> dict[str, DeploymentStats]:
        """Per deployment id: request counts by status class, upstream errors, p50/p99."""
        return self._stats.snapshot()
