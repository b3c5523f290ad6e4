"""The HAProxy edge under test: a real embedded router on a loopback port and a real
HAProxy (`HAProxyEdge`) in front of it, on free loopback ports, in the test's loop; with
an ACME issuer when a CA is given."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from acme_ca import free_port
from tristage.edges.haproxy import AcmeIssuer, ChallengeServer, HAProxyEdge, HAProxySettings
from tristage.edges.router import DeploymentStats, Route, Router, RouteTable
from tristage.edges.router.stats import merged

HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
)
needs_haproxy = pytest.mark.skipif(
    HAPROXY is None, reason="haproxy is not installed (apt-get install haproxy)"
)


@dataclass
class Front:
    router: Router
    edge: HAProxyEdge
    challenges: ChallengeServer
    issuer: AcmeIssuer | None
    http_port: int
    https_port: int

    def replace(self, routes: Mapping[str, Route]) -> None:
        """What the control plane does: the router's table, then HAProxy's."""
        self.router.table.replace(routes)
        self.edge.apply(self.router.table.snapshot())

    def stats(self) -> dict[str, DeploymentStats]:
        return merged(self.router.stats(), self.edge.stats())

    def inflight(self, upstream: tuple[str, int]) -> int:
        return self.router.inflight(upstream) + self.edge.inflight(upstream)


@contextlib.asynccontextmanager
async def haproxy_front(
    directory: Path,
    acme_ca: str | None = None,
    ca_roots: tuple[Path, ...] = (),
    redirects: Mapping[str, str] | None = None,
    hsts: tuple[str, ...] = (),
    slots: int = 16,
) -> AsyncIterator[Front]:
    assert HAPROXY is not None
    router = Router(RouteTable(), connect_timeout=2.0)
    await router.start(port=0)
    assert router.port is not None
    challenges = ChallengeServer()
    acme_port = await challenges.start()
    token = "t" * 48
    settings = HAProxySettings(
        directory=directory, router=("127.0.0.1", router.port), acme=("127.0.0.1", acme_port),
        token=token, http_port=free_port(), https_port=free_port(), bind="127.0.0.1",
        slots=slots,
    )  # fmt: skip
    router.trust_edge(token)
    edge = HAProxyEdge(settings, binary=HAPROXY)
    issuer = None
    if acme_ca is not None:
        issuer = AcmeIssuer(acme_ca, directory / "acme", challenges, ca_roots)
    try:
        await edge.start(redirects or {}, hsts)
        yield Front(router, edge, challenges, issuer, settings.http_port, settings.https_port)
    finally:
        await edge.stop()
        await challenges.stop()
        await router.stop()
