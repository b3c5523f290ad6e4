"""The composition root of `tristage up`: the control plane with its faces.

It wires the router's internal app (webhook ingest), the HTTP API and dashboard
next to the router, and runs until SIGINT/SIGTERM. `HttpServer` runs the HTTP app
with uvicorn inside the control plane's asyncio loop.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp

from .domain.numbers import ascii_int
from .edges.embedded_server import EmbeddedServer
from .errors import UsageError

if TYPE_CHECKING:
    from .api import Tristage
    from .domain.edge import EdgeOptions
    from .http.views import StatsSource


class HttpServer(EmbeddedServer):
    """Serve the API and dashboard with uvicorn inside the caller's running asyncio loop."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(
            app, "tristage-http", backlog=128, lifespan="on", timeout_graceful_shutdown=3
        )


async def serve_http(
    home: Path, stats: StatsSource, host: str, router_port: int
) -> tuple[HttpServer, int]:
    """Start the API + dashboard next to the router.

    The port is `$TRISTAGE_DASHBOARD_PORT` if set, else the router's port + 1 (a free
    one when that is taken or the router's port was picked at random).
    """
    from .http.app import build_app

    wanted_text = os.environ.get("TRISTAGE_DASHBOARD_PORT", "")
    if ascii_int(wanted_text) is not None:
        wanted = int(wanted_text)
    elif wanted_text:
        raise UsageError(
            f"TRISTAGE_DASHBOARD_PORT={wanted_text!r} is not a port number",
            "set it to a number (0 picks a free port) or unset it",
        )
    else:
        wanted = router_port + 1 if router_port and router_port < 65535 else 0
    server = HttpServer(build_app(home, stats))
    try:
        port = await server.start(host, wanted)
    except OSError:
        if wanted_text:
            raise
        port = await server.start(host, 0)
    return server, port


def run_foreground(
    api: Tristage,
    host: str,
    port: int,
    log: Callable[[str], None] | None = None,
    edge: EdgeOptions | None = None,
) -> None:
    """`tristage up`: run until SIGINT/SIGTERM, then stop children and exit cleanly."""
    from .http.internal import build_internal_app
    from .services.controlplane import ControlPlane

    async def serve(stats: Any, bind_host: str, bind_port: int) -> tuple[Any, int]:
        return await serve_http(api.home, stats, bind_host, bind_port)

    async def main() -> None:
        stop_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_event.set)
        # the router runs in a process of its own that outlives this one, and so does the
        # production edge in front of it (the two share the edge's token)
        cp = ControlPlane(api, host, port, log=log, edge=edge, router_process=True)
        await cp.run(stop_event, internal_app=build_internal_app(api), serve_http=serve)

    asyncio.run(main())
