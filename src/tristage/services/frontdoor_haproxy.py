"""The front door of `tristage up --edge haproxy`: HAProxy terminating TLS and switching.

HAProxy sends each host with running web processes straight to them; the embedded router
(its own process, as with the other edges) keeps what needs its features: `/.tristage/*`
paths, protected and sleeping previews, hosts without a running release, unknown hosts.
After each swap of the router's table the same table is applied to HAProxy through its
runtime API (servers made ready, old ones drained; never a reload), and a switch is
recorded only once HAProxy serves it (`flush`).

Certificates: every public host that enters the table gets one through ACME (HTTP-01,
answered by the challenge server HAProxy forwards `/.well-known/acme-challenge/` to),
stored 0600 under the platform home and loaded into HAProxy without a reload; renewed 30
days before expiry. Counters for the monitor come from HAProxy's `show stat`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ..domain.edge import EdgeOptions
from ..domain.hostnames import is_local
from ..edges.caddy import EdgePlan
from ..edges.haproxy import (
    AcmeError,
    AcmeIssuer,
    ChallengeServer,
    HAProxyEdge,
    HAProxySettings,
    due,
    expires_at,
)
from ..edges.router import Route, RouteTable
from ..edges.router.stats import DeploymentStats
from ..paths import private_mkdirs
from .frontdoor import EdgeFrontDoor, plan_of
from .releases import LOOPBACK, ProjectRoutes

STATS_EVERY = 0.5
RETIRE_EVERY = 1.0
RENEW_CHECK = 3600.0
RETRY_AFTER = (30.0, 60.0, 300.0, 1800.0, 3600.0)


class HAProxyFrontDoor(EdgeFrontDoor[HAProxyEdge]):
    """HAProxy in front of the router, for the control plane's lifetime."""

    edge_name = "haproxy"

    def __init__(
        self, home: Path, options: EdgeOptions, table: RouteTable, log: Callable[[str], None]
    ) -> None:
        super().__init__(home, options, table, log)
        self.challenges = ChallengeServer()
        self.issuer: AcmeIssuer | None = None
        self._stats: dict[str, DeploymentStats] = {}
        self._generation = 0
        self._applied = 0
        self._dirty = asyncio.Event()
        self._applied_event = asyncio.Event()
        self._certs_wanted = asyncio.Event()
        self._failed: dict[str, tuple[float, int]] = {}  # host -> (retry at, failures)
        self._tasks: set[asyncio.Task[None]] = set()
        self._names: tuple[dict[str, str], frozenset[str]] = ({}, frozenset())
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------
    async def _start_edge(self, token: str, router_port: int, plan: EdgePlan) -> None:
        o = self.options
        acme_port = await self.challenges.start(LOOPBACK)
        settings = HAProxySettings(
            directory=private_mkdirs(self.directory / "haproxy"), router=(LOOPBACK, router_port),
            acme=(LOOPBACK, acme_port), token=token, http_port=o.http_port,
            https_port=o.https_port, bind=o.bind,
        )  # fmt: skip
        self.edge = HAProxyEdge(settings, binary=o.haproxy, log=self.log)
        self.edge.on_restart = self._changed
        self._names = (dict(plan.redirects), plan.hsts)
        try:
            await self.edge.start(plan.redirects, plan.hsts)
        except BaseException:
            await self.challenges.stop()
            raise
        self.issuer = AcmeIssuer(
            o.acme_ca, self.directory / "acme", self.challenges, o.acme_ca_roots, o.acme_email
        )
        await asyncio.to_thread(self.edge.apply, self.table.snapshot())
        self._applied = self._generation
        for coro in (self._syncer(), self._retirer(), self._poll_stats(), self._certificates()):
            task = asyncio.ensure_future(coro)
            self._tasks.add(task)
        self._certs_wanted.set()

    async def stop(self) -> None:
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.edge is not None:
            await self.edge.stop()
        await self.challenges.stop()

    # -- routes ----------------------------------------------------------------------
    def _changed(self) -> None:
        self._generation += 1
        self._dirty.set()

    def routes_changed(self, routes: Sequence[ProjectRoutes]) -> None:
        """(loop) After each swap of the router's table."""
        plan = plan_of(routes)
        self._names = (dict(plan.redirects), plan.hsts)
        self._changed()
        self._certs_wanted.set()

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until HAProxy serves the latest table; False if it did not in time."""
        deadline = time.monotonic() + timeout
        while self._applied < self._generation:
            if time.monotonic() > deadline or self._stopping:
                return False
            self._applied_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._applied_event.wait(), max(0.0, deadline - time.monotonic())
                )
        return True

    async def _syncer(self) -> None:
        assert self.edge is not None
        failing = False
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            generation = self._generation
            try:
                await asyncio.to_thread(self._sync, self._names, self.table.snapshot())
            except Exception as exc:
                if not failing:  # once per outage (an HAProxy being restarted)
                    self.log(f"edge: could not update haproxy: {exc}")
                failing = True
                await asyncio.sleep(0.2)
                self._dirty.set()
                continue
            if failing:
                self.log("edge: haproxy has the current routes again")
            failing = False
            self._applied = max(self._applied, generation)
            self._applied_event.set()

    def _sync(
        self, names: tuple[dict[str, str], frozenset[str]], routes: Mapping[str, Route]
    ) -> None:
        """(thread) One hop to the thread for both: a switch waits on this."""
        assert self.edge is not None
        self.edge.set_names(*names)
        self.edge.apply(routes)

    async def _retirer(self) -> None:
        assert self.edge is not None
        while True:
            await asyncio.sleep(RETIRE_EVERY)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.edge.retire)

    # -- counters --------------------------------------------------------------------
    def stats(self) -> dict[str, DeploymentStats]:
        return self._stats

    async def _poll_stats(self) -> None:
        assert self.edge is not None
        while True:
            with contextlib.suppress(Exception):
                self._stats = await asyncio.to_thread(self.edge.stats)
            await asyncio.sleep(STATS_EVERY)

    async def inflight_now(self, upstream: tuple[str, int]) -> int:
        if self.edge is None:
            return 0
        return await asyncio.to_thread(self.edge.inflight, upstream)

    # -- certificates ----------------------------------------------------------------
    def wanted_certificates(self) -> list[str]:
        """The public hosts of the table (only those: a certificate is never asked for a
        name tristage does not route)."""
        return sorted(h for h in self.table.snapshot() if not is_local(h))

    def _needs(self, host: str) -> bool:
        assert self.edge is not None
        path = self.edge.certificate_path(host)
        try:
            return due(path.read_bytes())
        except OSError:
            return True

    async def _certificates(self) -> None:
        assert self.edge is not None and self.issuer is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._certs_wanted.wait(), RENEW_CHECK)
            self._certs_wanted.clear()
            for host in self.wanted_certificates():
                if not self._needs(host):
                    continue
                retry = self._failed.get(host)
                if retry is not None and time.monotonic() < retry[0]:
                    continue
                try:
                    pem = await asyncio.to_thread(self.issuer.issue, host)
                    await asyncio.to_thread(self.edge.install_certificate, host, pem)
                except (AcmeError, OSError) as exc:
                    n = retry[1] + 1 if retry else 1
                    wait = RETRY_AFTER[min(n - 1, len(RETRY_AFTER) - 1)]
                    self._failed[host] = (time.monotonic() + wait, n)
                    self.log(f"edge: {exc} (trying again in {wait:.0f} s)")
                    continue
                except Exception as exc:
                    self.log(f"edge: could not load the certificate of {host}: {exc}")
                    continue
                self._failed.pop(host, None)
                when = expires_at(pem).date().isoformat()
                self.log(f"edge: certificate for {host} issued (valid until {when})")
