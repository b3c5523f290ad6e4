"""The ASGI app the router serves under `/.tristage/` on every environment host.

The router puts the matched `Route` in `scope["tristage.route"]`; its project and
environment say whose webhook source a request is for.

`POST /.tristage/git` is the push endpoint of a project connected to its git host
(`services/git_hosts.py`): verified and recorded, answered 202, acted on in the
background.

`POST /.tristage/webhooks/{source}` is the ingest URL of a webhook source: the
request is verified with the provider's scheme and stored before the 2xx. It is a
plain ASGI handler (no framework) because it sits on the hot path of every delivery:
the body is read at most up to the source's `max_body_bytes`.

Deliveries are taken a few at a time per environment (`per_environment`), with a short
queue behind them (`queue`); past that an environment's deliveries are answered 503 with
`Retry-After` (providers retry), so a flood at one environment, forged or not, cannot
hold up another's webhooks or its traffic.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from ..domain.git_events import INGEST_PATH as GIT_PATH
from ..domain.numbers import ascii_int
from ..domain.webhooks import ingest_path
from ..errors import TristageError

if TYPE_CHECKING:
    from ..api import Endpoint, Tristage

WEBHOOK_PREFIX = ingest_path("")
GIT_MAX_BODY = 25 * 1024 * 1024  # GitHub caps webhook payloads at 25 MB
SOURCE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")


async def _respond(
    send: Send, status: int, body: dict[str, Any], extra: list[Any] | None = None
) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class _TooLarge(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client disconnected")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _TooLarge(size)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class _Busy(Exception):
    pass


class EnvironmentGates:
    """At most `limit` deliveries in progress per environment, `queue` more waiting."""

    def __init__(self, limit: int, queue: int) -> None:
        self.limit, self.queue = limit, queue
        self._gates: dict[tuple[str, str], tuple[asyncio.Semaphore, list[int]]] = {}

    @asynccontextmanager
    async def enter(self, key: tuple[str, str]) -> AsyncIterator[None]:
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = (asyncio.Semaphore(self.limit), [0])
        sem, waiting = gate
        if sem.locked():
            if waiting[0] >= self.queue:
                raise _Busy
            waiting[0] += 1
            try:
                await sem.acquire()
            finally:
                waiting[0] -= 1
        else:
            await sem.acquire()
        try:
            yield
        finally:
            sem.release()


def build_internal_app(api: Tristage, *, per_environment: int = 4, queue: int = 512) -> ASGIApp:
    service = api.webhooks
    gates = EnvironmentGates(per_environment, queue)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.rstrip("/") == GIT_PATH:
            await _git(scope, receive, send)
            return
        if not path.startswith(WEBHOOK_PREFIX):
            await _respond(send, 404, {"ok": False, "error": "not_found"})
            return
        source = path[len(WEBHOOK_PREFIX) :].rstrip("/")
        route = scope.get("tristage.route")
        if route is None or not SOURCE_RE.match(source):
            await _respond(
                send,
                404,
                {"ok": False, "error": "not_found", "message": "no webhook source here"},
            )
            return
        if scope["method"] != "POST":
            await _respond(
                send,
                405,
                {
                    "ok": False,
                    "error": "method_not_allowed",
                    "message": "this is a webhook ingest URL: providers POST signed "
                    "deliveries here",
                },
                [(b"allow", b"POST")],
            )
            return
        try:
            ep = await service.endpoint_async(route.project, route.environment, source)
        except TristageError as exc:
            # 404 or the platform's 5xx, logged in full, answered without details
            refused = service.unavailable(route.project, route.environment, source, exc)
            await _respond(send, refused.status, refused.body)
            return
        try:
            async with gates.enter((route.project, route.environment)):
                await _deliver(ep, scope, receive, send)
        except _Busy:
            await _respond(
                send,
                503,
                {
                    "ok": False,
                    "error": "busy",
                    "message": "too many deliveries at this environment right now; retry later",
                },
                [(b"retry-after", b"1")],
            )

    async def _git(scope: Scope, receive: Receive, send: Send) -> None:
        route = scope.get("tristage.route")
        if route is None:
            await _respond(send, 404, {"ok": False, "error": "not_found"})
            return
        if scope["method"] != "POST":
            await _respond(
                send,
                405,
                {"ok": False, "error": "method_not_allowed",
                 "message": "this is the git host push endpoint: the host POSTs events here"},
                [(b"allow", b"POST")],
            )  # fmt: skip
            return
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            headers.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
        too_large = {"ok": False, "error": "too_large",
                     "message": f"the body is larger than {GIT_MAX_BODY} bytes"}  # fmt: skip
        size = ascii_int(headers.get("content-length", ""))
        if size is not None and size > GIT_MAX_BODY:
            await _respond(send, 413, too_large, [(b"connection", b"close")])
            return
        try:
            body = await _read_body(receive, GIT_MAX_BODY)
        except _TooLarge:
            await _respond(send, 413, too_large, [(b"connection", b"close")])
            return
        except ConnectionError:
            return
        git_hosts = api.git_hosts
        try:
            result = await asyncio.to_thread(git_hosts.ingest, route.project, headers, body)
        except TristageError as exc:
            await _respond(send, 503, {"ok": False, "error": "unavailable", "message": exc.message})
            return
        if result.job is not None:
            git_hosts.start(result.job)
        await _respond(send, result.status, result.body)

    async def _deliver(ep: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:  # a repeated header: the first copy wins
            headers.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
        client = scope.get("client")
        remote = f"{client[0]}:{client[1]}" if client else None
        limit = ep.config.max_body_bytes
        declared = headers.get("content-length", "")
        size = ascii_int(declared)
        if size is not None and size > limit:
            result = service.too_large(ep, remote, size)
            await _respond(send, result.status, result.body, [(b"connection", b"close")])
            return
        shed = service.shedding(ep, limit if size is None else size)
        if shed is not None:  # a flood of refused requests here: not read, not verified
            await _respond(
                send, shed.status, shed.body, [(b"retry-after", b"2"), (b"connection", b"close")]
            )
            return
        try:
            body = await _read_body(receive, limit)
        except _TooLarge as exc:
            result = service.too_large(ep, remote, int(exc.args[0]))
            await _respond(send, result.status, result.body, [(b"connection", b"close")])
            return
        except ConnectionError:
            return
        result = await service.ingest(ep, headers, body, remote=remote)
        await _respond(send, result.status, result.body)

    return app
