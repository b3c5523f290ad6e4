"""A lean pooled HTTP/1.1 client for the upstreams: asyncio protocols + httptools.

One `UpstreamConnection` carries one request at a time; `UpstreamPool` keeps
idle keep-alive connections per upstream address (LIFO, so the warmest one is
reused). Bodies stream both ways with flow control: the response side pauses
reading from the upstream when the client is slower than `HIGH_WATER`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol, cast

import httptools

HIGH_WATER = 256 * 1024
QUICK_BODY = 64 * 1024  # largest body of a response read without httptools
IDLE_EXPIRY = 1.5  # seconds; below common upstream keep-alive timeouts (gunicorn 2 s, uvicorn 5 s)


# For a plain HTTP/1.1 response head read without httptools (`plain_head`), two
# translation tables (a byte method with an argument costs more than a table lookup).
# `_HEAD_BYTES`: what a head may hold besides its CRLFs (HTAB, visible ASCII, obs-text)
# becomes "a", CR and LF stay, any other byte becomes 0xFF. `_NAME_BYTES`: a field name's
# bytes (RFC 9110 tokens) lowercased, any other byte 0xFF (so `isascii()` checks a name).
# Anything else is left to httptools.
_TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
_HEAD_BYTES = bytes(
    b if b in (0x0D, 0x0A) else 0x61 if b == 0x09 or 0x20 <= b < 0x7F or b >= 0x80 else 0xFF
    for b in range(256)
)
_NAME_BYTES = bytes(b + 32 if 0x41 <= b <= 0x5A else b if b in _TOKEN else 0xFF for b in range(256))


PLAIN_HEAD_MAX = 4096  # longest response head `plain_head` results are kept for
PLAIN_HEADS_KEPT = 256  # response heads remembered (an app repeats its own but for Date)


class PlainHead:
    """A plain response head: status, header fields (lowercase names; shared by every
    response with this head, never changed), its Content-Length, and the heads sent to
    clients for it (`fastpath.response_head`, by no-body and keep-alive)."""

    __slots__ = ("client_heads", "headers", "length", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], length: int) -> None:
        self.status, self.headers, self.length = status, headers, length
        self.client_heads: dict[tuple[bool, bool], tuple[bytes, bool]] = {}


NOT_PLAIN = PlainHead(0, [], -1)


def plain_head(head: bytes) -> PlainHead:
    """A response head (without its final CRLF CRLF) read when it is plain: HTTP/1.1, a
    final status that has a body, a single Content-Length, no Transfer-Encoding or
    Connection header, no byte out of place; else NOT_PLAIN."""
    lines = head.split(b"\r\n")
    # no control byte but the CRLFs between the lines (no bare CR or LF, no NUL...):
    # the split found n CRLFs, so all but n CRs and n LFs must be allowed bytes
    kinds = head.translate(_HEAD_BYTES)
    if len(kinds) - kinds.count(b"a") != 2 * (len(lines) - 1):
        return NOT_PLAIN
    line = lines[0]
    code = line[9:12]
    if line[:9] != b"HTTP/1.1 " or not code.isdigit() or line[12:13] not in (b" ", b""):
        return NOT_PLAIN
    status = int(code)
    if status < 200 or status == 204 or status == 304:
        return NOT_PLAIN
    length = -1
    headers = []
    for i in range(1, len(lines)):
        name, colon, value = lines[i].partition(b":")
        name = name.translate(_NAME_BYTES)
        if not colon or not name or not name.isascii():
            return NOT_PLAIN
        value = value.strip()  # only SP and HTAB can be there
        if name == b"content-length":
            if length != -1 or not value.isdigit():
                return NOT_PLAIN
            length = int(value)
        elif name == b"transfer-encoding" or name == b"connection":
            return NOT_PLAIN
        headers.append((name, value))
    return NOT_PLAIN if length == -1 else PlainHead(status, headers, length)


_plain_heads: dict[bytes, PlainHead] = {}


class UpstreamClosed(ConnectionError):
    """The upstream closed the connection before the response was complete."""


class UpstreamTimeout(TimeoutError):
    """The upstream did not start answering within the request timeout."""


class Relay(Protocol):
    """Told of every event on a connection instead of a waiting coroutine (the fast path)."""

    def upstream_event(self) -> None: ...


class Deadlines:
    """Request timeouts of many connections checked by one timer (every `TICK` s), so a
    request costs a set insertion rather than a timer of its own."""

    TICK = 0.1

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.watched: set[UpstreamConnection] = set()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, conn: UpstreamConnection) -> None:
        self.watched.add(conn)
        if self._timer is None:
            self._timer = self.loop.call_later(self.TICK, self._sweep)

    def _sweep(self) -> None:
        now = self.loop.time()
        for conn in list(self.watched):
            if conn.deadline is None or conn.closed:
                self.watched.discard(conn)
            elif now >= conn.deadline:
                self.watched.discard(conn)
                conn.timed_out()
        self._timer = self.loop.call_later(self.TICK, self._sweep) if self.watched else None


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, deadlines: Deadlines | None = None) -> None:
        self.loop = loop
        self.deadlines = deadlines
        self.deadline: float | None = None
        self.timeout = 0.0
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self.relay: Relay | None = None
        self.parsed = False  # httptools is in the middle of a response: it gets every byte
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.any_bytes = False
        self.framed = False  # response had Content-Length or Transfer-Encoding
        self.head_only = False
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.read_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self.error: BaseException | None = None
        self._left = 0  # body bytes still to come of a response `_whole` took
        self.plain: PlainHead | None = None  # the head of that response

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.any_bytes = True
        left = self._left
        if left:  # the rest of a body framed by a Content-Length (see `_whole`)
            n = len(data)
            if n > left:  # more than the response: the upstream is out of step
                data, n = data[:left], left
                self.keep_alive = False
            self.chunks.append(data)
            self.buffered += n
            self._left = left = left - n
            if not left:
                self.complete = True
            elif self.buffered > HIGH_WATER and not self.read_paused and self.transport:
                self.read_paused = True
                self.transport.pause_reading()
            self._wake()
            return
        if not self.parsed:
            if self._whole(data):
                self._wake()
                return
            self.parsed = True  # until the end of this response (`on_message_complete`)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self.error = UpstreamClosed(f"invalid response from upstream: {e}")
            self._close_transport()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and not self.complete and not self.framed and not self.error:
            self.complete = True  # body delimited by the connection closing
        elif not self.complete and self.error is None:
            self.error = UpstreamClosed("upstream closed the connection")
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(UpstreamClosed("upstream closed the connection"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _whole(self, data: bytes) -> bool:
        """Take `data` as the start of a plain HTTP/1.1 response framed by a
        Content-Length (the common small response): its whole head, and none of the next
        response; its body is counted in by `data_received`, without the parser's
        callbacks. False leaves the response to httptools."""
        if self.head_only or self.headers_done or data[:9] != b"HTTP/1.1 ":
            return False
        end = data.find(b"\r\n\r\n")
        if end == -1 or end > PLAIN_HEAD_MAX:
            return False
        head = data[:end]
        plain = _plain_heads.get(head)
        if plain is None:
            plain = plain_head(head)
            if len(_plain_heads) >= PLAIN_HEADS_KEPT:
                _plain_heads.clear()
            _plain_heads[head] = plain
        if plain is NOT_PLAIN:
            return False
        length = plain.length
        body = end + 4
        got = len(data) - body
        if length < got or length > QUICK_BODY:
            return False
        self.deadline = None
        self.plain = plain
        self.status, self.headers = plain.status, plain.headers
        self.headers_done = self.framed = self.keep_alive = True
        if got:
            self.chunks.append(data[body:])
            self.buffered = got
        if got == length:
            self.complete = True
        else:
            self._left = length - got
        return True

    # -- httptools callbacks --------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()  # kept lowercase: the ASGI path and the fast path want it so
        if lname == b"content-length" or lname == b"transfer-encoding":
            self.framed = True
        self.headers.append((lname, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            return  # interim response (103 Early Hints...): wait for the final one
        self.deadline = None
        self.status = status
        self.headers_done = True
        if self.head_only or status in (204, 304):
            self.framed = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def on_message_begin(self) -> None:
        self.parsed = True  # (bytes after the end of a response)
        self.headers = []  # (not a `PlainHead`'s)

    def on_message_complete(self) -> None:
        if not self.headers_done:
            self.headers = []  # end of an interim response
            return
        self.parsed = False  # the next response may be read without httptools
        self.keep_alive = self.parser.should_keep_alive()  # only valid inside the callback
        self.complete = True

    # -- used by the proxy ----------------------------------------------------------------

    def _wake(self) -> None:
        if self.relay is not None:
            self.relay.upstream_event()
            return
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        if self.headers_done and self._drain is not None and not self._drain.done():
            self._drain.set_result(None)  # an upload stalled on an app that already answered

    async def _wait(self) -> None:
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def begin(self, head: bytes, head_only: bool, timeout: float | None = None) -> None:
        """Send the request head; the response head must start within `timeout` seconds
        (None: no limit here, the caller bounds the exchange)."""
        self._reset()
        self.head_only = head_only
        if self.transport is None:
            raise UpstreamClosed("upstream connection not open")
        if timeout is not None:
            if self.deadlines is None:
                self.deadlines = Deadlines(self.loop)
            self.timeout, self.deadline = timeout, self.loop.time() + timeout
            self.deadlines.watch(self)
        self.transport.write(head)

    def timed_out(self) -> None:
        self.deadline = None
        if not self.headers_done:
            self.error = UpstreamTimeout(f"no answer from the upstream within {self.timeout:g} s")
            self.close()
            self._wake()
            if self._drain is not None and not self._drain.done():
                self._drain.set_exception(self.error)

    @property
    def refused_early(self) -> bool:
        """The upstream gave its final answer, not a success, before the request body was sent."""
        return self.headers_done and self.status >= 300

    async def write(self, data: bytes) -> None:
        """Send part of the request body. Raises `UpstreamClosed` when the upstream
        closed, or answered with a non-2xx status and so does not want the rest."""
        if isinstance(self.error, UpstreamTimeout):
            raise self.error
        if self.refused_early:
            raise UpstreamClosed("upstream answered before the request body was sent")
        if self.closed or self.transport is None:
            raise UpstreamClosed("upstream closed the connection")
        self.transport.write(data)
        if self._write_paused:
            self._drain = self.loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    async def response_head(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        while not self.headers_done:
            if self.error is not None:
                raise self.error
            if self.closed:
                raise UpstreamClosed("upstream closed the connection")
            await self._wait()
        if self.head_only:
            self.complete = True
        return self.status, self.headers

    def take_buffered(self) -> bytes | None:
        """The whole body if it already arrived (the common small-response case)."""
        if self.complete and self.error is None:
            body = b"".join(self.chunks)
            self.chunks.clear()
            self.buffered = 0
            return body
        return None

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            if self.chunks:
                chunk = self.chunks.popleft()
                self.buffered -= len(chunk)
                if self.read_paused and self.buffered <= HIGH_WATER // 4:
                    self.read_paused = False
                    if self.transport is not None:
                        self.transport.resume_reading()
                yield chunk
                continue
            if self.complete:
                return
            if self.error is not None:
                raise self.error
            await self._wait()

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and not self.closed
            and self.error is None
            and not self.head_only
            and self.keep_alive
        )

    def _close_transport(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        self.closed = True
        self.deadline = None
        self._close_transport()


class UpstreamPool:
    """Idle keep-alive connections per upstream address."""

    def __init__(self, *, connect_timeout: float = 5.0, max_idle: int = 256) -> None:
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self._idle: dict[tuple[str, int], list[UpstreamConnection]] = {}
        self._deadlines: Deadlines | None = None

    def take_idle(self, addr: tuple[str, int]) -> UpstreamConnection | None:
        """The warmest idle connection to `addr` that is still fresh, or None."""
        idle = self._idle.get(addr)
        if idle:
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                if not conn.closed and now - conn.idle_since < IDLE_EXPIRY:
                    conn.reused = True
                    return conn
                conn.close()
        return None

    async def acquire(self, addr: tuple[str, int]) -> UpstreamConnection:
        conn = self.take_idle(addr)
        return conn if conn is not None else await self.connect(addr)

    async def connect(self, addr: tuple[str, int]) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        if self._deadlines is None:
            self._deadlines = Deadlines(loop)
        deadlines = self._deadlines
        _transport, conn = await asyncio.wait_for(
            loop.create_connection(lambda: UpstreamConnection(loop, deadlines), addr[0], addr[1]),
            self.connect_timeout,
        )
        return conn

    def release(self, addr: tuple[str, int], conn: UpstreamConnection) -> None:
        if not conn.reusable:
            conn.close()
            return
        idle = self._idle.setdefault(addr, [])
        if len(idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        idle.append(conn)

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
