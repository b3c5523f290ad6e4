"""Small helpers shared by the benchmarks: free ports, percentiles, a lean HTTP load generator.

The load generator keeps `concurrency` keep-alive connections busy with one
request at a time each (closed loop), parsing responses with httptools, so the
client costs far less CPU than the servers it measures.
"""

from __future__ import annotations

import asyncio
import math
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import httptools


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an unsorted list; nan when empty."""
    if not values:
        return math.nan
    s = sorted(values)
    rank = max(1, min(len(s), math.ceil(q / 100.0 * len(s))))
    return s[rank - 1]


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def spawn(*args: str) -> subprocess.Popen[bytes]:
    """Start `python args...` as a child process."""
    return subprocess.Popen([sys.executable, *args])


@dataclass
class LoadResult:
    label: str
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)

    def line(self) -> str:
        return (
            f"{self.label:<10} {self.rps:>9.0f} req/s   p50 {self.p50:6.2f} ms   "
            f"p99 {self.p99:6.2f} ms   ({self.requests} requests, {self.errors} errors, "
            f"statuses {dict(sorted(self.statuses.items()))})"
        )


class _Response:
    """httptools callbacks for one response at a time."""

    def __init__(self) -> None:
        self.done = False

    def on_message_complete(self) -> None:
        self.done = True


async def exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: bytes,
    result: LoadResult,
    t0: float,
) -> None:
    """Send one request on a keep-alive connection, read its whole response, record it
    in `result` (latency from `t0`, status). Raises on a closed or broken connection."""
    state = _Response()
    parser = httptools.HttpResponseParser(state)
    writer.write(request)
    while not state.done:
        data = await reader.read(65536)
        if not data:
            raise ConnectionResetError("server closed the connection")
        parser.feed_data(data)
    result.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
    code = parser.get_status_code()
    result.statuses[code] = result.statuses.get(code, 0) + 1


def http_get(path: str, host: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tristage-bench\r\n\r\n".encode()


async def _connection(
    addr: tuple[str, int], request: bytes, deadline: float, result: LoadResult
) -> None:
    try:
        reader, writer = await asyncio.open_connection(*addr)
    except OSError:
        result.errors += 1
        return
    try:
        while time.perf_counter() < deadline:
            await exchange(reader, writer, request, result, time.perf_counter())
    except (OSError, httptools.HttpParserError):
        result.errors += 1
    finally:
        writer.close()


async def load(
    label: str,
    addr: tuple[str, int],
    request: bytes,
    *,
    concurrency: int = 32,
    seconds: float = 3.0,
    warmup: float = 0.5,
) -> LoadResult:
    """Closed-loop load: `concurrency` keep-alive connections for `seconds`."""
    if warmup > 0:
        scratch = LoadResult(label, warmup)
        end = time.perf_counter() + warmup
        await asyncio.gather(
            *(_connection(addr, request, end, scratch) for _ in range(concurrency))
        )
    result = LoadResult(label, seconds)
    start = time.perf_counter()
    end = start + seconds
    await asyncio.gather(*(_connection(addr, request, end, result) for _ in range(concurrency)))
    result.seconds = time.perf_counter() - start
    return result
