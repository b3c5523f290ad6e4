"""The ASGI app the router serves under `/.tristage/` on every environment host.

The router puts the matched `Route` in `scope["tristage.route"]`; its project and
environment say whose webhook source a request is for.

`POST /.tristage/webhooks/{source}` is the ingest URL of a webhook source: the
request is verified with the provider's scheme and stored before the 2xx. It is a
plain ASGI handler (no framework) because it sits on the hot path of every delivery:
the body is read at most up to the source's `max_body_bytes`.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from ..domain.webhooks import ingest_path
from ..errors import TristageError

if TYPE_CHECKING:
    from ..api import Tristage

WEBHOOK_PREFIX = ingest_path("")
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


def build_internal_app(api: Tristage) -> ASGIApp:
    service = api.webhooks

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
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:  # a repeated header: the first copy wins
            headers.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
        client = scope.get("client")
        remote = f"{client[0]}:{client[1]}" if client else None
        limit = ep.config.max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            result = service.too_large(ep, remote, int(declared))
            await _respond(send, result.status, result.body, [(b"connection", b"close")])
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
