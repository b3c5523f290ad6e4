"""The HTTP API (REST + OpenAPI) and the dashboard: a thin face over the Python API.

`build_app(home, stats=...)` returns one Starlette app:

- `/api/v1/...`: JSON endpoints, each declared once in `OPS` with its role, body
  and response models; `/api/v1/openapi.json` is generated from the same list.
  Authentication is `Authorization: Bearer tst_...` (see `auth.py`); only
  `/api/v1/health` answers without a token.
- `/` and below: the server-rendered dashboard (`dashboard.py`).

Every request acts through a `Tristage` whose actor is `token:<name>`, so the audit
events the services write name the token. Service calls block (SQLite, waiting for
the router to switch), so they run in worker threads; router statistics are read
on the event loop, where the router records them.

`tristage up` serves the app next to its router (see `tristage.up` and
docs/http-api.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.staticfiles import StaticFiles

from .. import __version__
from ..api import Role, require
from ..domain.numbers import ascii_int
from ..errors import TristageError, UsageError
from .auth import bearer
from .models import ErrorOut, Health, InvalidBodyOut, Problem, check_param
from .openapi import API, openapi
from .ops import OPS, Call, Op
from .views import Faces, Http, StatsSource, TrafficMeter

STATIC_DIR = Path(__file__).parent / "static"
MAX_BODY = 1_000_000

# ---------------------------------------------------------------------------
# Errors as JSON


def error_response(
    status: int,
    code: str,
    message: str,
    hint: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    headers = {"cache-control": "no-store", **(headers or {})}
    if status == 401:
        headers["www-authenticate"] = 'Bearer realm="tristage"'
    body = ErrorOut(error=code, message=message, hint=hint).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


def tristage_error(exc: TristageError) -> JSONResponse:
    """The error as JSON: its own HTTP status and code (see `tristage.errors`)."""
    return error_response(exc.http_status, exc.code, exc.message, exc.hint)


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it exceeds `limit` bytes (never buffered)."""
    declared = request.headers.get("content-length", "")
    size = ascii_int(declared)
    if size is not None and size > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _query(op: Op, request: Request) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for q in op.query:
        raw = request.query_params.get(q.name)
        if raw is None:
            continue
        value: Any = raw
        if q.kind == "integer":
            number = ascii_int(raw)
            if number is None or not 1 <= number <= (q.maximum or 10**6):
                raise UsageError(
                    f"query parameter {q.name}={raw[:40]!r} is not a number in range",
                    f"use 1..{q.maximum}",
                )
            value = int(raw)
        elif q.kind == "boolean":
            if raw not in ("true", "false", "1", "0"):
                raise UsageError(f"query parameter {q.name} must be true or false")
            value = raw in ("true", "1")
        elif q.pattern is not None and not re.match(q.pattern, raw):
            raise UsageError(f"query parameter {q.name}={raw[:40]!r} is not valid")
        out[q.name] = value
    return out


class _InvalidBody(Exception):
    def __init__(self, problems: list[dict[str, str]]) -> None:
        self.problems = problems


ANY_METHOD = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE")


def _by_method(
    endpoints: dict[str, Callable[[Request], Awaitable[Response]]],
) -> Callable[[Request], Awaitable[Response]]:
    get = endpoints.get("GET")

    async def endpoint(request: Request) -> Response:
        handler = endpoints.get(request.method) or (get if request.method == "HEAD" else None)
        assert handler is not None  # the route admits only these methods
        return await handler(request)

    return endpoint


def _endpoint(http: Http, op: Op) -> Callable[[Request], Awaitable[Response]]:
    adapter: TypeAdapter[Any] = TypeAdapter(op.response)

    def work(request: Request, token: str, raw: bytes | None, traffic: dict[str, Any]) -> Any:
        # one worker-thread hop per request: authenticate, check, validate, call
        info = http.faces.tokens.authenticate(token)
        require(info, op.role)
        if raw is None and op.body is not None:
            raise UsageError("request body too large (limit 1 MB)")
        path = {k: check_param(k, str(v)) for k, v in request.path_params.items()}
        query = _query(op, request)
        body: Any = None
        if op.body is not None:
            try:
                body = op.body.model_validate_json(raw or b"{}")
            except ValidationError as exc:
                raise _InvalidBody(
                    [
                        {"at": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                        for e in exc.errors(include_url=False, include_input=False)
                    ]
                ) from None
        call = Call(http, info, http.faces.for_token(info), path, query, body, traffic)
        return op.handler(call)

    async def endpoint(request: Request) -> Response:
        try:
            token = bearer(request)
            raw = await read_limited(request, MAX_BODY) if op.body is not None else b""
            traffic = http.traffic.read() if op.needs_traffic else {}
            result = await run_in_threadpool(work, request, token, raw, traffic)
        except TristageError as exc:
            return tristage_error(exc)
        except _InvalidBody as exc:
            assert op.body is not None
            body = InvalidBodyOut(
                error="invalid_body",
                message=f"the request body is not a valid {op.body.__name__}",
                hint="see the schema in /api/v1/openapi.json",
                problems=[Problem(**p) for p in exc.problems],
            ).model_dump()
            return JSONResponse(body, status_code=422)
        return JSONResponse(
            adapter.dump_python(result, mode="json"),
            status_code=op.status,
            headers={"cache-control": "no-store"},
        )

    return endpoint


# ---------------------------------------------------------------------------
# The app


def build_app(
    home: Path,
    stats: StatsSource | None = None,
    *,
    secure_cookies: bool = False,
    sample_every: float = 5.0,
) -> Starlette:
    """The API + dashboard app over the platform home `home`.

    `stats` is the router's `stats()` (same event loop) when the control plane hosts
    the app; without it the traffic columns stay empty.
    """
    from .dashboard import routes as dashboard_routes

    http = Http(Faces(home), TrafficMeter(stats), secure_cookies)
    doc = openapi(OPS)

    async def health(request: Request) -> Response:
        return JSONResponse(Health(ok=True, version=__version__).model_dump())

    async def openapi_doc(request: Request) -> Response:
        try:
            info = await run_in_threadpool(http.faces.tokens.authenticate, bearer(request))
            require(info, Role.viewer)
        except TristageError as exc:
            return tristage_error(exc)
        return JSONResponse(doc)

    async def api_not_found(request: Request) -> Response:
        return error_response(404, "not_found", f"no API endpoint {request.url.path}")

    routes: list[BaseRoute] = [
        Route(f"{API}/health", health, methods=["GET"]),
        Route(f"{API}/openapi.json", openapi_doc, methods=["GET"]),
    ]
    by_path: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}
    for op in OPS:
        by_path.setdefault(op.path, {})[op.method] = _endpoint(http, op)
    for path, endpoints in by_path.items():
        # one route per path: another method gets 405 with an Allow of all the path's methods
        routes.append(Route(API + path, _by_method(endpoints), methods=list(endpoints)))
    api_routes = list(routes)

    async def api_fallback(request: Request) -> Response:
        allowed = sorted(
            {m for r in api_routes if isinstance(r, Route) and r.matches(request.scope)[0]
             != Match.NONE for m in (r.methods or ())}
        )  # fmt: skip
        if allowed:
            return error_response(
                405, "method_not_allowed",
                f"{request.method} is not allowed on {request.url.path}",
                hint=f"use {', '.join(allowed)}", headers={"allow": ", ".join(allowed)},
            )  # fmt: skip
        return await api_not_found(request)

    routes.append(Route("/api/{rest:path}", api_fallback, methods=list(ANY_METHOD)))
    routes.append(Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"))
    routes.extend(dashboard_routes(http))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sampler = asyncio.create_task(http.traffic.run(sample_every)) if stats else None
        try:
            yield
        finally:
            if sampler is not None:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
            http.faces.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.http = http
    return app
