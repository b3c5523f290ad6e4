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
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ...errors import TristageError
from ...paths import private_mkdirs, private_open
from ..router.routes import Route
from ..router.stats import DeploymentStats
from ..runtime.local import proc_start
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

RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)
START_TIMEOUT = 15.0


class EdgeError(TristageError):
    """The production edge could not be started or configured."""


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


class HAProxyEdge:
    def __init__(
        self,
        settings: HAProxySettings,
        *,
        binary: str = "haproxy",
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.s = settings
        self.binary = binary
        self.log = log
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self._lock = threading.RLock()  # one change of HAProxy's state at a time
        self._routes: Mapping[str, Route] = {}
        self._names: tuple[str, str] = ("", "")
        self._base: dict[str, Counts] = {}  # counts of servers gone (deleted, restarts)
        self._last: dict[tuple[str, str], tuple[Counts, str]] = {}  # (backend, server) ->
        self._latency: dict[str, tuple[float, float, float]] = {}
        self.left_to_router: list[str] = []
        self.on_restart: Callable[[], None] | None = None

    # -- paths ---------------------------------------------------------------------
    @property
    def pidfile(self) -> Path:
        return self.s.directory / "haproxy.pid"

    @property
    def log_file(self) -> Path:
        return self.s.directory / "haproxy.log"

    # -- lifecycle -----------------------------------------------------------------
    async def start(self, redirects: Mapping[str, str], hsts: Iterable[str]) -> None:
        private_mkdirs(self.s.directory)
        private_mkdirs(self.s.certs)
        self._names = names_maps(redirects, hsts)
        adopted = self._running_pid()
        if adopted is not None and self._fingerprint_file_text() != self._fingerprint():
            # started with other ports, binds or binary: replaced, not adopted
            self.log(f"edge: the running haproxy (pid {adopted}) has other settings: replaced")
            await self._stop_pid(adopted)
            adopted = None
        if adopted is not None and await asyncio.to_thread(self._api_alive):
            self.pid = adopted
            await asyncio.to_thread(self._point_backends)
            await asyncio.to_thread(self._load_names, *self._names)
            self.log(f"edge: adopted the running haproxy (pid {adopted})")
        else:
            if adopted is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(adopted, signal.SIGTERM)
            await self._spawn()
        self._watch = asyncio.ensure_future(self._supervise())

    async def _stop_pid(self, pid: int) -> None:
        if not self._alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR1)  # soft stop: requests in flight finish
        deadline = time.monotonic() + 10
        while self._alive(pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    async def stop(self) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self.pid is not None:
            await self._stop_pid(self.pid)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self._proc.wait, 5)
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()

    def healthy(self) -> bool:
        """HAProxy is running (the process this edge started or adopted)."""
        return self.pid is not None and self._alive(self.pid)

    # -- the process ---------------------------------------------------------------
    def _write(self, path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        with private_open(tmp) as f:
            f.write(text.encode())
        tmp.replace(path)

    def _crt_list_text(self) -> str:
        return "".join(f"{p}\n" for p in sorted(self.s.certs.glob("*.pem")))

    async def _spawn(self) -> None:
        s = self.s
        self._write(s.config_file, haproxy_config(s))
        self._write(s.hosts_map, "")  # every host to the router until servers are added
        self._write(s.redirects_map, self._names[0])
        self._write(s.hsts_map, self._names[1])
        self._write(s.crt_list, self._crt_list_text())
        for sock in (s.admin_socket, s.master_socket):
            with contextlib.suppress(FileNotFoundError):
                sock.unlink()
        out = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        try:
            self._proc = subprocess.Popen(
                [self.binary, "-W", "-S", f"{s.master_socket},mode,600", "-f",
                 str(s.config_file)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                start_new_session=True, cwd=s.directory,
            )  # fmt: skip
        except FileNotFoundError:
            raise EdgeError(
                f"the production edge needs haproxy, and {self.binary!r} was not found",
                "install it (Debian: apt-get install haproxy) or set --haproxy to its path",
            ) from None
        finally:
            os.close(out)
        self.pid = self._proc.pid
        self._write_pidfile(self._proc.pid)
        self._fold_all()
        deadline = time.monotonic() + START_TIMEOUT
        while not (await asyncio.to_thread(self._api_alive) and await self._listening()):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()
                raise EdgeError(
                    f"haproxy did not start: {self._log_tail()}",
                    f"see {self.log_file}; ports {s.http_port} and {s.https_port} must be "
                    "free (and bindable by this user)",
                )
            await asyncio.sleep(0.05)
        if self._routes:
            await asyncio.to_thread(self.apply, self._routes)

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping:
            await asyncio.sleep(0.5)
            if self.pid is not None and self._alive(self.pid):
                continue
            if self._stopping:
                return
            delay = RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF) - 1)]
            self.log(f"edge: haproxy exited ({self._log_tail()}); starting it again in {delay}s")
            await asyncio.sleep(delay)
            failures += 1
            try:
                await self._spawn()
                self.log(f"edge: haproxy started again (pid {self.pid})")
                failures = 0
                if self.on_restart is not None:
                    self.on_restart()
            except (EdgeError, rt.RuntimeApiError) as exc:
                self.log(f"edge: {exc}")

    async def _listening(self) -> bool:
        host = self.s.bind or "127.0.0.1"
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        for port in (self.s.http_port, self.s.https_port):
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
            except (OSError, TimeoutError):
                return False
            writer.close()
        return True

    def _api_alive(self) -> bool:
        if not self.s.admin_socket.exists():
            return False
        try:
            return "Name: HAProxy" in rt.call(self.s.admin_socket, "show info")
        except rt.RuntimeApiError:
            return False

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        return self._running_pid() == pid

    def _running_pid(self) -> int | None:
        try:
            data = json.loads(self.pidfile.read_text())
        except (OSError, ValueError):
            return None
        pid = data.get("pid")
        if isinstance(pid, int) and proc_start(pid) == data.get("start"):
            return pid
        return None

    def _write_pidfile(self, pid: int) -> None:
        self._write(self.pidfile, json.dumps({"pid": pid, "start": proc_start(pid)}))
        self._write(self.s.directory / "settings.json", self._fingerprint())

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

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        alerts = [line for line in lines if "ALERT" in line] or lines
        return alerts[-1][-300:] if alerts else "no output"

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
            self._write(map_file, text)

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
            self._write(path, pem)
            if not known:
                self._run(Step(f"new ssl cert {path}"))
            self._run(Step(f"set ssl cert {path}", pem))
            self._run(Step(f"commit ssl cert {path}"))
            if not known:
                self._run(Step(f"add ssl crt-list {self.s.crt_list} {path}"))
            self._write(self.s.crt_list, self._crt_list_text())
