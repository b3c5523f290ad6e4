"""The private control socket of a router process, both ends.

A unix socket in the platform home (`router/control.sock`, 0600 in a 0700 directory):
one JSON request per connection, one JSON line back.

| request | answer |
|---|---|
| `{"op": "hello"}` | `{"ok", "pid", "host", "port"}` |
| `{"op": "routes", "routes": {host: route}}` | `{"ok"}` once the table is swapped |
| `{"op": "stats"}` | `{"ok", "stats": {deployment: counters}}` |
| `{"op": "inflight", "upstream": [host, port]}` | `{"ok", "n"}` |
| `{"op": "listener"}` | `{"ok"}` with the listening socket attached (SCM_RIGHTS) |
| `{"op": "edge", "token": str or null}` | `{"ok"}` once the router trusts the edge (`trust_edge`) |
| `{"op": "stop"}` | `{"ok"}`, then the router drains and exits |

The server side runs on the router's own loop: a new table is swapped in by the
coroutine that read it, with no thread to hand it over (a thread of a process whose
loop is busy waits up to the interpreter's switch interval, 5 ms, for each turn). A
table is written to `routes.json` after it is acknowledged, by a thread of its own, in
the order received. The control plane's end has a blocking `request` (for threads) and
`arequest` (for its loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .server import Router
from .wire import routes_from_json, stats_to_json

ROUTER_DIR = "router"  # in the platform home, 0700
CONTROL_SOCKET = "control.sock"
INFO_FILE = "router.json"  # {"pid", "proc_start", "port", "started_at"} of the live router
ROUTES_FILE = "routes.json"  # the last table it was given
MAX_REQUEST = 64 * 1024 * 1024  # a route table of many thousands of hosts still fits
PARSE_INLINE = 64 * 1024  # larger requests are parsed off the loop
TIMEOUT = 10.0


class ControlError(OSError):
    """The router process did not answer as expected."""


def _read_line(conn: socket.socket, limit: int = MAX_REQUEST) -> bytes:
    buf = bytearray()
    while not buf.endswith(b"\n"):
        chunk = conn.recv(1 << 16)
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            raise ControlError("control request too large")
    return bytes(buf)


class ControlServer:
    """Serves the control socket for `router`, on the running loop."""

    def __init__(
        self,
        path: Path,
        router: Router,
        listener: socket.socket,
        on_routes: Callable[[dict[str, Any]], None],
        on_stop: Callable[[], None],
    ) -> None:
        self.path, self.router, self.listener = path, router, listener
        self.on_routes, self.on_stop = on_routes, on_stop
        self.loop = asyncio.get_running_loop()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self.sock.listen(16)
        self.sock.setblocking(False)
        # routes.json is written in the order the tables came, off the loop
        self._keeper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="router-keep")
        self._handlers: set[asyncio.Task[None]] = set()
        self._task = self.loop.create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            try:
                conn, _ = await self.loop.sock_accept(self.sock)
            except OSError:
                return  # closed
            task = self.loop.create_task(self._handle(conn))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    async def _read(self, conn: socket.socket) -> bytes:
        buf = bytearray()
        while not buf.endswith(b"\n"):
            chunk = await self.loop.sock_recv(conn, 1 << 16)
            if not chunk:
                break
            buf += chunk
            if len(buf) > MAX_REQUEST:
                raise ControlError("control request too large")
        return bytes(buf)

    async def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.setblocking(False)
            after: Callable[[], None] | None = None
            try:
                line = await asyncio.wait_for(self._read(conn), TIMEOUT)
                if len(line) > PARSE_INLINE:
                    req = await asyncio.to_thread(json.loads, line)
                else:
                    req = json.loads(line)
                op = req.get("op")
                if op == "listener":
                    socket.send_fds(conn, [b'{"ok": true}\n'], [self.listener.fileno()])
                    return
                answer, after = await self._answer(op, req)
            except Exception as exc:  # a bad request gets an answer, never kills the router
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            with contextlib.suppress(OSError, TimeoutError):
                data = json.dumps(answer).encode() + b"\n"
                await asyncio.wait_for(self.loop.sock_sendall(conn, data), TIMEOUT)
            if after is not None:
                after()

    async def _answer(
        self, op: Any, req: dict[str, Any]
    ) -> tuple[dict[str, Any], Callable[[], None] | None]:
        router = self.router
        if op == "hello":
            return {"ok": True, "pid": os.getpid(), "port": router.port}, None
        if op == "routes":
            raw = req["routes"]
            if len(raw) * 200 > PARSE_INLINE:
                routes = await asyncio.to_thread(routes_from_json, raw)
            else:
                routes = routes_from_json(raw)
            router.table.replace(routes)
            return {"ok": True}, lambda: self._keep(raw)
        if op == "stats":
            return {"ok": True, "stats": stats_to_json(router.stats())}, None
        if op == "inflight":
            up = (str(req["upstream"][0]), int(req["upstream"][1]))
            return {"ok": True, "n": router.inflight(up)}, None
        if op == "edge":
            token = req.get("token")
            if token is not None and not isinstance(token, str):
                return {"ok": False, "error": "token must be a string or null"}, None
            router.trust_edge(token)
            return {"ok": True}, None
        if op == "stop":
            return {"ok": True}, self.on_stop
        return {"ok": False, "error": f"unknown op {op!r}"}, None

    def _keep(self, routes: dict[str, Any]) -> None:
        self._keeper.submit(self.on_routes, routes)

    def close(self) -> None:
        self._task.cancel()
        for task in list(self._handlers):
            task.cancel()
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._keeper.shutdown(wait=True)  # the last table reaches the disk


# -- the control plane's end -------------------------------------------------------------


def request(path: Path, op: str, timeout: float = TIMEOUT, **fields: Any) -> dict[str, Any]:
    """Send one request to the router process at `path` (blocking; run it in a thread)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
        line = _read_line(s)
    if not line:
        raise ControlError(f"the router process closed the control socket on {op!r}")
    answer: dict[str, Any] = json.loads(line)
    if not answer.get("ok"):
        raise ControlError(f"the router process refused {op!r}: {answer.get('error')}")
    return answer


async def arequest(path: Path, op: str, timeout: float = TIMEOUT, **fields: Any) -> dict[str, Any]:
    """`request` from a running loop, without a thread."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_REQUEST)
        try:
            writer.write(json.dumps({"op": op, **fields}).encode() + b"\n")
            try:
                line = await reader.readline()
            except ValueError as exc:  # longer than the limit
                raise ControlError(f"the router process's answer to {op!r} is too large") from exc
        finally:
            writer.close()
    if not line:
        raise ControlError(f"the router process closed the control socket on {op!r}")
    answer: dict[str, Any] = json.loads(line)
    if not answer.get("ok"):
        raise ControlError(f"the router process refused {op!r}: {answer.get('error')}")
    return answer


def take_listener(path: Path, timeout: float = TIMEOUT) -> socket.socket:
    """A copy of the router process's listening socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(b'{"op": "listener"}\n')
        _msg, fds, _flags, _addr = socket.recv_fds(s, 1024, 1)
    if not fds:
        raise ControlError("the router process did not hand over its listening socket")
    return socket.socket(fileno=fds[0])
