"""The dashboard: server-rendered pages over the same views as the HTTP API.

Sign-in takes an API token and opens a session (an HttpOnly, SameSite=Strict
cookie). Every state change is a POST form carrying the session's CSRF token
(and, when the browser sends one, an Origin matching the host); the session's
token role is checked exactly as the API checks it. Pages send a strict
Content-Security-Policy: no inline script, everything from this server.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..api import Role, TokenInfo, require
from ..domain.config import NAME_RE
from ..errors import TristageError, Unauthorized, UsageError
from . import views
from .app import read_limited
from .auth import csrf_ok, csrf_token
from .models import check_param

if TYPE_CHECKING:
    from ..api import Tristage
    from .views import Http

SESSION_COOKIE = "tristage_session"
LOGIN_COOKIE = "tristage_login"
TEMPLATES = Path(__file__).parent / "templates"
MAX_FORM = 64 * 1024
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
NOTICES = {
    "promoted": "Production now serves {id}.",
    "promote-pending": "Promotion to {id} recorded; the control plane switches when it is healthy.",
    "rolled-back": "Rolled production back to {id}.",
    "rollback-pending": "Rollback to {id} recorded; the control plane switches when it is healthy.",
    "redeployed": "Deployment {id} queued.",
    "replayed": "Delivery {id} queued again.",
}


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    s = int(max(0, time.time() - ts))
    if s < 60:
        return f"{s}s ago"
    if s < 3600:
        return f"{s // 60}m ago"
    if s < 86400:
        return f"{s // 3600}h ago"
    return f"{s // 86400}d ago"


def _when(ts: float | None) -> str:
    if not ts:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _num(v: float | None, suffix: str = "") -> str:
    return "-" if v is None else f"{v:g}{suffix}"


env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters.update(ago=_ago, when=_when, size=_size, num=_num)


class _Page(Exception):
    """Stop and answer with this response."""

    def __init__(self, response: Response) -> None:
        self.response = response


def render(name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    html = env.get_template(name).render(**ctx)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def routes(http: Http) -> list[BaseRoute]:
    tokens = http.faces.tokens

    # -- sessions --------------------------------------------------------
    async def session(request: Request) -> tuple[TokenInfo, str]:
        sid = request.cookies.get(SESSION_COOKIE, "")
        try:
            info = await run_in_threadpool(tokens.session, sid)
        except Unauthorized:
            if request.method == "GET":
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                raise _Page(RedirectResponse(f"/login?next={quote(target)}", 303)) from None
            raise _Page(
                render("error.html", 401, title="Signed out", message="Your session ended.",
                       hint="Sign in again.", user=None)
            ) from None  # fmt: skip
        return info, sid

    async def form(request: Request, sid: str) -> dict[str, str]:
        origin = request.headers.get("origin")
        if origin and origin != "null":
            if urlsplit(origin).netloc != request.headers.get("host", ""):
                raise _Page(_forbidden("cross-site form submission refused"))
        elif origin == "null":
            raise _Page(_forbidden("cross-site form submission refused"))
        raw = await read_limited(request, MAX_FORM)
        if raw is None:
            raise _Page(_forbidden("form too large"))
        parsed = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
        fields = {k: v[0] for k, v in parsed.items() if v}
        if not csrf_ok(sid, fields.get("csrf", "")):
            raise _Page(_forbidden("the form's CSRF token is missing or wrong; reload the page"))
        return fields

    def _forbidden(message: str) -> HTMLResponse:
        return render("error.html", 403, title="Forbidden", message=message, hint=None, user=None)

    def page(
        handler: Callable[[Request, TokenInfo, str], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                info, sid = await session(request)
                for k, v in request.path_params.items():
                    check_param(k, str(v))
                return await handler(request, info, sid)
            except _Page as stop:
                return stop.response
            except TristageError as exc:
                return render("error.html", exc.http_status, title="Error", message=exc.message,
                              hint=exc.hint, user=None)  # fmt: skip

        return endpoint

    def base(info: TokenInfo, sid: str, api: Tristage, **ctx: Any) -> dict[str, Any]:
        return {
            "user": info,
            "csrf": csrf_token(sid),
            "can_deploy": info.role.allows(Role.deployer),
            "can_admin": info.role.allows(Role.admin),
            "project_names": [p.name for p in views.projects(api)],
            **ctx,
        }

    def notice(request: Request) -> str | None:
        code = request.query_params.get("notice", "")
        dep = request.query_params.get("id", "")
        if code in NOTICES and dep.replace("_", "").isalnum() and len(dep) <= 40:
            return NOTICES[code].format(id=dep)
        return None

    # -- sign in / out ---------------------------------------------------
    async def login_page(request: Request) -> Response:
        pre = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
        nxt = _safe_next(request.query_params.get("next", "/"))
        resp = render("login.html", csrf=csrf_token(pre), next=nxt, error=None, user=None)
        _cookie(resp, LOGIN_COOKIE, pre, http.secure_cookies, 600)
        return resp

    async def login(request: Request) -> Response:
        pre = request.cookies.get(LOGIN_COOKIE, "")
        try:
            fields = await form(request, pre)
        except _Page as stop:
            return stop.response
        nxt = _safe_next(fields.get("next", "/"))
        try:
            info = await run_in_threadpool(tokens.authenticate, fields.get("token", ""))
        except Unauthorized as exc:
            return render("login.html", 401, csrf=csrf_token(pre), next=nxt, error=exc.message,
                          user=None)  # fmt: skip
        sid = await run_in_threadpool(tokens.open_session, info)
        resp = RedirectResponse(nxt, 303)
        _cookie(resp, SESSION_COOKIE, sid, http.secure_cookies, None)
        resp.delete_cookie(LOGIN_COOKIE, path="/")
        return resp

    async def logout(request: Request) -> Response:
        try:
            _info, sid = await session(request)
            await form(request, sid)
        except _Page as stop:
            return stop.response
        await run_in_threadpool(tokens.close_session, sid)
        resp = RedirectResponse("/login", 303)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    # -- pages -------------------------------------------------------------
    async def overview(request: Request, info: TokenInfo, sid: str) -> Response:
        api = http.faces.for_token(info)
        traffic = http.traffic.read()

        def build() -> dict[str, Any]:
            rows = []
            for p in views.projects(api):
                try:
                    envs = views.environments(api, p.name, traffic)
                except TristageError as exc:
                    rows.append({"project": p, "envs": [], "error": exc.message})
                    continue
                rows.append({"project": p, "envs": envs, "error": None})
            return base(info, sid, api, projects=rows, live_traffic=http.traffic.source is not None)

        ctx = await run_in_threadpool(build)
        return render("overview.html", **ctx)

    async def deployments_page(request: Request, info: TokenInfo, sid: str) -> Response:
        return await _deployments(request, info, sid, None, 200)

    async def _deployments(
        request: Request, info: TokenInfo, sid: str, error: str | None, status: int
    ) -> Response:
        project = request.path_params["project"]
        environment = request.query_params.get("environment") or None
        if environment is not None:
            check_param("environment", environment)
        api = http.faces.for_token(info)

        def build() -> dict[str, Any]:
            cfg = api.config_for(project)
            return base(
                info, sid, api,
                project=project, environment=environment,
                environments=list(cfg.environments), production=cfg.production,
                deployments=views.deployments(api, project, environment, 100),
                notice=notice(request), error=error,
            )  # fmt: skip

        return render("deployments.html", status, **await run_in_threadpool(build))

    async def act(
        request: Request,
        info: TokenInfo,
        sid: str,
        needed: Role,
        action: Callable[[Tristage, dict[str, str]], tuple[str, str]],
        back: Callable[[dict[str, str]], str],
        on_error: Callable[[Request, TokenInfo, str, str, int], Awaitable[Response]],
    ) -> Response:
        fields = await form(request, sid)
        try:
            require(info, needed)
            api = http.faces.for_token(info)
            code, ident = await run_in_threadpool(action, api, fields)
        except TristageError as exc:
            text = exc.message + (f" ({exc.hint})" if exc.hint else "")
            return await on_error(request, info, sid, text, exc.http_status)
        return RedirectResponse(f"{back(fields)}notice={code}&id={quote(ident)}", 303)

    def _deps_url(project: str) -> Callable[[dict[str, str]], str]:
        def url(fields: dict[str, str]) -> str:
            env_name = fields.get("environment", "")
            if env_name and NAME_RE.match(env_name):
                return f"/projects/{project}/deployments?environment={env_name}&"
            return f"/projects/{project}/deployments?"

        return url

    async def promote(request: Request, info: TokenInfo, sid: str) -> Response:
        project, dep = request.path_params["project"], request.path_params["deployment"]

        def do(api: Tristage, fields: dict[str, str]) -> tuple[str, str]:
            sw = api.deploys.promote(project, dep, wait=20.0)
            return ("promoted" if sw.routed else "promote-pending"), sw.deployment.id

        return await act(request, info, sid, Role.deployer, do, _deps_url(project), _dep_error)

    async def rollback(request: Request, info: TokenInfo, sid: str) -> Response:
        project = request.path_params["project"]

        def do(api: Tristage, fields: dict[str, str]) -> tuple[str, str]:
            to = fields.get("to") or None
            if to is not None:
                check_param("deployment", to)
            sw = api.deploys.rollback(project, to, wait=20.0)
            return ("rolled-back" if sw.routed else "rollback-pending"), sw.deployment.id

        return await act(request, info, sid, Role.deployer, do, _deps_url(project), _dep_error)

    async def redeploy(request: Request, info: TokenInfo, sid: str) -> Response:
        project, dep = request.path_params["project"], request.path_params["deployment"]

        def do(api: Tristage, fields: dict[str, str]) -> tuple[str, str]:
            return "redeployed", api.deploys.redeploy(project, dep).id

        return await act(request, info, sid, Role.deployer, do, _deps_url(project), _dep_error)

    async def _dep_error(
        request: Request, info: TokenInfo, sid: str, message: str, status: int
    ) -> Response:
        return await _deployments(request, info, sid, message, status)

    async def log_page(request: Request, info: TokenInfo, sid: str) -> Response:
        project, dep = request.path_params["project"], request.path_params["deployment"]
        kind = request.query_params.get("kind", "build")
        if kind not in ("build", "runtime"):
            raise UsageError(f"unknown log kind {kind[:20]!r}", "use build or runtime")
        api = http.faces.for_token(info)

        def build() -> dict[str, Any]:
            d = views.deployment_out(
                api, api.deploys.get(dep, project), views.live_ids(api, project)
            )
            log = views.deployment_log(api, project, dep, kind)
            return base(info, sid, api, project=project, dep=d, log=log, kind=kind)

        return render("log.html", **await run_in_threadpool(build))

    async def webhooks_page(request: Request, info: TokenInfo, sid: str) -> Response:
        return await _webhooks(request, info, sid, None, 200)

    async def _webhooks(
        request: Request, info: TokenInfo, sid: str, error: str | None, status: int
    ) -> Response:
        project = request.path_params["project"]
        api = http.faces.for_token(info)
        wanted = request.query_params.get("status") or None

        def build() -> dict[str, Any]:
            cfg = api.config_for(project)
            groups = []
            for name in cfg.environments:
                groups.append(
                    {
                        "environment": name,
                        "counts": api.webhooks.counts(project, name),
                        "deliveries": views.deliveries(api, project, name, wanted, 50),
                    }
                )
            return base(info, sid, api, project=project, groups=groups, status_filter=wanted,
                        notice=notice(request), error=error)  # fmt: skip

        return render("webhooks.html", status, **await run_in_threadpool(build))

    async def replay(request: Request, info: TokenInfo, sid: str) -> Response:
        project, delivery = request.path_params["project"], request.path_params["delivery"]

        def do(api: Tristage, fields: dict[str, str]) -> tuple[str, str]:
            views.replay(api, project, delivery)
            return "replayed", delivery

        return await act(
            request, info, sid, Role.deployer, do,
            lambda f: f"/projects/{project}/webhooks?", _webhooks,
        )  # fmt: skip

    async def backups_page(request: Request, info: TokenInfo, sid: str) -> Response:
        project = request.path_params["project"]
        api = http.faces.for_token(info)

        def build() -> dict[str, Any]:
            cfg = api.config_for(project)
            groups = []
            seen: set[str] = set()
            for name in cfg.environments:
                owner = cfg.owner(name)
                if owner in seen:
                    continue
                seen.add(owner)
                try:
                    items, err = views.backups(api, project, owner), None
                except TristageError as exc:
                    items, err = [], exc.message
                groups.append({"environment": owner, "backups": items, "error": err})
            return base(info, sid, api, project=project, groups=groups)

        return render("backups.html", **await run_in_threadpool(build))

    async def audit_page(request: Request, info: TokenInfo, sid: str) -> Response:
        project = request.query_params.get("project") or None
        if project is not None:
            check_param("project", project)
        api = http.faces.for_token(info)

        def build() -> dict[str, Any]:
            events = views.audit_events(api, project=project, limit=200)
            return base(info, sid, api, project=project, events=events)

        return render("audit.html", **await run_in_threadpool(build))

    p = "/projects/{project}"
    return [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", page(overview), methods=["GET"]),
        Route(f"{p}/deployments", page(deployments_page), methods=["GET"]),
        Route(f"{p}/deployments/{{deployment}}/promote", page(promote), methods=["POST"]),
        Route(f"{p}/deployments/{{deployment}}/redeploy", page(redeploy), methods=["POST"]),
        Route(f"{p}/rollback", page(rollback), methods=["POST"]),
        Route(f"{p}/deployments/{{deployment}}/log", page(log_page), methods=["GET"]),
        Route(f"{p}/webhooks", page(webhooks_page), methods=["GET"]),
        Route(f"{p}/webhooks/{{delivery}}/replay", page(replay), methods=["POST"]),
        Route(f"{p}/backups", page(backups_page), methods=["GET"]),
        Route("/audit", page(audit_page), methods=["GET"]),
    ]


def _safe_next(target: str) -> str:
    """Only a local path: never an open redirect."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _cookie(resp: Response, name: str, value: str, secure: bool, max_age: int | None) -> None:
    resp.set_cookie(
        name, value, max_age=max_age, path="/", httponly=True, samesite="strict", secure=secure
    )
