"""The dashboard: server-rendered pages over the same views as the HTTP API.

Sign-in takes an API token, or a one-time link from `tristage open`, and opens a
session (an HttpOnly, SameSite=Strict cookie). Every state change is a POST form
carrying the session's CSRF token (and, when the browser sends one, an Origin
matching the host); the session's token role is checked exactly as the API checks
it. Pages send a strict Content-Security-Policy: no inline script, everything from
this server.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..api import Role, TokenInfo, require
from ..domain.config import NAME_RE
from ..domain.deployments import ACTIVE
from ..errors import TristageError, Unauthorized, UsageError
from . import dashboard_data as data
from . import views
from .app import read_limited
from .auth import csrf_ok, csrf_token
from .models import AuditOut, check_param, from_record

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
PAGE_SIZE = 50
LOG_LINES = 2000  # a log page shows the last lines, then follows
LOG_CHUNK = 256 * 1024  # bytes of a log one poll returns at most
NOTICES = {
    "promoted": "Production now serves {id}.",
    "promote-pending": "Promotion to {id} recorded; the control plane switches when it is healthy.",
    "rolled-back": "Rolled production back to {id}.",
    "rollback-pending": "Rollback to {id} recorded; the control plane switches when it is healthy.",
    "redeployed": "Deployment {id} queued.",
    "replayed": "Delivery {id} queued again.",
    "var-set": "{id} saved; the rules ran on the new value (findings are shown next to it).",
    "var-set-redeploy": "{id} saved; the rules ran on the new value (findings are shown next "
    "to it), and the environments it reaches redeploy ([app] redeploy_on_change).",
    "var-removed": "{id} removed.",
    "backed-up": "Backup {id} taken and verified.",
    "restored": "Restored {id}; what it replaced is kept (db restore --undo, or a safety backup).",
    "revoked": "Token {id} revoked; its sessions ended.",
}
NOTICE_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,80}\Z")


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
        names = [p.name for p in views.projects(api)]
        current = ctx.get("project") or (names[0] if names else None)
        return {
            "user": info,
            "csrf": csrf_token(sid),
            "can_deploy": info.role.allows(Role.deployer),
            "can_admin": info.role.allows(Role.admin),
            "project_names": names,
            "current_project": current if current in names else None,
            "section": ctx.get("section", ""),
            **ctx,
        }

    def notice(request: Request) -> str | None:
        code = request.query_params.get("notice", "")
        dep = request.query_params.get("id", "")
        if code in NOTICES and NOTICE_ID_RE.match(dep):
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

    async def login_link(request: Request) -> Response:
        code = request.query_params.get("code", "")
        try:
            info = await run_in_threadpool(tokens.redeem_link, code)
        except Unauthorized as exc:
            pre = secrets.token_urlsafe(32)
            resp: Response = render("login.html", 401, csrf=csrf_token(pre), next="/",
                                    error=exc.message, hint=exc.hint, user=None)  # fmt: skip
            _cookie(resp, LOGIN_COOKIE, pre, http.secure_cookies, 600)
            return resp
        previous = request.cookies.get(SESSION_COOKIE)
        if previous:  # the browser's earlier session (perhaps another token's) ends
            await run_in_threadpool(tokens.close_session, previous)
        sid = await run_in_threadpool(tokens.open_session, info)
        resp = RedirectResponse(_safe_next(request.query_params.get("next", "/")), 303)
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
    async def _overview(request: Request, info: TokenInfo, sid: str, only: str | None) -> Response:
        api = http.faces.for_token(info)
        traffic = http.traffic.read()

        def build() -> dict[str, Any]:
            rows = []
            for p in views.projects(api):
                if only is not None and p.name != only:
                    continue
                item: dict[str, Any] = {"project": p, "envs": [], "error": None,
                                        "rollbacks": [], "preview": None, "production": None,
                                        "path": []}  # fmt: skip
                try:
                    p_cfg = api.config_for(p.name)
                    item["preview"], item["production"] = data.path_environments(p_cfg)
                    item["path"] = data.pipeline_order(p_cfg)
                    item["envs"], item["rollbacks"] = data.overview(api, p.name, traffic)
                except TristageError as exc:
                    item["error"] = exc.message
                rows.append(item)
            if only is not None and not rows:
                api.config_for(only)  # a clear 404
            return base(info, sid, api, projects=rows, project=only, section="overview",
                        live_traffic=http.traffic.source is not None,
                        notice=notice(request))  # fmt: skip

        ctx = await run_in_threadpool(build)
        return render("overview.html", **ctx)

    async def overview(request: Request, info: TokenInfo, sid: str) -> Response:
        return await _overview(request, info, sid, None)

    async def project_overview(request: Request, info: TokenInfo, sid: str) -> Response:
        return await _overview(request, info, sid, request.path_params["project"])

    async def go(request: Request, info: TokenInfo, sid: str) -> Response:
        """The project switcher without JavaScript."""
        name = check_param("project", request.query_params.get("project", ""))
        return RedirectResponse(f"/projects/{name}", 303)

    async def preflight_page(request: Request, info: TokenInfo, sid: str) -> Response:
        project = request.path_params["project"]
        source = request.query_params.get("from") or None
        if source is not None:
            check_param("environment", source)
        chosen = request.query_params.get("deployment") or None
        if chosen is not None:
            check_param("deployment", chosen)
        api = http.faces.for_token(info)

        def build() -> dict[str, Any]:
            pf = data.preflight(api, project, source, chosen)
            return base(info, sid, api, project=project, pf=pf, section="overview")

        return render("preflight.html", **await run_in_threadpool(build))

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
                project=project, environment=environment, section="deployments",
                environments=data.pipeline_order(cfg), production=cfg.production,
                rows=data.deployment_rows(api, project, environment, 100),
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
            if fields.get("back") == "overview":
                return f"/projects/{project}?"
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
        kind = _log_kind(request)
        api = http.faces.for_token(info)

        def build() -> dict[str, Any]:
            record = api.deploys.get(dep, project)
            live = views.live_ids(api, project)
            d = views.deployment_out(api, record, live)
            every, end = api.deploys.read_log(dep, build=kind == "build")
            lines = [data.strip_ansi(line) for line in every[-LOG_LINES:]]
            mark = None if dep in live else data.rollback_marks(api, project).get(dep)
            return base(info, sid, api, project=project, dep=d, lines=lines, kind=kind,
                        truncated=len(every) > LOG_LINES, mark=mark, section="deployments",
                        next_offset=end,
                        follow=kind == "runtime" or record.status in ACTIVE)  # fmt: skip

        return render("log.html", **await run_in_threadpool(build))

    async def log_lines(request: Request, info: TokenInfo, sid: str) -> Response:
        """A log's lines from byte offset `from` on (JSON, for the page that follows it)."""
        project, dep = request.path_params["project"], request.path_params["deployment"]
        kind = _log_kind(request)
        raw = request.query_params.get("from", "0")
        if not raw.isascii() or not raw.isdigit() or len(raw) > 15:
            raise UsageError(f"from={raw[:20]!r} is not a log offset", "use 0 or more")
        api = http.faces.for_token(info)

        def build() -> dict[str, Any]:
            record = api.deploys.get(dep, project)
            lines, end = api.deploys.read_log(dep, kind == "build", int(raw), LOG_CHUNK)
            return {
                "lines": [data.strip_ansi(line) for line in lines],
                "next": end,
                "status": record.status.value,
            }

        return JSONResponse(await run_in_threadpool(build), headers={"cache-control": "no-store"})

    def _log_kind(request: Request) -> str:
        kind = request.query_params.get("kind", "build")
        if kind not in ("build", "runtime"):
            raise UsageError(f"unknown log kind {kind[:20]!r}", "use build or runtime")
        return kind

    # -- variables -----------------------------------------------------------
    async def variables_page(request: Request, info: TokenInfo, sid: str) -> Response:
        return await _variables(request, info, sid, None, 200)

    async def _variables(
        request: Request, info: TokenInfo, sid: str, error: str | None, status: int,
        fields: dict[str, str] | None = None,
    ) -> Response:  # fmt: skip
        project = request.path_params["project"]
        environment = (fields or {}).get("environment") or request.query_params.get("environment")
        api = http.faces.for_token(info)

        def build() -> dict[str, Any]:
            cfg = api.config_for(project)
            order = data.pipeline_order(cfg)
            env_name = environment if environment in cfg.environments else order[0]
            rows, general, shares = data.variable_rows(api, project, env_name)
            return base(info, sid, api, project=project, environment=env_name,
                        environments=order, rows=rows, general=general, shares=shares,
                        section="variables", notice=notice(request), error=error,
                        changed=request.query_params.get("id"),
                        form=fields or {})  # fmt: skip

        return render("variables.html", status, **await run_in_threadpool(build))

    async def _var_error(
        request: Request, info: TokenInfo, sid: str, message: str, status: int
    ) -> Response:
        return await _variables(request, info, sid, message, status)

    def _vars_url(project: str) -> Callable[[dict[str, str]], str]:
        def url(fields: dict[str, str]) -> str:
            env_name = fields.get("environment", "")
            if env_name and NAME_RE.match(env_name):
                return f"/projects/{project}/variables?environment={env_name}&"
            return f"/projects/{project}/variables?"

        return url

    def _scope(fields: dict[str, str]) -> tuple[list[str], bool, str | None]:
        env_name = fields.get("environment", "")
        check_param("environment", env_name)
        every = fields.get("scope") == "all"
        branch = fields.get("branch") or None
        return ([] if every else [env_name]), every, branch

    async def set_variable(request: Request, info: TokenInfo, sid: str) -> Response:
        project = request.path_params["project"]

        def do(api: Tristage, fields: dict[str, str]) -> tuple[str, str]:
            name = fields.get("name", "").strip()
            envs, every, branch = _scope(fields)
            flag = {"yes": True, "no": False}
            results = api.variables.set(
                project, name, fields.get("value", ""),
                environments=envs, all_environments=every, branch=branch,
                secret=flag.get(fields.get("secret", "")), build=flag.get(fields.get("build", "")),
            )  # fmt: skip
            redeploys = api.variables.redeploy_after(project, api.variables.changed_scopes(results))
            return ("var-set-redeploy" if redeploys else "var-set"), name

        return await act(request, info, sid, Role.admin, do, _vars_url(project), _var_error)

    async def remove_variable(request: Request, info: TokenInfo, sid: str) -> Response:
        project, name = request.path_params["project"], request.path_params["name"]

        def do(api: Tristage, fields: dict[str, str]) -> tuple[str, str]:
            envs, every, branch = _scope(fields)
            api.variables.remove(
                project, name, environments=envs, all_environments=every, branch=branch
            )
            return "var-removed", name

        return await act(request, info, sid, Role.admin, do, _vars_url(project), _var_error)

    # -- alerts --------------------------------------------------------------
    async def alerts_page(request: Request, info: TokenInfo, sid: str) -> Response:
        project = request.path_params["project"]
        only_open = request.query_params.get("open") == "1"
        api = http.faces.for_token(info)

        def build() -> dict[str, Any]:
            alerts = api.monitor.alerts(project, open_only=only_open, limit=200)
            return base(info, sid, api, project=project, alerts=alerts, only_open=only_open,
                        section="alerts")  # fmt: skip

        return render("alerts.html", **await run_in_threadpool(build))

    # -- webhooks ------------------------------------------------------------
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
            for name in data.pipeline_order(cfg):
                groups.append(
                    {
                        "environment": name,
                        "counts": api.webhooks.counts(project, name),
                        "deliveries": views.deliveries(api, project, name, wanted, 50),
                    }
                )
            return base(info, sid, api, project=project, groups=groups, status_filter=wanted,
                        notice=notice(request), error=error, section="webhooks")  # fmt: skip

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

    # -- backups -------------------------------------------------------------
    async def backups_page(request: Request, info: TokenInfo, sid: str) -> Response:
        return await _backups(request, info, sid, None, 200)

    async def _backups(
        request: Request, info: TokenInfo, sid: str, error: str | None, status: int,
        message: str | None = None,
    ) -> Response:  # fmt: skip
        project = request.path_params["project"]
        api = http.faces.for_token(info)

        def build() -> dict[str, Any]:
            cfg = api.config_for(project)
            groups = []
            seen: set[str] = set()
            for name in data.pipeline_order(cfg):
                owner = cfg.owner(name)
                if owner in seen:
                    continue
                seen.add(owner)
                try:
                    items, err = views.backups(api, project, owner), None
                except TristageError as exc:
                    items, err = [], exc.message
                groups.append({"environment": owner, "backups": items, "error": err})
            return base(info, sid, api, project=project, groups=groups, section="backups",
                        notice=message or notice(request), error=error)  # fmt: skip

        return render("backups.html", status, **await run_in_threadpool(build))

    def _backups_url(project: str) -> Callable[[dict[str, str]], str]:
        return lambda fields: f"/projects/{project}/backups?"

    async def backup_now(request: Request, info: TokenInfo, sid: str) -> Response:
        project, environment = request.path_params["project"], request.path_params["environment"]

        def do(api: Tristage, fields: dict[str, str]) -> tuple[str, str]:
            note = fields.get("note", "").strip()[:200] or "from the dashboard"
            return "backed-up", api.data.backup(project, environment, note=note).id

        return await act(request, info, sid, Role.deployer, do, _backups_url(project), _backups)

    async def drill(request: Request, info: TokenInfo, sid: str) -> Response:
        project, environment = request.path_params["project"], request.path_params["environment"]
        fields = await form(request, sid)
        try:
            require(info, Role.deployer)
            api = http.faces.for_token(info)
            backup = fields.get("backup") or None
            report = await run_in_threadpool(api.data.drill, project, environment, backup)
        except TristageError as exc:
            text = exc.message + (f" ({exc.hint})" if exc.hint else "")
            return await _backups(request, info, sid, text, exc.http_status)
        rows = sum(c.actual_rows for c in report.checks)
        if report.passed:
            return await _backups(request, info, sid, None, 200, (
                f"Drill passed: backup {report.backup} restored into a scratch store, "
                f"{len(report.checks)} tables and {rows} rows match its manifest "
                f"({report.seconds:.1f} s)."))  # fmt: skip
        problems = "; ".join(report.problems) or "rows or checksums differ"
        return await _backups(request, info, sid, f"Drill of {report.backup} failed: {problems}",
                              409)  # fmt: skip

    async def restore(request: Request, info: TokenInfo, sid: str) -> Response:
        project, environment = request.path_params["project"], request.path_params["environment"]

        def do(api: Tristage, fields: dict[str, str]) -> tuple[str, str]:
            backup = fields.get("backup", "")
            typed = fields.get("confirm", "").strip()
            if typed != environment:
                raise UsageError(
                    f"restore of {environment} not confirmed: type the environment's name "
                    f"({environment}) to restore {backup[:80]}",
                    "nothing was changed",
                )
            return "restored", api.data.restore(project, environment, backup, yes=True).backup

        return await act(request, info, sid, Role.admin, do, _backups_url(project), _backups)

    # -- tokens --------------------------------------------------------------
    async def tokens_page(request: Request, info: TokenInfo, sid: str) -> Response:
        require(info, Role.admin)
        return await _tokens(request, info, sid, None, 200)

    async def _tokens(
        request: Request, info: TokenInfo, sid: str, error: str | None, status: int,
        created: Any = None,
    ) -> Response:  # fmt: skip
        api = http.faces.for_token(info)

        def build() -> dict[str, Any]:
            return base(info, sid, api, tokens=api.tokens.list(), created=created,
                        roles=[r.value for r in Role], section="tokens",
                        notice=notice(request), error=error)  # fmt: skip

        return render("tokens.html", status, **await run_in_threadpool(build))

    async def create_token(request: Request, info: TokenInfo, sid: str) -> Response:
        fields = await form(request, sid)
        try:
            require(info, Role.admin)
            api = http.faces.for_token(info)
            name, role = fields.get("name", "").strip(), fields.get("role", "viewer")
            new = await run_in_threadpool(api.tokens.create, name, role)
        except TristageError as exc:
            text = exc.message + (f" ({exc.hint})" if exc.hint else "")
            return await _tokens(request, info, sid, text, exc.http_status)
        return await _tokens(request, info, sid, None, 201, created=new)

    async def revoke_token(request: Request, info: TokenInfo, sid: str) -> Response:
        name = request.path_params["token"]

        def do(api: Tristage, fields: dict[str, str]) -> tuple[str, str]:
            return "revoked", api.tokens.revoke(name).name

        return await act(request, info, sid, Role.admin, do, lambda f: "/tokens?", _tokens)

    # -- audit ---------------------------------------------------------------
    async def audit_page(request: Request, info: TokenInfo, sid: str) -> Response:
        q = request.query_params
        filters: dict[str, str] = {}
        for key in ("project", "environment"):
            if q.get(key):
                filters[key] = check_param(key, q[key])
        for key in ("action", "actor"):
            value = (q.get(key) or "").strip()
            if value:
                if len(value) > 80 or not value.isprintable():
                    raise UsageError(f"{key} filter {value[:40]!r} is not valid",
                                     "use up to 80 printable characters")  # fmt: skip
                filters[key] = value
        raw_before = q.get("before", "")
        before = None
        if raw_before:
            if not raw_before.isascii() or not raw_before.isdigit() or len(raw_before) > 15:
                raise UsageError(f"before={raw_before[:20]!r} is not an event id",
                                 "follow the 'Older' link")  # fmt: skip
            before = int(raw_before)
        api = http.faces.for_token(info)

        def build() -> dict[str, Any]:
            action = filters.get("action")
            if action is not None and "*" not in action and "." not in action:
                action += ".*"  # "deploy" means every deploy.* action
            events = api.audit.events(
                project=filters.get("project"), environment=filters.get("environment"),
                action=action, actor=filters.get("actor"), limit=PAGE_SIZE + 1, before=before,
            )  # fmt: skip
            more = len(events) > PAGE_SIZE
            events = events[:PAGE_SIZE]
            older = (
                "/audit?" + urlencode({**filters, "before": events[-1].id})
                if more and events
                else None
            )
            newest = "/audit?" + urlencode(filters) if before is not None else None
            return base(info, sid, api, events=[from_record(AuditOut, e)
                                                for e in events],
                        filters=filters, older=older, newest=newest,
                        project=filters.get("project"), section="audit")  # fmt: skip

        return render("audit.html", **await run_in_threadpool(build))

    p = "/projects/{project}"
    return [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/login/link", login_link, methods=["GET"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", page(overview), methods=["GET"]),
        Route("/go", page(go), methods=["GET"]),
        Route(p, page(project_overview), methods=["GET"]),
        Route(f"{p}/promote", page(preflight_page), methods=["GET"]),
        Route(f"{p}/deployments", page(deployments_page), methods=["GET"]),
        Route(f"{p}/deployments/{{deployment}}/promote", page(promote), methods=["POST"]),
        Route(f"{p}/deployments/{{deployment}}/redeploy", page(redeploy), methods=["POST"]),
        Route(f"{p}/rollback", page(rollback), methods=["POST"]),
        Route(f"{p}/deployments/{{deployment}}/log", page(log_page), methods=["GET"]),
        Route(f"{p}/deployments/{{deployment}}/log/lines", page(log_lines), methods=["GET"]),
        Route(f"{p}/variables", page(variables_page), methods=["GET"]),
        Route(f"{p}/variables", page(set_variable), methods=["POST"]),
        Route(f"{p}/variables/{{name}}/remove", page(remove_variable), methods=["POST"]),
        Route(f"{p}/alerts", page(alerts_page), methods=["GET"]),
        Route(f"{p}/webhooks", page(webhooks_page), methods=["GET"]),
        Route(f"{p}/webhooks/{{delivery}}/replay", page(replay), methods=["POST"]),
        Route(f"{p}/backups", page(backups_page), methods=["GET"]),
        Route(f"{p}/environments/{{environment}}/backup", page(backup_now), methods=["POST"]),
        Route(f"{p}/environments/{{environment}}/drill", page(drill), methods=["POST"]),
        Route(f"{p}/environments/{{environment}}/restore", page(restore), methods=["POST"]),
        Route("/tokens", page(tokens_page), methods=["GET"]),
        Route("/tokens", page(create_token), methods=["POST"]),
        Route("/tokens/{token}/revoke", page(revoke_token), methods=["POST"]),
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
