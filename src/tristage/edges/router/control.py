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

The server side answers from a thread of its own (so the listening socket can be handed
over with `socket.send_fds`) and runs everything that touches the router on its loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .server import Router
from .wire import routes_from_json, stats_to_json

ROUTER_DIR = "router"  # in the platform home, 0700
CONTROL_SOCKET = "control.sock"
INFO_FILE = "router.json"  # {"pid", "proc_start", "port", "started_at"} of the live router
ROUTES_FILE = "routes.json"  # the last table it was given
MAX_REQUEST = 64 * 1024 * 1024  # a route table of many thousands of hosts still fits
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
    """Serves the control socket for `router` (running on `loop`) from a thread."""

    def __init__(
        self,
        path: Path,
        router: Router,
        loop: asyncio.AbstractEventLoop,
        listener: socket.socket,
        on_routes: Callable[[dict[str, Any]], None],
        on_stop: Callable[[], None],
    ) -> None:
        self.path, self.router, self.loop, self.listener = path, router, loop, listener
        self.on_routes, self.on_stop = on_routes, on_stop
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
        self._thread = threading.Thread(target=self._serve, name="router-control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _on_loop(self, fn: Callable[[], Any]) -> Any:
        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(TIMEOUT)

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(TIMEOUT)
            try:
                req = json.loads(_read_line(conn))
                op = req.get("op")
                if op == "listener":
                    socket.send_fds(conn, [b'{"ok": true}\n'], [self.listener.fileno()])
                    return
                answer = self._answer(op, req)
            except Exception as exc:  # a bad request gets an answer, never kills the router
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(answer).encode() + b"\n")

    def _answer(self, op: Any, req: dict[str, Any]) -> dict[str, Any]:
        router = self.router
        if op == "hello":
            return {"ok": True, "pid": os.getpid(), "port": router.port}
        if op == "routes":
            routes = routes_from_json(req["routes"])
            self._on_loop(lambda: router.table.replace(routes))
            self.on_routes(req["routes"])
            return {"ok": True}
        if op == "stats":
            return {"ok": True, "stats": stats_to_json(self._on_loop(router.stats))}
        if op == "inflight":
            up = (str(req["upstream"][0]), int(req["upstream"][1]))
            return {"ok": True, "n": self._on_loop(lambda: router.inflight(up))}
        if op == "edge":
            token = req.get("token")
            if token is not None and not isinstance(token, str):
                return {"ok": False, "error": "token must be a string or null"}
            self._on_loop(lambda: router.trust_edge(token))
            return {"ok": True}
        if op == "stop":
            self.loop.call_soon_threadsafe(self.on_stop)
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


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
