"""Requests to responses: the app's routes, independent of the HTTP server that carries them."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from . import clerk, pages, schema
from .database import Database, DatabaseUnavailable, utcnow
from .security import COOKIE_NAME, SESSION_MAX_AGE, Session, Sessions
from .settings import Settings
from .signatures import SignatureError, verify

log = logging.getLogger("saasapp")

MAX_BODY = 1024 * 1024
REFUND_RE = re.compile(r"^/payments/(\d{1,18})/refund$")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""

    def cookie(self, name: str) -> str | None:
        raw = self.headers.get("cookie")
        if not raw:
            return None
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw)
        except CookieError:
            return None
        morsel = jar.get(name)
        return morsel.value if morsel else None


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, data: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, indent=None, separators=(",", ":"), default=str).encode()
    return Response(status, body, "application/json", headers or {})


def redirect(location: str, status: int = 302) -> Response:
    return Response(status, b"", "text/plain", {"Location": location})


class App:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database)
        self.sessions = Sessions(settings.session_secret, settings.csrf_secret)

    # -- dispatch ---------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        path, method = request.path, request.method
        routes = {
            "/health": ("GET", self.health),
            "/": ("GET", lambda _r: redirect("/dashboard")),
            "/dashboard": ("GET", self.dashboard),
            "/api/users": ("GET", self.api_users),
            "/api/payment-attempts": ("GET", self.api_payments),
            "/clerk-users-webhook": ("POST", self.clerk_webhook),
        }
        if path in routes:
            allowed, handler = routes[path]
            if method != allowed:
                return json_response(405, {"error": f"use {allowed}"}, {"Allow": allowed})
            return handler(request)
        match = REFUND_RE.match(path)
        if match:
            if method != "POST":
                return json_response(405, {"error": "use POST"}, {"Allow": "POST"})
            return self.refund(request, int(match.group(1)))
        return json_response(404, {"error": f"no route {path}"})

    # -- routes -----------------------------------------------------------------
    def health(self, _request: Request) -> Response:
        s = self.settings
        info: dict[str, Any] = {
            "status": "ok",
            "environment": s.environment,
            "tier": s.tier,
            "deployment": s.deployment,
            "branch": s.branch,
            "commit": s.commit,
        }
        try:
            with self.db.connect() as conn:
                version = schema.current_version(conn)
        except DatabaseUnavailable as exc:
            info.update(
                status="error",
                database={"engine": s.database.engine, "ok": False, "error": str(exc)},
            )
            return json_response(503, info)
        if version is None or version < schema.LATEST:
            info.update(
                status="error",
                database={
                    "engine": s.database.engine,
                    "ok": False,
                    "schema_version": version,
                    "error": "schema not migrated: run 'python migrate.py'",
                },
            )
            return json_response(503, info)
        info["database"] = {"engine": s.database.engine, "ok": True, "schema_version": version}
        return json_response(200, info)

    def _session(self, request: Request) -> tuple[Session, dict[str, str]]:
        """The request's session, or a new one with the Set-Cookie header that starts it."""
        session = self.sessions.load(request.cookie(COOKIE_NAME))
        if session is not None:
            return session, {}
        session, value = self.sessions.new()
        cookie = f"{COOKIE_NAME}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={SESSION_MAX_AGE}"
        return session, {"Set-Cookie": cookie}

    def dashboard(self, request: Request) -> Response:
        session, headers = self._session(request)
        with self.db.connect() as conn:
            counts = {
                "users": int(conn.scalar("SELECT count(*) FROM users WHERE deleted = FALSE")),
                "deleted_users": int(
                    conn.scalar("SELECT count(*) FROM users WHERE deleted = TRUE")
                ),
                "payment_attempts": int(conn.scalar("SELECT count(*) FROM payment_attempts")),
                "paid_cents": int(
                    conn.scalar(
                        "SELECT COALESCE(sum(amount_cents), 0) FROM payment_attempts"
                        " WHERE status = 'paid'"
                    )
                ),
            }
            users = conn.query("SELECT * FROM users ORDER BY created_at DESC, id DESC LIMIT 10")
            payments = conn.query(
                "SELECT p.*, u.email, u.clerk_id FROM payment_attempts p"
                " JOIN users u ON u.id = p.user_id ORDER BY p.created_at DESC, p.id DESC LIMIT 10"
            )
        notice = {"refunded": "Payment marked refunded."}.get(
            (request.query.get("notice") or [""])[0]
        )
        html = pages.dashboard(
            self.settings, counts, users, payments, self.sessions.csrf_token(session), notice
        )
        headers.update(
            {
                "Cache-Control": "no-store",
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                "form-action 'self'; frame-ancestors 'none'",
            }
        )
        return Response(200, html.encode(), "text/html; charset=utf-8", headers)

    @staticmethod
    def _limit(request: Request) -> int:
        try:
            return max(1, min(500, int((request.query.get("limit") or ["50"])[0])))
        except ValueError:
            return 50

    def api_users(self, request: Request) -> Response:
        include_deleted = (request.query.get("include_deleted") or ["0"])[0] in ("1", "true")
        where = "" if include_deleted else " WHERE deleted = FALSE"
        with self.db.connect() as conn:
            users = conn.query(
                f"SELECT * FROM users{where} ORDER BY created_at DESC, id DESC LIMIT ?",
                (self._limit(request),),
            )
            total = int(conn.scalar(f"SELECT count(*) FROM users{where}"))
        return json_response(
            200, {"environment": self.settings.environment, "count": total, "users": users}
        )

    def api_payments(self, request: Request) -> Response:
        with self.db.connect() as conn:
            rows = conn.query(
                "SELECT p.*, u.clerk_id AS user_clerk_id FROM payment_attempts p"
                " JOIN users u ON u.id = p.user_id ORDER BY p.created_at DESC, p.id DESC LIMIT ?",
                (self._limit(request),),
            )
            total = int(conn.scalar("SELECT count(*) FROM payment_attempts"))
        return json_response(
            200,
            {"environment": self.settings.environment, "count": total, "payment_attempts": rows},
        )

    def clerk_webhook(self, request: Request) -> Response:
        key = self.settings.webhook_key
        if key is None:
            return json_response(503, {"error": "CLERK_WEBHOOK_SECRET is not set"})
        try:
            svix_id = verify(key, request.headers, request.body)
        except SignatureError as exc:
            log.warning("webhook refused: %s", exc)
            return json_response(400, {"error": f"invalid signature: {exc}"})
        try:
            event = json.loads(request.body)
            if not isinstance(event, dict):
                raise clerk.EventError("the body is not a JSON object")
            with self.db.connect() as conn:
                outcome = clerk.apply_event(conn, svix_id, event)
        except (ValueError, clerk.EventError) as exc:
            log.warning("webhook %s not applied: %s", svix_id, exc)
            return json_response(422, {"error": str(exc)})
        log.info("webhook %s %s: %s %s", svix_id, event.get("type"), outcome.result, outcome.detail)
        return json_response(200, {"result": outcome.result, "detail": outcome.detail})

    def refund(self, request: Request, payment_id: int) -> Response:
        session = self.sessions.load(request.cookie(COOKIE_NAME))
        form = parse_qs(request.body.decode("utf-8", "replace"), max_num_fields=20)
        token = (form.get("csrf_token") or [""])[0]
        if not self.sessions.check_csrf(session, token):
            log.warning("refund of payment %s refused: missing or invalid CSRF token", payment_id)
            return Response(
                403,
                b"Forbidden: missing or invalid CSRF token. Reload the page.\n",
                "text/plain; charset=utf-8",
            )
        with self.db.connect() as conn, conn.transaction():
            changed = conn.execute(
                "UPDATE payment_attempts SET status = 'refunded', updated_at = ?"
                " WHERE id = ? AND status = 'paid'",
                (utcnow(), payment_id),
            )
        if not changed:
            return json_response(404, {"error": f"no paid payment attempt {payment_id}"})
        log.info("payment attempt %s marked refunded", payment_id)
        return redirect("/dashboard?notice=refunded", 303)
