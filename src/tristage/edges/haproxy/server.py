"""`HAProxyEdge`: HAProxy started, driven through its runtime API and supervised.

```
edge = HAProxyEdge(settings, log=print)
await edge.start(redirects, hsts)   # spawns haproxy (or adopts one left running)
edge.apply(route_table)             # (thread) the switch: servers and the host map
edge.retire()                       # (thread) drained servers with nothing in flight go
edge.install_certificate(host, pem) # (thread) a certificate, without a reload
edge.stats(); edge.inflight(addr)   # (thread) counters from `show stat`
await edge.stop()
```

HAProxy runs in master-worker mode as its own process (its own session, so a signal to
the control plane's group does not reach it), with the master socket and the runtime
API on unix sockets (0600) in the private edge directory; its pid is in `haproxy.pid`.
A control plane that died and came back adopts the running HAProxy (its host map and
servers are read back, then brought to the current table) instead of starting another.
An HAProxy that exits is started again with a back-off; it starts with an empty host
map (every host goes to the router, which has the whole table) and gets its servers
through the runtime API at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ...paths import private_mkdirs
from ..router.routes import Route
from ..router.stats import DeploymentStats
from ..supervised import EdgeError, SupervisedEdge, write_private
from . import runtime_api as rt
from .config import (
    ACME_BACKEND,
    ROUTER_BACKEND,
    SLOT_PREFIX,
    HAProxySettings,
    Step,
    deployment_of,
    haproxy_config,
    names_maps,
    retire_steps,
    switch_steps,
    wanted_servers,
)

__all__ = ["EdgeError", "HAProxyEdge"]


@dataclass(frozen=True)
class Counts:
    requests: int = 0
    s2: int = 0
    s3: int = 0
    s4: int = 0
    s5: int = 0
    errors: int = 0

    def __add__(self, o: Counts) -> Counts:
        return Counts(self.requests + o.requests, self.s2 + o.s2, self.s3 + o.s3,
                      self.s4 + o.s4, self.s5 + o.s5, self.errors + o.errors)  # fmt: skip


def _int(row: Mapping[str, str], key: str) -> int:
    v = row.get(key) or "0"
    return int(v) if v.isdigit() else 0


def server_counts(row: Mapping[str, str]) -> Counts:
    """One server's answers; a connection refused or a response cut is a 5xx and an
    upstream error (HAProxy answered for it)."""
    hr = [_int(row, f"hrsp_{c}xx") for c in range(1, 6)] + [_int(row, "hrsp_other")]
    errors = _int(row, "econ") + _int(row, "eresp")
    return Counts(sum(hr) + errors, hr[1], hr[2], hr[3], hr[4] + errors, errors)


class HAProxyEdge(SupervisedEdge):
    name = "haproxy"
    stop_signal = signal.SIGUSR1  # soft stop: requests in flight finish
    log_mark = "ALERT"
    restart_errors = (EdgeError, rt.RuntimeApiError)

    def __init__(
        self,
        settings: HAProxySettings,
        *,
        binary: str = "haproxy",
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        super().__init__(settings.directory, binary, log)
        self.s = settings
        self._lock = threading.RLock()  # one change of HAProxy's state at a time
        self._routes: Mapping[str, Route] = {}
        self._names: tuple[str, str] = ("", "")
        self._base: dict[str, Counts] = {}  # counts of servers gone (deleted, restarts)
        self._last: dict[tuple[str, str], tuple[Counts, str]] = {}  # (backend, server) ->
        self._latency: dict[str, tuple[float, float, float]] = {}
        self.left_to_router: list[str] = []

    # -- lifecycle -----------------------------------------------------------------
    async def start(self, redirects: Mapping[str, str], hsts: Iterable[str]) -> None:
        private_mkdirs(self.s.directory)
        private_mkdirs(self.s.certs)
        self._names = names_maps(redirects, hsts)
        await self._start_process()

    # -- the process ---------------------------------------------------------------
    def _crt_list_text(self) -> str:
        return "".join(f"{p}\n" for p in sorted(self.s.certs.glob("*.pem")))

    def _command(self) -> list[str]:
        s = self.s
        return [self.binary, "-W", "-S", f"{s.master_socket},mode,600", "-f", str(s.config_file)]

    def _prepare(self) -> None:
        s = self.s
        write_private(s.config_file, haproxy_config(s))
        write_private(s.hosts_map, "")  # every host to the router until servers are added
        write_private(s.redirects_map, self._names[0])
        write_private(s.hsts_map, self._names[1])
        write_private(s.crt_list, self._crt_list_text())
        for sock in (s.admin_socket, s.master_socket):
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()

    def _ports(self) -> tuple[str | None, int, int]:
        return self.s.bind, self.s.http_port, self.s.https_port

    def _spawned(self) -> None:
        write_private(self.s.directory / "settings.json", self._fingerprint())
        self._fold_all()

    async def _started(self) -> None:
        if self._routes:
            await asyncio.to_thread(self.apply, self._routes)

    async def _answers(self) -> bool:
        return await asyncio.to_thread(self._api_alive)

    async def _adopt(self) -> None:
        await asyncio.to_thread(self._point_backends)
        await asyncio.to_thread(self._load_names, *self._names)

    def _adoptable(self) -> bool:
        return self._fingerprint_file_text() == self._fingerprint()

    def _api_alive(self) -> bool:
        if not self.s.admin_socket.exists():
            return False
        try:
            return "Name: HAProxy" in rt.call(self.s.admin_socket, "show info")
        except rt.RuntimeApiError:
            return False

    def _fingerprint(self) -> str:
        """What a running HAProxy must have been started with to be adopted (the router's
        and the challenge server's addresses are set through the runtime API instead)."""
        s = self.s
        return json.dumps([s.http_port, s.https_port, s.bind, s.slots, s.maxconn, s.token,
                           self.binary])  # fmt: skip

    def _fingerprint_file_text(self) -> str:
        try:
            return (self.s.directory / "settings.json").read_text()
        except OSError:
            return ""

    # -- the runtime API -------------------------------------------------------------
    def _run(self, step: Step) -> str:
        return rt.run(self.s.admin_socket, step)

    def _point_backends(self) -> None:
        """An adopted HAProxy: the router's and the challenge server's addresses now."""
        for backend, server, (host, port) in (
            (ROUTER_BACKEND, "router", self.s.router), (ACME_BACKEND, "acme", self.s.acme)
        ):  # fmt: skip
            self._run(Step(f"set server {backend}/{server} addr {host} port {port}"))

    def _load_names(self, redirects: str, hsts: str) -> None:
        for map_file, text in ((self.s.redirects_map, redirects), (self.s.hsts_map, hsts)):
            answer = self._run(Step(f"prepare map {map_file}"))
            version = answer.strip().rsplit(" ", 1)[-1]
            if text:
                self._run(Step(f"add map @{version} {map_file}", text))
            self._run(Step(f"commit map @{version} {map_file}"))
            write_private(map_file, text)

    def set_names(self, redirects: Mapping[str, str], hsts: Iterable[str]) -> None:
        """(thread) The public names changed: the redirect and HSTS maps, replaced whole."""
        names = names_maps(redirects, hsts)
        with self._lock:
            if names != self._names:
                self._load_names(*names)
                self._names = names

    def apply(self, routes: Mapping[str, Route]) -> None:
        """(thread) Serve `routes`: each direct host's servers ready, the old drained, the
        host map following. A host whose commands fail stays as it was (and is logged)."""
        wanted = wanted_servers(routes)  # a bad table raises here, before any command
        with self._lock:
            self._routes = routes
            actual = rt.actual_state(self.s.admin_socket, self.s.hosts_map, SLOT_PREFIX)
            groups, left = switch_steps(actual, wanted, self.s.hosts_map, self.s.slots)
            if left and left != self.left_to_router:
                self.log(f"edge: no free backend for {len(left)} host(s); the router serves them")
            self.left_to_router = left
            failed: list[str] = []
            for steps in groups:
                for step in steps:
                    try:
                        self._run(step)
                    except rt.RuntimeApiError as exc:
                        failed.append(str(exc))
                        break
            if failed:
                self.log(f"edge: {len(failed)} change(s) not made: {failed[0]}")

    def retire(self) -> int:
        """(thread) Delete drained servers with no request in flight; how many went."""
        with self._lock:
            rows = rt.stat_rows(self.s.admin_socket, servers_only=True)
            actual = rt.actual_state(self.s.admin_socket, self.s.hosts_map, SLOT_PREFIX, rows)
            by_server = {(r.get("pxname", ""), r.get("svname", "")): r for r in rows}
            gone = 0
            for backend, name, steps in retire_steps(actual):
                try:
                    for step in steps:
                        self._run(step)
                except rt.RuntimeApiError:
                    continue  # idle connections still open: next time
                gone += 1
                # its final counts (drained, nothing in flight: no more will come)
                self._last.pop((backend, name), None)
                row = by_server.get((backend, name))
                if row is not None:
                    dep = deployment_of(name)
                    self._base[dep] = self._base.get(dep, Counts()) + server_counts(row)
            return gone

    def _fold_all(self) -> None:
        """HAProxy started afresh: what its servers counted so far is kept."""
        for counts, dep in self._last.values():
            self._base[dep] = self._base.get(dep, Counts()) + counts
        self._last.clear()

    def stats(self) -> dict[str, DeploymentStats]:
        """(thread) Per deployment: every answer HAProxy relayed from its servers since
        this edge started (servers deleted and HAProxy restarts included)."""
        try:
            rows = rt.stat_rows(self.s.admin_socket, servers_only=True)
        except rt.RuntimeApiError:
            rows = []
        now = time.time()
        totals = dict(self._base)
        latency: dict[str, tuple[float, float, float]] = {}
        with self._lock:
            for row in rows:
                backend, name = row.get("pxname", ""), row.get("svname", "")
                if not backend.startswith(SLOT_PREFIX) or name in ("FRONTEND", "BACKEND"):
                    continue
                dep = deployment_of(name)
                counts = server_counts(row)
                self._last[(backend, name)] = (counts, dep)
                totals[dep] = totals.get(dep, Counts()) + counts
                if counts.requests:
                    p50, p99 = float(_int(row, "rtime")), float(_int(row, "rtime_max"))
                    last = row.get("lastsess", "")
                    at = now - int(last) if last.lstrip("-").isdigit() and last != "-1" else now
                    was = latency.get(dep)
                    latency[dep] = (
                        max(p50, was[0]) if was else p50,
                        max(p99, was[1]) if was else p99,
                        max(at, was[2]) if was else at,
                    )
            for (_backend, _name), (counts, dep) in self._last.items():
                if dep not in totals:
                    totals[dep] = counts
            self._latency.update(latency)
        out: dict[str, DeploymentStats] = {}
        for dep, c in totals.items():
            if not c.requests:
                continue
            lat = self._latency.get(dep)
            out[dep] = DeploymentStats(
                dep, c.requests, c.s2, c.s3, c.s4, c.s5, c.errors,
                lat[0] if lat else None, lat[1] if lat else None, lat[2] if lat else None,
            )  # fmt: skip
        return out

    def inflight(self, upstream: tuple[str, int]) -> int:
        """(thread) Requests HAProxy has in flight to `upstream` (any backend)."""
        try:
            actual = rt.actual_state(self.s.admin_socket, self.s.hosts_map, SLOT_PREFIX)
        except rt.RuntimeApiError:
            return 0
        return sum(
            st.inflight
            for servers in actual.servers.values()
            for st in servers.values()
            if st.addr == upstream
        )

    # -- certificates ----------------------------------------------------------------
    def certificate_path(self, host: str) -> Path:
        return self.s.certs / f"{host}.pem"

    def install_certificate(self, host: str, pem: str) -> None:
        """(thread) Store `pem` (chain and key, 0600) and serve it for `host` at once:
        a renewal replaces the one HAProxy has, a new one is added to the crt-list."""
        path = self.certificate_path(host)
        with self._lock:
            known = str(path) in rt.call(self.s.admin_socket, "show ssl cert")
            write_private(path, pem)
            if not known:
                self._run(Step(f"new ssl cert {path}"))
            self._run(Step(f"set ssl cert {path}", pem))
            self._run(Step(f"commit ssl cert {path}"))
            if not known:
                self._run(Step(f"add ssl crt-list {self.s.crt_list} {path}"))
            write_private(self.s.crt_list, self._crt_list_text())
