"""The front door of `tristage up`: the embedded router alone, or the production edge
(Caddy terminating TLS in front of it) when `tristage up --edge caddy` asks for it
(`--edge haproxy`: `frontdoor_haproxy.py`).

The control plane keeps switching aliases in the router's table (the zero-drop switch);
the edge's configuration follows only the public names of the projects' `tristage.toml`
(which domains redirect to which, which get HSTS), so a deploy, promote or rollback never
touches Caddy. Certificates are requested on demand for hosts the router's table holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from ..domain.edge import EdgeOptions
from ..domain.hostnames import is_local
from ..edges.caddy import CaddyEdge, EdgePlan, EdgeSettings
from ..edges.router import Router, RouteTable
from ..edges.router.stats import DeploymentStats
from ..edges.supervised import SupervisedEdge
from ..paths import private_mkdirs, socket_path
from .front_door import RouterProcess
from .releases import LOOPBACK, ProjectRoutes

EDGE_DIR = "edge"
TOKEN_FILE = "token"

E = TypeVar("E", bound=SupervisedEdge)


def plan_of(routes: Sequence[ProjectRoutes]) -> EdgePlan:
    """The edge's part of every project's public names."""
    names: dict[str, tuple[tuple[str, ...], bool]] = {}
    for pr in routes:
        for env, public in pr.public.items():
            if public.domains:
                names[f"{pr.project}/{env}"] = (public.domains, env == pr.production)
    return EdgePlan.of(names)


def edge_token(directory: Path) -> str:
    """The token the edge and the router share, kept (0600) across control planes so an
    edge and a router process that outlived one keep trusting each other."""
    path = directory / TOKEN_FILE
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if len(token) < 32:
        token = secrets.token_hex(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    return token


class EdgeFrontDoor(Generic[E]):
    """What the front doors of the production edges share: the private edge directory
    under the platform home, the start (the router trusts the edge's token before the
    edge takes its first request) and the edge's health."""

    edge_name: str  # for the log: "caddy", "haproxy"

    def __init__(
        self, home: Path, options: EdgeOptions, table: RouteTable, log: Callable[[str], None]
    ) -> None:
        self.options = options
        self.table = table
        self.log = log
        self.directory = private_mkdirs(home / EDGE_DIR)
        self.edge: E | None = None

    async def start(
        self, router: Router | RouterProcess, router_port: int, routes: Sequence[ProjectRoutes]
    ) -> None:
        token = edge_token(self.directory)
        # the router first: from the edge's first request on, its headers are trusted
        if isinstance(router, RouterProcess):
            await router.trust_edge(token)
        else:
            router.trust_edge(token)
        await self._start_edge(token, router_port, plan_of(routes))
        o = self.options
        bind = o.bind or "*"
        self.log(
            f"edge: {self.edge_name} serving https on {bind}:{o.https_port} and http on "
            f"{bind}:{o.http_port} (certificates from {o.acme_ca})"
        )

    async def _start_edge(self, token: str, router_port: int, plan: EdgePlan) -> None:
        """The edge made and started in front of the router on `router_port`."""
        raise NotImplementedError

    def healthy(self) -> bool:
        return self.edge is not None and self.edge.healthy()


class FrontDoor(EdgeFrontDoor[CaddyEdge]):
    """Caddy in front of the router, for the control plane's lifetime."""

    edge_name = "caddy"

    def __init__(
        self, home: Path, options: EdgeOptions, table: RouteTable, log: Callable[[str], None]
    ) -> None:
        super().__init__(home, options, table, log)
        self._plan = EdgePlan()
        self._apply: asyncio.Task[None] | None = None

    def allowed(self, host: str) -> bool:
        """A certificate only for a public host the router serves."""
        return not is_local(host) and self.table.lookup(host) is not None

    async def _start_edge(self, token: str, router_port: int, plan: EdgePlan) -> None:
        o = self.options

        def settings(ask_url: str, token: str) -> EdgeSettings:
            return EdgeSettings(
                router=(LOOPBACK, router_port), ask_url=ask_url, token=token,
                admin_socket=socket_path(self.directory / "admin.sock"),
                storage=self.directory / "data",
                log_file=self.directory / "caddy.log", http_port=o.http_port,
                https_port=o.https_port, bind=o.bind, acme_ca=o.acme_ca,
                acme_email=o.acme_email, acme_ca_roots=o.acme_ca_roots,
            )  # fmt: skip

        self.edge = CaddyEdge(
            self.directory, settings, self.allowed, binary=o.caddy, log=self.log, token=token
        )
        self._plan = plan
        await self.edge.start(self._plan)

    def routes_changed(self, routes: Sequence[ProjectRoutes]) -> None:
        """(loop) After each swap of the router's table: a new edge config only when the
        public names changed."""
        plan = plan_of(routes)
        if self.edge is None or plan == self._plan:
            return
        self._plan = plan
        previous = self._apply

        async def apply() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            assert self.edge is not None
            try:
                await self.edge.apply(plan)
                self.log("edge: configuration updated (public names changed)")
            except Exception as exc:
                self.log(f"edge: could not update the configuration: {exc}")

        self._apply = asyncio.ensure_future(apply())

    # Caddy forwards every request to the router: its counters, requests in flight and
    # the switch are the router's
    async def flush(self, timeout: float = 5.0) -> bool:
        return True

    def stats(self) -> dict[str, DeploymentStats]:
        return {}

    async def inflight_now(self, upstream: tuple[str, int]) -> int:
        return 0

    async def stop(self) -> None:
        if self._apply is not None:
            with contextlib.suppress(Exception):
                await self._apply
        if self.edge is not None:
            await self.edge.stop()
