"""The router's fast path: a request without a body proxied by callbacks, without ASGI.

Most requests through a front door are GET/HEAD without a body. For those the
connection's protocol (uvicorn's httptools one, see `embedded_server.GuardedHttp`)
hands the parsed request to `FastPath` instead of starting an ASGI task: the request
head goes to a pooled upstream connection, and the upstream's callbacks write the
response back (head and body in one write when the whole response arrived at once).
No task, future or ASGI message per request; the same checks as the ASGI path
(`proxy.ProxyApp`), which still serves everything else: requests with a body (early
answers, uploads), the internal app, pipelined requests, HTTP/1.0, and any request
the checks refuse.

`FastExchange` stands in for uvicorn's `RequestResponseCycle` while it runs: the
protocol only reads `response_complete`, `keep_alive`, sets `more_body` and
`disconnected`, and calls `message_event.set()` (on the request's end and when the
client goes away).
"""

from __future__ import annotations

import asyncio
import hmac
import http
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import pages
from .guard import AccessGuard
from .headers import EDGE_HEADER, FORWARDED, FORWARDED_PREFIX, HOP_BY_HOP, PROTECTED
from .routes import Balancer, Route, RouteTable, normalize_host
from .stats import StatsRecorder
from .upstream import UpstreamConnection, UpstreamPool, UpstreamTimeout

if TYPE_CHECKING:
    from .proxy import Inflight

log = logging.getLogger(__name__)

INTERNAL = b"/.tristage/"
_INTERNAL_LEN, _PREFIX_LEN = len(INTERNAL), len(FORWARDED_PREFIX)  # slices: cheaper than startswith
HOSTS_REMEMBERED = 4096  # raw Host values whose route `FastPath` remembers
REPLAYABLE = (b"GET", b"HEAD", b"OPTIONS")  # sent again to another replica
_DROP_UP = HOP_BY_HOP | FORWARDED | {b"expect", EDGE_HEADER}  # a Content-Length here is 0: kept
_DROP_DOWN = HOP_BY_HOP | {b"content-length"}


def _status_line(code: int) -> bytes:
    try:
        phrase = http.HTTPStatus(code).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (code, phrase)


STATUS_LINE = {code: _status_line(code) for code in range(100, 600)}


def request_head(
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    client_ip: bytes,
    scheme: bytes,
    edge_token: bytes | None = None,
) -> bytes | None:
    """`build_head`'s request head alone."""
    built = build_head(method, target, headers, client_ip, scheme, edge_token)
    return None if built is None else built[0]


def build_head(
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    client_ip: bytes,
    scheme: bytes,
    edge_token: bytes | None = None,
) -> tuple[bytes, bytes] | None:
    """The upstream request head of a bodiless request and its Host, in one pass over
    its (lowercase) headers, or None when the request must take the ASGI path (it has a body, a Host
    problem, or a Connection header naming a framing header: the ASGI path answers it).

    With `edge_token`, a request carrying `X-Tristage-Edge: edge_token` (from the
    production edge) keeps the edge's X-Forwarded-For (last address), -Proto and -Host
    (as `headers.upstream_request_headers` does)."""
    host = None
    named: set[bytes] | None = None
    edge: bytes | None = None
    for name, value in headers:
        if name == EDGE_HEADER:
            edge = value
        elif name == b"host":
            if host is not None:
                return None
            host = value
        elif name == b"connection":
            for token in value.split(b","):
                t = token.strip().lower()
                if t in PROTECTED:
                    return None
                if t and t not in (b"keep-alive", b"close"):
                    if named is None:
                        named = set()
                    named.add(t)
        elif name == b"content-length":
            if value.strip() != b"0":
                return None
        elif name == b"transfer-encoding":
            return None
    if host is None:
        return None
    forwarded_host = host
    if (
        edge is not None
        and edge_token is not None
        and hmac.compare_digest(edge.strip(), edge_token)
    ):
        for name, value in headers:
            if name == b"x-forwarded-for":
                client_ip = value.rsplit(b",", 1)[-1].strip() or client_ip
            elif name == b"x-forwarded-proto":
                scheme = value
            elif name == b"x-forwarded-host":
                forwarded_host = value
    out = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if name in _DROP_UP or name[:_PREFIX_LEN] == FORWARDED_PREFIX:
            continue
        if named is not None and name in named:
            continue
        out += (name, b": ", value, b"\r\n")
    out += (
        b"x-forwarded-for: ", client_ip, b"\r\nx-real-ip: ", client_ip,
        b"\r\nx-forwarded-proto: ", scheme, b"\r\nx-forwarded-host: ", forwarded_host,
        b"\r\n\r\n",
    )  # fmt: skip
    return b"".join(out), host


def response_head(
    status: int, headers: list[tuple[bytes, bytes]], no_body: bool, keep_alive: bool
) -> tuple[bytes, bool]:
    """The client's response head and whether its body is sent chunked (the upstream's
    framing is the upstream's: the client's is the router's own). `headers` have
    lowercase names, as `UpstreamConnection` keeps them."""
    length: bytes | None = None
    chunked = False
    named: set[bytes] | None = None
    out = [STATUS_LINE.get(status) or _status_line(status)]
    for name, value in headers:
        if name in _DROP_DOWN:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"connection":
                named = {t.strip().lower() for t in value.split(b",")}
            continue
        out += (name, b": ", value, b"\r\n")
    if named is not None:  # rare: drop what the upstream's Connection header names
        out = [out[0]]
        for name, value in headers:
            if name not in _DROP_DOWN and name not in named:
                out += (name, b": ", value, b"\r\n")
    if no_body:
        if length is not None:
            out += (b"content-length: ", length, b"\r\n")
        chunked = False
    elif length is not None and not chunked:
        out += (b"content-length: ", length, b"\r\n")
    else:
        chunked = True
        out.append(b"transfer-encoding: chunked\r\n")
    if not keep_alive:
        out.append(b"connection: close\r\n")
    out.append(b"\r\n")
    return b"".join(out), chunked


class _Owner:
    """What of the client connection's protocol the fast path uses."""

    transport: asyncio.Transport
    cycle: Any

    def on_response_complete(self) -> None: ...


class FastExchange:
    """One bodiless request proxied by callbacks (see the module's docstring)."""

    __slots__ = (
        "chunked",
        "conn",
        "deployment",
        "disconnected",
        "done",
        "fast",
        "head",
        "head_only",
        "head_sent",
        "host",
        "keep_alive",
        "more_body",
        "others",
        "owner",
        "replayable",
        "response_complete",
        "retried",
        "started",
        "timeout",
        "upstream",
    )  # fmt: skip

    def __init__(
        self,
        fast: FastPath,
        owner: _Owner,
        route: Route,
        upstream: tuple[str, int],
        head: bytes,
        head_only: bool,
        keep_alive: bool,
        host: str,
        others: list[tuple[str, int]] | None = None,
        replayable: bool = False,
    ) -> None:
        self.fast, self.owner, self.upstream, self.head = fast, owner, upstream, head
        # the route's other replicas, tried in turn when this one fails before answering
        # (refused: any request; closed without a byte: a GET, HEAD or OPTIONS)
        self.others = others
        self.replayable = replayable
        self.deployment = route.deployment
        self.timeout = route.request_timeout or fast.request_timeout
        self.head_only, self.keep_alive, self.host = head_only, keep_alive, host
        self.more_body = True
        self.disconnected = self.response_complete = self.done = False
        self.head_sent = self.chunked = self.retried = False
        self.conn: UpstreamConnection | None = None
        self.started = time.perf_counter()

    @property
    def message_event(self) -> FastExchange:
        return self

    def set(self) -> None:
        """uvicorn's protocol: the request ended, or the client went away."""
        if self.disconnected and not self.done:
            self._finish(reuse=False)

    # -- upstream side ----------------------------------------------------------------

    def send_on(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        conn.relay = self
        try:
            conn.begin(self.head, head_only=self.head_only, timeout=self.timeout)
        except ConnectionError:
            self.upstream_event()

    def _next_replica(self) -> bool:
        """Move to the route's next replica (this one failed before answering)."""
        if not self.others or self.done:
            return False
        self.fast.balancer.failed(self.upstream)
        self.fast.inflight.leave(self.upstream)
        self.upstream = self.others.pop(0)
        self.fast.inflight.enter(self.upstream)
        self.retried = False
        self.fast.spawn(self.connect())
        return True

    async def connect(self) -> None:
        try:
            conn = await self.fast.pool.connect(self.upstream)
        except (TimeoutError, OSError):
            if not self._next_replica():
                self._fail(502)
            return
        if self.done:
            conn.close()
            return
        self.send_on(conn)

    def upstream_event(self) -> None:
        """(the upstream connection) bytes arrived, it closed, or it timed out."""
        conn = self.conn
        if self.done or conn is None:
            return
        if not self.head_sent:
            if conn.headers_done:
                self._start_response(conn)
            elif conn.error is not None or conn.closed:
                if isinstance(conn.error, UpstreamTimeout):
                    self._fail(504)
                elif conn.reused and not conn.any_bytes and not self.retried:
                    # a reused keep-alive connection the upstream had just closed
                    self.retried = True
                    conn.relay = None
                    conn.close()
                    self.conn = None
                    self.fast.spawn(self.connect())
                elif not conn.any_bytes and self.replayable and self.others:
                    conn.relay = None
                    conn.close()
                    self.conn = None
                    self._next_replica()
                else:
                    self._fail(502)
            return
        self._relay(conn)

    def _start_response(self, conn: UpstreamConnection) -> None:
        transport = self.owner.transport
        if self.deployment is not None:
            self.fast.stats.record(self.deployment, conn.status, time.perf_counter() - self.started)
        no_body = self.head_only or conn.status in (204, 304)
        plain = conn.plain
        if plain is None:
            head, self.chunked = response_head(conn.status, conn.headers, no_body, self.keep_alive)
        else:  # a head seen before: its client head too
            key = (no_body, self.keep_alive)
            made = plain.client_heads.get(key)
            if made is None:
                made = plain.client_heads[key] = response_head(
                    plain.status, plain.headers, no_body, self.keep_alive
                )
            head, self.chunked = made
        self.head_sent = True
        if no_body:
            conn.chunks.clear()
            transport.write(head)
            self._finish(reuse=True)
            return
        if conn.complete and conn.error is None:
            chunks = conn.chunks
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            conn.buffered = 0
            if self.chunked:
                body = (b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)) if body else b"0\r\n\r\n"
            transport.write(head + body)
            self._finish(reuse=True)
            return
        transport.write(head)
        self._relay(conn)

    def _relay(self, conn: UpstreamConnection) -> None:
        transport = self.owner.transport
        chunks = conn.chunks
        while chunks:
            chunk = chunks.popleft()
            transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if self.chunked else chunk)
        conn.buffered = 0
        if conn.complete and conn.error is None:
            if self.chunked:
                transport.write(b"0\r\n\r\n")
            self._finish(reuse=True)
            return
        if conn.error is not None or conn.closed:
            # the head went out already: all that is left is cutting the client short
            if self.deployment is not None:
                self.fast.stats.count_error(self.deployment)
            log.warning(
                "upstream of deployment %s failed mid-response: %s", self.deployment, conn.error
            )
            self.keep_alive = False
            self._finish(reuse=False)
            return
        # back-pressure: the client takes the body slower than the upstream sends it
        flow = getattr(self.owner, "flow", None)
        if flow is not None and flow.write_paused:
            if not conn.read_paused and conn.transport is not None:
                conn.read_paused = True
                conn.transport.pause_reading()
        elif conn.read_paused and conn.transport is not None:
            conn.read_paused = False
            conn.transport.resume_reading()

    def client_drained(self) -> None:
        """(the client connection) its write buffer went below the low-water mark."""
        conn = self.conn
        if conn is not None and conn.read_paused and conn.transport is not None and not self.done:
            conn.read_paused = False
            conn.transport.resume_reading()

    # -- endings -----------------------------------------------------------------------

    def _fail(self, status: int) -> None:
        if self.done:
            return
        if self.conn is not None:
            self.conn.relay = None
            self.conn.close()
            self.conn = None
        if self.deployment is not None:
            self.fast.stats.record_error(self.deployment, status)
        body = pages.gateway_timeout(self.host) if status == 504 else pages.bad_gateway(self.host)
        head = b"%bcontent-type: text/html; charset=utf-8\r\ncontent-length: %d\r\n" % (
            STATUS_LINE[status],
            len(body),
        )
        close = b"" if self.keep_alive else b"connection: close\r\n"
        self.head_sent = True
        self.owner.transport.write(head + b"cache-control: no-store\r\n" + close + b"\r\n" + body)
        self._finish(reuse=False)

    def _finish(self, reuse: bool) -> None:
        if self.done:
            return
        self.done = True
        self.response_complete = True
        self.fast.inflight.leave(self.upstream)
        conn = self.conn
        if conn is not None:
            conn.relay = None
            self.conn = None
            if reuse and not self.disconnected:
                if conn.read_paused and conn.transport is not None:
                    conn.read_paused = False
                    conn.transport.resume_reading()
                self.fast.pool.release(self.upstream, conn)
            else:
                conn.close()
        if self.disconnected:
            return
        transport = self.owner.transport
        if not self.keep_alive or not self.head_sent:
            transport.close()
        else:
            self.owner.on_response_complete()


class FastPath:
    """Decides, for each parsed request, whether the fast path serves it (`take`)."""

    def __init__(
        self,
        table: RouteTable,
        stats: StatsRecorder,
        inflight: Inflight,
        pool: UpstreamPool,
        request_timeout: float,
        balancer: Balancer | None = None,
        guard: AccessGuard | None = None,
    ) -> None:
        self.table, self.stats, self.inflight, self.pool = table, stats, inflight, pool
        self.guard = guard or AccessGuard(None)
        self.request_timeout = request_timeout
        self.edge_token: bytes | None = None  # set by `Router.trust_edge`
        self.tasks: set[asyncio.Task[None]] = set()
        self.balancer = balancer or Balancer()
        self._routes_seen: Mapping[str, Route] | None = None
        self._by_host: dict[bytes, tuple[Route | None, str, str]] = {}

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _route(self, host: bytes) -> tuple[Route | None, str, str]:
        """The route of a raw Host value, its text and canonical form (remembered per
        table: most requests name one of a few hosts)."""
        routes = self.table.snapshot()
        if routes is not self._routes_seen:
            self._routes_seen = routes
            self._by_host = {}
        hit = self._by_host.get(host)
        if hit is None:
            text = host.decode("latin-1")
            canonical = normalize_host(text)
            hit = (routes.get(canonical), text, canonical)
            if len(self._by_host) >= HOSTS_REMEMBERED:
                self._by_host = {}  # a client sending ever new Host values
            self._by_host[host] = hit
        return hit

    def take(self, proto: Any) -> bool:
        """Serve `proto`'s just-parsed request head here; False: the ASGI path serves it.

        `proto` is uvicorn's httptools protocol after the request head: its `url`,
        `headers` (lowercase names), `parser`, `client`, `scheme`, `cycle`.
        """
        existing = proto.cycle
        if existing is not None and not existing.response_complete:
            return False  # pipelined behind a request still in flight: queued by uvicorn
        parser = proto.parser
        if parser.get_http_version() != "1.1" or parser.should_upgrade():
            return False
        target: bytes = proto.url
        q = target.find(b"?")
        path = target if q == -1 else target[:q]
        if path[:1] != b"/" or path[:_INTERNAL_LEN] == INTERNAL or path.find(b"%") != -1:
            return False
        client = proto.client
        method = parser.get_method()
        headers = proto.headers
        built = build_head(
            method,
            target,
            headers,
            client[0].encode() if client else b"",
            b"https" if proto.scheme == "https" else b"http",
            self.edge_token,
        )
        if built is None:
            return False
        head, host = built
        route, host_text, canonical = self._route(host)
        if route is None or route.upstream is None:
            return False  # the ASGI path answers 404/503 with its page
        if route.access is not None and not self.guard.allows(route, headers, canonical):
            return False  # the ASGI path answers with the sign-in page
        if route.replicas:
            tries = self.balancer.order(route)
            upstream, others = tries[0], tries[1:]
        else:
            upstream, others = route.upstream, None
        ex = FastExchange(
            self,
            proto,
            route,
            upstream,
            head,
            method == b"HEAD",
            parser.should_keep_alive(),
            host_text,
            others,
            method in REPLAYABLE,
        )
        proto.cycle = ex
        self.inflight.enter(upstream)
        conn = self.pool.take_idle(upstream)
        if conn is not None:
            ex.send_on(conn)
        else:
            self.spawn(ex.connect())
        return True
