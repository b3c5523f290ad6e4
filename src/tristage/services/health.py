"""The health probe of a starting release: GET its health path until it answers 2xx/3xx.

The request carries the environment's own host name (as the router would send
it), so frameworks that check the Host header (Django's ALLOWED_HOSTS) answer.
A process that exits, or that listens elsewhere than `$PORT`, is told apart from
a slow one in the verdict.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from ..edges.runtime import State, Status
from ..edges.runtime.base import probe_path

LOOPBACK = "127.0.0.1"


def poll_delay(elapsed: float) -> float:
    """How long to wait before asking again, `elapsed` seconds into the check: every
    10 ms for the first two seconds (a release that answers in 300 ms is seen within
    10 ms of it, for a loopback request a few hundred microseconds long), then every
    100 ms, then every 250 ms past ten seconds."""
    if elapsed < 2.0:
        return 0.01
    return 0.1 if elapsed < 10.0 else 0.25


async def probe(
    port: int,
    path: str,
    timeout: float,
    host: str | None,
    state: Callable[[], Status],
    listening: Callable[[], list[tuple[str, int]]] | None = None,
) -> tuple[bool, str]:
    """(healthy, why not) after at most `timeout` seconds; `listening` tells where the
    app listens instead, for the verdict's hint."""
    url = f"http://{LOOPBACK}:{port}{probe_path(path)}"
    headers = {"Host": host} if host else {}
    deadline = time.monotonic() + timeout
    last = "no answer"
    refused = 0
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            try:
                st = state()
            except OSError as exc:  # out of file descriptors: cannot tell, ask again
                st = Status(State.unknown, detail=str(exc))
            if st.state in (State.exited, State.orphaned):
                return False, f"the web process {st.describe()} before answering its health check"
            try:
                resp = await client.get(url, headers=headers)
                if resp.status_code < 400:
                    return True, ""
                last = f"HTTP {resp.status_code}"
            except httpx.ConnectError:
                refused += 1
                last = "connection refused"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            await asyncio.sleep(poll_delay(time.monotonic() - started))
    hint = ""
    if last == "connection refused":
        found: list[tuple[str, int]] | None = None
        if listening is not None:
            try:
                found = listening()
            except OSError:
                found = None
        hint = port_hint(port, found)
    return (
        False,
        f"health check GET {path} did not answer 2xx/3xx within {timeout:g}s (last: {last}){hint}",
    )


async def check_once(
    port: int, path: str, host: str | None, timeout: float = 2.0
) -> tuple[bool, str]:
    """One GET of a running process's health path: (answered 2xx/3xx, what it did)."""
    headers = {"Host": host} if host else {}
    async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
        try:
            resp = await client.get(f"http://{LOOPBACK}:{port}{probe_path(path)}", headers=headers)
        except httpx.HTTPError as exc:
            return False, type(exc).__name__
    return resp.status_code < 400, f"HTTP {resp.status_code}"


def port_hint(port: int, listening: list[tuple[str, int]] | None) -> str:
    """(pure) Why nothing answered on `port`, given where the app listens (None: unknown)."""
    if listening:
        where = ", ".join(f"{a}:{p}" for a, p in listening[:5])
        return (
            f"; the app listens on {where}, not on $PORT ({port}): it must listen on the port "
            "tristage gives in $PORT (127.0.0.1)"
        )
    if listening is not None:
        return f"; the app does not listen on any port: it must listen on $PORT ({port}, 127.0.0.1)"
    return f"; nothing listens on port {port}: the app must listen on $PORT (127.0.0.1)"
