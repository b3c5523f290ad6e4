"""The production edge under test: a real embedded router on a loopback port with a real
Caddy in front of it (`CaddyEdge`), on free loopback ports, in the test's asyncio loop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from acme_ca import CADDY, free_port
from tristage.edges.caddy import CaddyEdge, EdgePlan, EdgeSettings
from tristage.edges.router import Router, RouteTable
from tristage.paths import socket_path


@dataclass
class Front:
    router: Router
    edge: CaddyEdge
    http_port: int
    https_port: int


@contextlib.asynccontextmanager
async def caddy_front(
    directory: Path,
    acme_ca: str = "https://127.0.0.1:1/dir",
    ca_roots: tuple[Path, ...] = (),
    plan: EdgePlan | None = None,
) -> AsyncIterator[Front]:
    assert CADDY is not None
    router = Router(RouteTable(), connect_timeout=2.0)
    await router.start(port=0)
    assert router.port is not None
    http_port, https_port = free_port(), free_port()
    router_port = router.port

    def settings(ask_url: str, token: str) -> EdgeSettings:
        return EdgeSettings(
            router=("127.0.0.1", router_port), ask_url=ask_url, token=token,
            admin_socket=socket_path(directory / "admin.sock"), storage=directory / "data",
            log_file=directory / "caddy.log", http_port=http_port, https_port=https_port,
            bind="127.0.0.1", acme_ca=acme_ca, acme_ca_roots=ca_roots,
        )  # fmt: skip

    edge = CaddyEdge(
        directory, settings, allowed=lambda host: router.table.lookup(host) is not None,
        binary=CADDY,
    )  # fmt: skip
    router.trust_edge(edge.token)
    try:
        await edge.start(plan or EdgePlan())
        yield Front(router, edge, http_port, https_port)
    finally:
        await edge.stop()
        await router.stop()
