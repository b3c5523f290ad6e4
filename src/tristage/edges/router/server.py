"""`Router`: the embedded HTTP/1.1 front door, run inside the caller's asyncio loop."""

from __future__ import annotations

import logging
import socket

from starlette.types import ASGIApp

from ..embedded_server import EmbeddedServer
from .fastpath import FastPath
from .proxy import Inflight, ProxyApp
from .routes import RouteTable
from .stats import DeploymentStats, StatsRecorder
from .tunnel import UpgradeHandler
from .upstream import UpstreamPool

log = logging.getLogger(__name__)


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
        header_timeout: float = 10.0,
        idle_timeout: float = 30.0,
        max_connections: int | None = None,
        request_timeout: float = 60.0,
    ) -> None:
        """`header_timeout`: a request's head must arrive within it; `idle_timeout`: the
        longest silence allowed in a request body or between two requests;
        `max_connections`: open client connections past which new ones get 503 (default:
        from the process's file descriptor limit); `request_timeout`: how long a release may
        take to start answering (504 after), unless its route says otherwise."""
        self.table = table
        self.internal_app = internal_app
        self._stats = StatsRecorder()
        self._inflight = Inflight()
        self._pool = UpstreamPool(connect_timeout=connect_timeout, max_idle=pool_size)
        self._app = ProxyApp(
            table, internal_app, self._stats, self._inflight, self._pool, request_timeout
        )
        self._upgrade = UpgradeHandler(table, self._stats, connect_timeout)
        self._fast = FastPath(table, self._stats, self._inflight, self._pool, request_timeout)
        self._server = EmbeddedServer(
            self._app,
            "tristage-router",
            header_timeout=header_timeout,
            idle_timeout=idle_timeout,
            max_connections=max_connections,
            upgrade=self._upgrade,
            shortcut=self._fast.take,
            interface="asgi3",
            ws="none",
            lifespan="off",
            date_header=False,
            timeout_graceful_shutdown=int(graceful_timeout),
        )

    def trust_edge(self, token: str | None) -> None:
        """Keep the forwarding headers of requests that carry `X-Tristage-Edge: token`
        (from the production edge in front, `edges/caddy`); None trusts no one."""
        raw = token.encode() if token else None
        self._app.edge_token = raw
        self._fast.edge_token = raw
        self._upgrade.edge_token = raw

    @property
    def port(self) -> int | None:
        return self._server.port

    async def start(
        self, host: str = "127.0.0.1", port: int = 8080, sock: socket.socket | None = None
    ) -> int:
        """Listen on host:port (0 picks a free port), or on the listening socket `sock`;
        returns the bound port."""
        return await self._server.start(host, port, sock)

    async def stop(self) -> None:
        """Stop listening, let requests in flight finish (bounded), close upstream connections."""
        if self._server.port is None:
            return
        await self._server.stop()
        self._pool.close()

    def inflight(self, upstream: tuple[str, int]) -> int:
        """Requests currently being proxied to `upstream` (0 once it is drained)."""
        return self._inflight.get(upstream)

    async def inflight_now(self, upstream: tuple[str, int]) -> int:
        """`inflight`, as a router in another process answers it (see `RouterProcess`)."""
        return self._inflight.get(upstream)

    def stats(self) -> dict[str, DeploymentStats]:
        """Per deployment id: request counts by status class, upstream errors, p50/p99."""
        return self._stats.snapshot()
