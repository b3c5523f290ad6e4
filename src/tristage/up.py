"""The composition root of `tristage up`: the control plane with its faces.

It wires the router's internal app (webhook ingest), the HTTP API and dashboard
next to the router, and runs until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import Tristage


def run_foreground(
    api: Tristage, host: str, port: int, log: Callable[[str], None] | None = None
) -> None:
    """`tristage up`: run until SIGINT/SIGTERM, then stop children and exit cleanly."""
    from .http.app import serve_for_control_plane
    from .http.internal import build_internal_app
    from .services.controlplane import ControlPlane

    async def serve_http(stats: Any, bind_host: str, bind_port: int) -> tuple[Any, int]:
        return await serve_for_control_plane(api.home, stats, bind_host, bind_port)

    async def main() -> None:
        stop_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_event.set)
        cp = ControlPlane(api, host, port, log=log)
        await cp.run(stop_event, internal_app=build_internal_app(api), serve_http=serve_http)

    asyncio.run(main())
