"""uvicorn inside the caller's running asyncio loop, hardened for the open internet.

uvicorn parses HTTP and runs the ASGI app; this module owns the listening socket and
each connection's clock:

- its own accept loop, so that running out of file descriptors (EMFILE) pauses
  accepting with a growing back-off and one log line per episode, instead of
  asyncio's retry-in-a-loop that writes a traceback per attempt;
- a connection cap: past `max_connections` open connections a new one is answered
  503 and closed;
- a header deadline (the whole request head within `header_timeout` of its first
  byte, or of the connection opening) and an idle timeout (a body that stops coming,
  or a keep-alive connection with no next request), so slow clients cannot hold
  connections for ever.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httptools
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_BATCH = 64  # connections accepted per readiness event, so accepting cannot starve the rest
BACKOFF_START, BACKOFF_MAX = 0.05, 1.0  # seconds
REPORT_EVERY = 30.0  # seconds between two "out of file descriptors" log lines
OVER_CAP = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n"
    b"content-length: 25\r\nconnection: close\r\nretry-after: 1\r\n\r\ntoo many open connections"
)


def bind_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening, non-blocking TCP socket on host:port (0 picks a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose
    # proto says TCP, and without it every response pays a delayed-ACK stall (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def default_max_connections() -> int:
    """Half the descriptors the process may open (a proxied request also holds one to
    its upstream), less a reserve for files, databases and logs."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(16, (soft - 128) // 2)


@dataclass(frozen=True)
class UpgradeRequest:
    """A request asking to switch the connection to WebSocket."""

    method: bytes
    target: bytes  # the raw request target: path and query
    headers: list[tuple[bytes, bytes]]  # lowercase names
    client_ip: str
    scheme: str


class ConnectionOwner(Protocol):
    def shutdown(self) -> None: ...


# Takes over the connection of an `UpgradeRequest`: the transport, the bytes that came
# after the request head, and a callback for when it is done with the connection.
# Returns what now owns the connection (closed by `shutdown()` when the server stops),
# or None when it answered and closed it.
UpgradeHook = Callable[
    [UpgradeRequest, asyncio.Transport, bytes, Callable[[Any], None]], ConnectionOwner | None
]

# Offered each request once its head is parsed (the protocol itself: `url`, `headers`,
# `parser`, `cycle`...); True when it took the request and stands in as its `cycle`
# (see `router.fastpath`), False to let the ASGI app serve it.
ShortcutHook = Callable[[Any], bool]


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline, a body idle timeout and a
    keep-alive timeout, and less work per request than uvicorn's own.

    Per request it arms no timer: a clock is armed only for a head or a body that did
    not arrive in one read, and the keep-alive clock of a connection is armed once and
    re-armed for what is left while the connection is busy again (`_check_idle`). The
    ASGI scope is built only for a request the `shortcut` does not take."""

    header_timeout = 10.0
    idle_timeout = 30.0
    upgrade: UpgradeHook | None = None  # set as a staticmethod on a subclass
    shortcut: ShortcutHook | None = None  # likewise
    _deadline: asyncio.TimerHandle | None
    _body_timer: asyncio.TimerHandle | None
    _idle_timer: asyncio.TimerHandle | None
    _idle_at: float | None  # when the connection became idle between two requests
    _last_body: float
    _head_started: float
    _in_head: bool
    _in_body: bool
    _taken: bool  # the current request is served by the shortcut

    def _should_upgrade(self) -> bool:
        return self.upgrade is not None and self._get_upgrade() == b"websocket"

    def _unsupported_upgrade_warning(self) -> None:
        pass  # answered as plain HTTP; a warning per request would let clients fill the log

    def data_received(self, data: bytes) -> None:
        self._idle_at = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self._should_upgrade():
                offset = int(exc.args[0]) if exc.args else len(data)
                self._take_over(data[offset:])
            return
        except httptools.HttpParserError:
            self.send_400_response("Invalid HTTP request received.")
            return
        if self._in_head or self._in_body:
            self._watch()

    def _watch(self) -> None:
        """After a read that left a request head or body incomplete, arm the clock that
        applies (most requests arrive whole in one read and need none)."""
        if self._in_head:
            if self._deadline is None:
                # the head started in this read (an earlier one would have armed it)
                self._head_started = self.loop.time()
                self._deadline = self.loop.call_later(self.header_timeout, self._too_slow)
        elif self._in_body:
            self._last_body = self.loop.time()
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(self.idle_timeout, self._check_body)

    def _take_over(self, rest: bytes) -> None:
        hook = self.upgrade
        assert hook is not None
        self._disarm()
        self.connections.discard(self)
        req = UpgradeRequest(
            method=self.parser.get_method(),
            target=self.url,
            headers=self.headers,
            client_ip=self.client[0] if self.client else "",
            scheme=self.scheme or "http",
        )
        connections: set[Any] = self.connections
        owner = hook(req, self.transport, rest, connections.discard)
        if owner is not None:
            connections.add(owner)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._body_timer = self._idle_timer = self._idle_at = None
        self._last_body = self._head_started = 0.0
        self._in_head = self._in_body = self._taken = False
        # a connection that never sends a byte is closed too
        self._deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _disarm(self) -> None:
        for timer in (self._deadline, self._body_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        self._deadline = self._body_timer = self._idle_timer = self._idle_at = None

    def _too_slow(self) -> None:
        self._deadline = self._body_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _check_body(self) -> None:
        if self.flow.read_paused:  # the app is slow to take the body, not the client to send
            self._last_body = self.loop.time()
        left = self._last_body + self.idle_timeout - self.loop.time()
        if left > 0:
            self._body_timer = self.loop.call_later(left, self._check_body)
        else:
            self._too_slow()

    def _check_idle(self) -> None:
        """The keep-alive clock: close a connection idle for `timeout_keep_alive`; one
        busy now is looked at again when it next goes idle."""
        self._idle_timer = None
        idle_at = self._idle_at
        if idle_at is None or self.transport.is_closing():
            return
        left = idle_at + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self._idle_timer = self.loop.call_later(left, self._check_idle)
        else:
            self.transport.close()

    def on_message_begin(self) -> None:
        # uvicorn's, less the scope (built in `on_headers_complete` for the ASGI app)
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._in_head = True

    def _build_scope(self) -> None:
        self.scope = {  # type: ignore[typeddict-item]
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,  # type: ignore[typeddict-item]
            "root_path": self.root_path,
            "headers": self.headers,
            "state": self.app_state.copy(),
        }

    def on_headers_complete(self) -> None:
        self._in_head, self._in_body = False, True
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        shortcut = self.shortcut
        if shortcut is not None and shortcut(self):
            self._taken = True
            return
        self._taken = False
        self._build_scope()
        super().on_headers_complete()

    def resume_writing(self) -> None:
        super().resume_writing()
        drained = getattr(self.cycle, "client_drained", None)
        if drained is not None:
            drained()

    def on_body(self, body: bytes) -> None:
        if not self._taken:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if self._taken:  # a request without a body: its end changes nothing
            self.cycle.more_body = False
            return
        super().on_message_complete()

    def on_response_complete(self) -> None:
        # uvicorn's, with the keep-alive clock of `_check_idle` instead of a timer per request
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        if self.flow.read_paused:
            self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_at = self.loop.time()
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_later(self.timeout_keep_alive, self._check_idle)


class Acceptor:
    """Accepts connections on a listening socket for a protocol factory.

    Stands in for the `asyncio.Server` uvicorn would create (`close`, `wait_closed`).
    """

    def __init__(
        self,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        open_connections: Callable[[], int],
        max_connections: int,
        name: str,
    ) -> None:
        self.sock = sock
        self.factory = factory
        self.open_connections = open_connections
        self.max_connections = max_connections
        self.name = name
        self.loop = asyncio.get_running_loop()
        self._pending: set[asyncio.Task[Any]] = set()
        self._retry: asyncio.TimerHandle | None = None
        self._backoff = BACKOFF_START
        self._closed = False
        self._failures = 0
        self._reported_at = -REPORT_EVERY
        self.loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    self._pause(exc)
                    return
                # Linux passes a pending network error of the new connection on
                # (ENETDOWN, EPROTO...): that connection is lost, the next may not be
                self._failures += 1
                continue
            self._backoff = BACKOFF_START
            if self.open_connections() + len(self._pending) >= self.max_connections:
                _refuse(conn)
                continue
            conn.setblocking(False)
            task = self.loop.create_task(self._serve(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.factory, conn)
        except OSError:
            conn.close()

    def _pause(self, exc: OSError) -> None:
        """Stop watching the socket for a while: it stays readable while the process
        has no descriptor to accept with, and retrying at once only spins."""
        self.loop.remove_reader(self.sock.fileno())
        self._failures += 1
        now = time.monotonic()
        if now - self._reported_at >= REPORT_EVERY:
            log.error(
                "%s: cannot accept connections, out of file descriptors (%s); waiting up to "
                "%.0f s between attempts (%d failed attempts since the last report). Raise the "
                "limit (ulimit -n, LimitNOFILE=) or lower max_connections.",
                self.name,
                errno.errorcode.get(exc.errno or 0, exc.errno),
                BACKOFF_MAX,
                self._failures,
            )
            self._reported_at, self._failures = now, 0
        self._retry = self.loop.call_later(self._backoff, self._resume)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def _resume(self) -> None:
        self._retry = None
        if not self._closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)
            self._accept()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
        else:
            self.loop.remove_reader(self.sock.fileno())

    async def wait_closed(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def _refuse(conn: socket.socket) -> None:
    try:
        conn.setblocking(False)
        conn.send(OVER_CAP)
    except OSError:
        pass
    finally:
        conn.close()


class EmbeddedServer:
    """Serve an ASGI app with uvicorn in the running loop: no access log, no signal handlers.

    `options` are `uvicorn.Config` keyword arguments on top of these defaults
    (`timeout_keep_alive` is the idle time allowed between two requests).
    """

    def __init__(
        self,
        app: ASGIApp,
        name: str,
        backlog: int = 2048,
        *,
        header_timeout: float = 10.0,
        idle_timeout: float = 30.0,
        max_connections: int | None = None,
        upgrade: UpgradeHook | None = None,
        shortcut: ShortcutHook | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        self.name = name
        self.backlog = backlog
        self.max_connections = max_connections or default_max_connections()
        protocol = type(
            "GuardedHttp",
            (GuardedHttp,),
            {
                "header_timeout": header_timeout,
                "idle_timeout": idle_timeout,
                "upgrade": staticmethod(upgrade) if upgrade is not None else None,
                "shortcut": staticmethod(shortcut) if shortcut is not None else None,
            },
        )
        self.options: dict[str, Any] = {
            "access_log": False,  # an access log line could carry a token in a query string
            "log_config": None,
            "log_level": "warning",
            "server_header": False,
            "proxy_headers": False,
            "timeout_keep_alive": idle_timeout,
            **options,
            "http": protocol,
        }
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @property
    def port(self) -> int | None:
        return int(self._sock.getsockname()[1]) if self._sock is not None else None

    async def start(self, host: str, port: int, sock: socket.socket | None = None) -> int:
        """Listen on host:port (0 picks a free port), or on `sock`, a listening socket
        made by the caller; returns the bound port."""
        if self._server is not None:
            raise RuntimeError(f"{self.name} already started")
        if sock is None:
            sock = bind_socket(host, port, self.backlog)
        else:
            sock.setblocking(False)
        config = uvicorn.Config(self.app, **self.options)
        server = uvicorn.Server(config)
        config.load()
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[])  # lifespan only: the acceptor below listens
        if server.should_exit:  # the app's startup failed
            sock.close()
            raise OSError(f"{self.name} could not start on {host}:{port}")
        state, app_state = server.server_state, server.lifespan.state

        def factory() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=state, app_state=app_state
            )

        acceptor = Acceptor(
            sock, factory, lambda: len(state.connections), self.max_connections, self.name
        )
        server.servers = [acceptor]  # type: ignore[list-item]
        self._server, self._sock = server, sock
        self._task = asyncio.create_task(server.main_loop(), name=f"{self.name}-tick")
        return int(sock.getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and let requests in flight finish (bounded by the graceful timeout)."""
        server, task = self._server, self._task
        if server is None:
            return
        server.should_exit = True
        if task is not None:
            await task
        await server.shutdown(sockets=[self._sock] if self._sock else None)
        self._server = self._task = self._sock = None
