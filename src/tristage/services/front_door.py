"""The control plane's front door: the router process (`tristage.routerd`), supervised.

`RouterProcess` gives the control plane what it used of an in-process `Router`
(`start`, `stop`, `stats`, `inflight_now`, `port`), with the router in a process of
its own:

- at start it **adopts** a router process a previous control plane left running
  (`router/router.json` names a live process that answers on the control socket, on
  the wanted port), or starts one on a listening socket it binds itself;
- it keeps a copy of the listening socket (handed over by an adopted router), so a
  router that dies is replaced on the same socket: connections wait in the backlog
  instead of being refused;
- every `RouteTable.replace` that changes the table is sent to the router (the latest
  table wins; a router that was just restarted gets it at once);
- it watches the process (a pidfd: told the moment it exits) and starts a new one
  within a second, with the last table;
- counters are fetched twice a second for the monitor and the dashboard.

`stop()` (a clean `tristage up` exit) stops the router too; a `kill -9` of the control
plane does not, which is the point.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..edges.embedded_server import bind_socket
from ..edges.router.control import (
    CONTROL_SOCKET,
    INFO_FILE,
    ROUTER_DIR,
    ROUTES_FILE,
    ControlError,
    arequest,
    request,
    take_listener,
)
from ..edges.router.control import TIMEOUT as CONTROL_TIMEOUT
from ..edges.router.routes import Route, RouteTable
from ..edges.router.stats import DeploymentStats
from ..edges.router.wire import routes_to_json, stats_from_json
from ..edges.runtime import proc_start
from ..paths import private_dirs, private_open

START_TIMEOUT = 30.0
STATS_EVERY = 0.5
RESTART_BACKOFF = (0.0, 0.2, 0.5, 1.0, 2.0)


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return started is None or started == "?" or proc_start(pid) == started


class RouterProcess:
    def __init__(self, home: Path, table: RouteTable, log: Callable[[str], None]) -> None:
        self.home = home
        self.dir = private_dirs(home, ROUTER_DIR)
        self.control = self.dir / CONTROL_SOCKET
        self.table = table
        self.log = log
        self.port: int | None = None
        self.pid: int | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._listener: socket.socket | None = None
        self._stats: dict[str, DeploymentStats] = {}
        self._pidfd: int | None = None
        self._stopping = False
        self._dirty = asyncio.Event()
        self._flushed = asyncio.Event()
        self._pushed = 0  # table generation the router has
        self._generation = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._restarts = 0
        self._restart_task: asyncio.Task[None] | None = None
        self._edge_token: str | None = None
        self._latest: Mapping[str, Route] | None = None  # the last table to send
        table.on_replace(self._table_changed)

    # -- the control plane's side of `Router` ---------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 8080) -> int:
        adopted = await asyncio.to_thread(self._adopt, host, port)
        if not adopted:
            self._listener = bind_socket(host, port)
            await self._spawn()
        else:
            self.log(f"router process {self.pid} re-adopted (port {self.port})")
        await self._push_now()
        self._watch()
        self._spawn_task(self._pusher())
        self._spawn_task(self._stats_poller())
        assert self.port is not None
        return self.port

    async def stop(self) -> None:
        """Stop the router process (it lets requests in flight finish) and wait for it."""
        self._stopping = True
        self._unwatch()
        for task in list(self._tasks):
            task.cancel()
        if self._restart_task is not None:
            self._restart_task.cancel()
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self._exists(pid):
                await asyncio.sleep(0.05)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.port = None

    def stats(self) -> dict[str, DeploymentStats]:
        return self._stats

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the router process has the latest table (a switch is recorded as
        served only then); False if it did not within `timeout`."""
        deadline = time.monotonic() + timeout
        while self._pushed < self._generation:
            if time.monotonic() > deadline or self._stopping:
                return False
            self._flushed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flushed.wait(), max(0.0, deadline - time.monotonic()))
        return True

    async def trust_edge(self, token: str | None) -> None:
        """`Router.trust_edge` in the router process (sent again to a restarted one)."""
        self._edge_token = token
        await arequest(self.control, "edge", CONTROL_TIMEOUT, token=token)

    async def inflight_now(self, upstream: tuple[str, int]) -> int:
        try:
            answer = await arequest(
                self.control, "inflight", CONTROL_TIMEOUT, upstream=list(upstream)
            )
        except (OSError, ValueError):
            return 0  # no router: nothing is in flight through it
        return int(answer["n"])

    # -- starting and adopting ------------------------------------------------------------

    def _adopt(self, host: str, port: int) -> bool:
        """(thread) Take over a live router process from an earlier control plane."""
        info = _read(self.dir / INFO_FILE)
        if info is None:
            return False
        pid = int(info.get("pid", 0))
        if pid <= 0 or not _alive(pid, info.get("proc_start")):
            return False
        try:
            hello = request(self.control, "hello", 3.0)
            if hello["pid"] != pid:
                return False
            if port and hello["port"] != port:
                self.log(f"router process {pid} listens on {hello['port']}, not {port}: replaced")
                request(self.control, "stop", 3.0)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and _alive(pid, None):
                    time.sleep(0.05)
                return False
            listener = take_listener(self.control, 3.0)
        except (OSError, ValueError, KeyError):
            return False
        self._listener, self.pid, self.port = listener, pid, int(hello["port"])
        return True

    async def _spawn(self) -> None:
        assert self._listener is not None
        fd = self._listener.fileno()
        # it starts with the current table, never a stale one (a release's old port may
        # belong to another release by now)
        _write(self.dir / ROUTES_FILE, routes_to_json(self.table.snapshot()))
        out = private_open(self.dir / "router.log")
        try:
            child = subprocess.Popen(
                [sys.executable, "-m", "tristage.routerd", "--home", str(self.home),
                 "--listen-fd", str(fd)],
                pass_fds=(fd,),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        finally:
            out.close()
        self._child, self.pid = child, child.pid
        self.port = int(self._listener.getsockname()[1])
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if child.poll() is not None:
                raise ControlError(
                    f"the router process exited at start ({child.returncode}); "
                    f"see {self.dir / 'router.log'}"
                )
            try:
                hello = await arequest(self.control, "hello", 1.0)
                if hello["pid"] == child.pid:
                    return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                child.kill()
                raise ControlError("the router process did not answer on its control socket")
            await asyncio.sleep(0.02)

    # -- watching and restarting ------------------------------------------------------------

    def _exists(self, pid: int) -> bool:
        if self._child is not None and self._child.pid == pid:
            return self._child.poll() is None
        return _alive(pid, None)

    def _watch(self) -> None:
        if self.pid is None:
            return
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            self._exited()
            return
        self._pidfd = fd
        asyncio.get_running_loop().add_reader(fd, self._exited)

    def _unwatch(self) -> None:
        if self._pidfd is not None:
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def _exited(self) -> None:
        self._unwatch()
        if self._stopping:
            return
        code = self._child.poll() if self._child is not None else None
        self.log(f"router process {self.pid} exited ({code}); starting another")
        self._restart_task = asyncio.get_running_loop().create_task(self._restart())

    async def _restart(self) -> None:
        while not self._stopping:
            delay = RESTART_BACKOFF[min(self._restarts, len(RESTART_BACKOFF) - 1)]
            self._restarts += 1
            await asyncio.sleep(delay)
            try:
                await self._spawn()
                await self._push_now()
                if self._edge_token is not None:
                    await self.trust_edge(self._edge_token)
            except (OSError, ValueError) as exc:
                self.log(f"could not restart the router process: {exc}")
                continue
            self._watch()
            self.log(f"router process {self.pid} serving again")
            self._spawn_task(self._calm_down())
            return

    async def _calm_down(self) -> None:
        await asyncio.sleep(30)
        self._restarts = 0

    # -- routes and counters ----------------------------------------------------------------

    def _table_changed(self, routes: Mapping[str, Route]) -> None:
        # every reconcile rebuilds the table; only one that differs is sent (the router
        # parses, swaps and writes each one it gets)
        if routes == self._latest:
            return
        self._latest = routes
        self._generation += 1
        self._dirty.set()

    async def _push_now(self) -> None:
        generation = self._generation
        routes = routes_to_json(self.table.snapshot())
        await arequest(self.control, "routes", CONTROL_TIMEOUT, routes=routes)
        self._pushed = max(self._pushed, generation)
        self._flushed.set()

    async def _pusher(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self._pushed >= self._generation:
                continue
            try:
                await self._push_now()
            except (OSError, ValueError) as exc:
                if not self._stopping:
                    self.log(f"could not send the routes to the router process: {exc}")
                await asyncio.sleep(0.1)
                self._dirty.set()  # again (a restarted router is sent them by _restart)

    async def _stats_poller(self) -> None:
        while True:
            try:
                answer = await arequest(self.control, "stats", CONTROL_TIMEOUT)
                self._stats = stats_from_json(answer["stats"])
            except (OSError, ValueError, KeyError, TypeError):
                pass
            await asyncio.sleep(STATS_EVERY)

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with private_open(tmp) as f:
        f.write(json.dumps(data).encode())
    tmp.replace(path)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def stop_router_process(home: Path, timeout: float = 15.0) -> bool:
    """Stop the router process of `home` if one runs (SIGTERM, then wait); True if one did.
    For tests and `tristage down`-like clean-ups after a control plane was killed."""
    info = _read(home / ROUTER_DIR / INFO_FILE)
    if info is None:
        return False
    pid = int(info.get("pid", 0))
    if pid <= 0 or not _alive(pid, info.get("proc_start")):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid, None):
        time.sleep(0.05)
    return True
