"""The router process: the embedded router in a process of its own, so the front door
outlives the control plane.

    python -m tristage.routerd --home HOME --listen-fd N   (started by `tristage up`)

It serves the last route table it was given (kept in `HOME/router/routes.json`, read
again when it starts) until it is told otherwise over its control socket
(`edges/router/control.py`), whether or not a control plane is running: a `kill -9` of
the control plane leaves every environment served, and the next control plane adopts
this process instead of starting another. Webhook deliveries are taken here too (the
internal app): they are stored before they are acknowledged, and the control plane is
nudged to forward them.

SIGINT is ignored (a Ctrl-C at the terminal of `tristage up` reaches the whole process
group; the control plane stops its router itself); SIGTERM drains and exits. It also
exits when its home no longer names it (`HOME/router/router.json`), so a home that was
deleted does not leave a router behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .edges.router.control import (
    CONTROL_SOCKET,
    INFO_FILE,
    ROUTER_DIR,
    ROUTES_FILE,
    ControlServer,
)
from .edges.router.guard import load_access_key
from .edges.router.routes import RouteTable
from .edges.router.server import Router
from .edges.router.wire import routes_from_json
from .edges.runtime import proc_start
from .paths import private_dirs, private_open

OWNER_CHECK = 2.0  # seconds between two looks at router.json

log = logging.getLogger("tristage.routerd")


def router_dir(home: Path) -> Path:
    return private_dirs(home, ROUTER_DIR)


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with private_open(tmp) as f:
        f.write(json.dumps(data).encode())
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _internal_app(home: Path) -> Any:
    from .api import Tristage
    from .http.internal import build_internal_app

    api = Tristage(home, actor="router")

    # a delivery stored here is forwarded by the control plane: nudge it at once
    def nudge(environment: tuple[str, str] | None = None) -> None:
        api.deploys.nudge()

    api.webhooks.notify = nudge  # type: ignore[method-assign]
    return build_internal_app(api)


def _waker(home: Path) -> Callable[[str], None]:
    """Ask the control plane (its nudge port, from `controlplane.json`) to wake a sleeping
    deployment; nothing happens while no control plane runs (the request waits, then 503)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)

    def wake(deployment: str) -> None:
        info = read_json(home / "controlplane.json")
        port = info.get("control_port") if info else None
        if isinstance(port, int):
            with contextlib.suppress(OSError):
                sock.sendto(b"wake " + deployment.encode("ascii", "replace"), ("127.0.0.1", port))

    return wake


class LaterApp:
    """The internal app, built in a thread once the router serves (it imports much of
    tristage: a restarted router answers the releases' traffic before it is ready);
    a webhook delivery that comes earlier waits for it."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._app: asyncio.Future[Any] | None = None

    def build(self) -> None:
        loop = asyncio.get_running_loop()
        self._app = asyncio.ensure_future(loop.run_in_executor(None, _internal_app, self.home))
        # the internal app and its imports live as long as the router: out of the
        # collector's way, so a full collection never walks them while requests wait
        self._app.add_done_callback(lambda _: gc.freeze())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            self.build()
        assert self._app is not None
        app = await self._app
        await app(scope, receive, send)


async def serve(home: Path, listener: socket.socket) -> None:
    rdir = router_dir(home)
    routes_path = rdir / ROUTES_FILE
    table = RouteTable(routes_from_json(read_json(routes_path) or {}))
    internal = LaterApp(home)
    router = Router(
        table, internal_app=internal, access_key=load_access_key(home), waker=_waker(home)
    )
    port = await router.start(sock=listener)
    internal.build()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, lambda: None)

    def keep(routes: dict[str, Any]) -> None:
        write_atomic(routes_path, routes)

    control = ControlServer(rdir / CONTROL_SOCKET, router, listener, keep, stop.set)
    me = {
        "pid": os.getpid(),
        "proc_start": proc_start(os.getpid()) or "?",
        "port": port,
        "started_at": time.time(),
    }
    write_atomic(rdir / INFO_FILE, me)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), OWNER_CHECK)
            info = read_json(rdir / INFO_FILE) if rdir.exists() else None
            if info is None or info.get("pid") != me["pid"]:
                break  # the home is gone, or another router took over
    finally:
        control.close()
        await router.stop()
        info = read_json(rdir / INFO_FILE) if rdir.exists() else None
        if info is not None and info.get("pid") == me["pid"]:
            with contextlib.suppress(FileNotFoundError):
                (rdir / INFO_FILE).unlink()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tristage.routerd", description=__doc__)
    ap.add_argument("--home", required=True, type=Path)
    ap.add_argument("--listen-fd", required=True, type=int, help="an inherited listening socket")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s router %(message)s")
    listener = socket.socket(fileno=args.listen_fd)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(serve(args.home, listener))
    else:
        uvloop.run(serve(args.home, listener))


if __name__ == "__main__":
    main()
