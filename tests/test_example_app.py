"""The reference app `examples/saas-app`: real processes, real HTTP, SQLite and PostgreSQL.

Webhooks are signed with the `svix` library (what Clerk uses) to prove the app's own
stdlib verification interoperates.
"""

from __future__ import annotations

import base64
import concurrent.futures
import datetime as dt
import importlib.util
import json
import os
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psycopg
import pytest
from svix.webhooks import Webhook, WebhookVerificationError

from conftest import PG_SERVER, require_pg
from tristage.edges.runtime import free_port

APP_DIR = Path(__file__).resolve().parents[1] / "examples" / "saas-app"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
SESSION_SECRET = secrets.token_urlsafe(32)
CSRF_SECRET = secrets.token_urlsafe(32)
CLERK_SECRET_KEY = "sk_test_" + secrets.token_hex(16)
STRIPE_SECRET_KEY = "sk_test_" + secrets.token_hex(16)
COMMIT = "3f1c2e9ab07d5e64c1d2f3a4b5c6d7e8f9a0b1c2"


def _load_signatures() -> ModuleType:
    """The app's verifier module, loaded from its file (the app dir stays off sys.path)."""
    spec = importlib.util.spec_from_file_location(
        "saas_app_signatures", APP_DIR / "saasapp" / "signatures.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


signatures = _load_signatures()


# -- processes ------------------------------------------------------------------------


def app_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONUNBUFFERED": "1",
        "PORT": "0",
        "TRISTAGE_ENV": "preview",
        "TRISTAGE_DEPLOYMENT": "dpl_7k2m9q",
        "TRISTAGE_GIT_BRANCH": "test",
        "TRISTAGE_GIT_COMMIT": COMMIT,
        "DATABASE_URL": database_url,
        "CLERK_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "SESSION_SECRET": SESSION_SECRET,
        "CSRF_SECRET": CSRF_SECRET,
        "CLERK_PUBLISHABLE_KEY": "pk_test_Y2xlcmsuZXhhbXBsZS5jb20k",
        "CLERK_SECRET_KEY": CLERK_SECRET_KEY,
        "STRIPE_SECRET_KEY": STRIPE_SECRET_KEY,
    }
    env.update(extra)
    return env


def run_script(name: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, name, *args],
        cwd=APP_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@dataclass
class AppProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    base: str = ""
    client: httpx.Client = field(init=False)

    def start(self, timeout: float = 15) -> AppProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"listening on (http://[\d.]+:\d+)", self.log.read_text())
            if match:
                self.base = match.group(1)
                self.client = httpx.Client(base_url=self.base, timeout=10)
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"the app exited early:\n{self.log.read_text()}")
            time.sleep(0.02)
        raise AssertionError(f"the app did not start:\n{self.log.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def launch(env: dict[str, str], log: Path, *python_flags: str) -> AppProcess:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, *python_flags, "app.py"],
            cwd=APP_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return AppProcess(proc, log)


# -- databases ------------------------------------------------------------------------


@dataclass
class Store:
    engine: str
    url: str

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.engine == "sqlite":
            with sqlite3.connect(self.url.removeprefix("sqlite:///")) as conn:
                return conn.execute(sql, params).fetchall()
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(sql.replace("?", "%s"), params).fetchall()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "app.sqlite3"
        yield Store("sqlite", f"sqlite:///{path}")
        return
    require_pg()
    name = f"saas_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield Store("postgres", f"{PG_SERVER}/{name}")
    finally:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def app(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    env = app_env(store.url)
    # two migrations at once, then a third: all succeed, the schema is applied once
    procs = [
        subprocess.Popen(
            [sys.executable, "migrate.py"], cwd=APP_DIR, env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sum("applied 0001" in o for o in outputs) == 1, outputs
    again = run_script("migrate.py", env)
    assert again.returncode == 0 and "up to date at version 1" in again.stdout
    seeded = run_script("seed.py", env, "--count", "5")
    assert seeded.returncode == 0, seeded.stderr
    assert "added 5 users" in seeded.stdout
    reseeded = run_script("seed.py", env, "--count", "5")
    assert "added 0 users and 0 payment attempts" in reseeded.stdout
    running = launch(env, tmp_path_factory.mktemp("logs") / "app.log").start()
    yield running
    running.client.close()
    assert running.stop() == 0, running.log.read_text()


# -- webhooks -------------------------------------------------------------------------


def ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


def user_event(kind: str, clerk_id: str, email: str, updated: dt.datetime) -> dict[str, Any]:
    return {
        "type": kind,
        "object": "event",
        "timestamp": ms(updated),
        "data": {
            "id": clerk_id,
            "object": "user",
            "first_name": "Grace",
            "last_name": "Hopper",
            "email_addresses": [
                {"id": "idn_other", "email_address": "secondary@example.org"},
                {"id": "idn_primary", "email_address": email},
            ],
            "primary_email_address_id": "idn_primary",
            "phone_numbers": [{"id": "idn_phone", "phone_number": "+1 202-555-0142"}],
            "primary_phone_number_id": "idn_phone",
            "created_at": ms(updated - dt.timedelta(days=1)),
            "updated_at": ms(updated),
        },
    }


def payment_event(
    payment_id: str, clerk_id: str, status: str, amount: int, updated: dt.datetime
) -> dict[str, Any]:
    return {
        "type": "paymentAttempt.updated",
        "object": "event",
        "timestamp": ms(updated),
        "data": {
            "id": payment_id,
            "object": "commerce_payment_attempt",
            "status": status,
            "charge_type": "checkout",
            "payer": {"user_id": clerk_id, "email": "payer@example.com"},
            "payment_source": {"card_type": "visa", "last4": "4242"},
            "totals": {"grand_total": {"amount": amount, "currency": "usd"}},
            "created_at": ms(updated - dt.timedelta(minutes=5)),
            "updated_at": ms(updated),
        },
    }


def signed_headers(
    body: str,
    msg_id: str | None = None,
    secret: str = WEBHOOK_SECRET,
    at: dt.datetime | None = None,
) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    at = at or dt.datetime.now(dt.UTC)
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": Webhook(secret).sign(msg_id, at, body),
        "content-type": "application/json",
    }


def deliver(app: AppProcess, event: dict[str, Any], msg_id: str | None = None) -> httpx.Response:
    body = json.dumps(event)
    return app.client.post(
        "/clerk-users-webhook", content=body.encode(), headers=signed_headers(body, msg_id)
    )


def find_user(app: AppProcess, clerk_id: str) -> dict[str, Any] | None:
    users = app.client.get("/api/users", params={"include_deleted": "1", "limit": 500}).json()
    return next((u for u in users["users"] if u["clerk_id"] == clerk_id), None)


def find_payment(app: AppProcess, payment_id: str) -> dict[str, Any] | None:
    rows = app.client.get("/api/payment-attempts", params={"limit": 500}).json()
    return next((p for p in rows["payment_attempts"] if p["clerk_payment_id"] == payment_id), None)


# -- tests: serving -------------------------------------------------------------------


def test_health_dashboard_and_api(app: AppProcess, store: Store) -> None:
    health = app.client.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["environment"] == "preview"
    assert body["database"] == {"engine": store.engine, "ok": True, "schema_version": 1}
    assert body["deployment"] == "dpl_7k2m9q" and body["commit"] == COMMIT

    root = app.client.get("/")
    assert root.status_code == 302 and root.headers["location"] == "/dashboard"

    page = app.client.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert '<h1 id="environment">preview</h1>' in html
    assert 'data-tier="preview"' in html and "#b45309" in html  # amber: preview
    assert '<span id="deployment">dpl_7k2m9q</span>' in html
    assert '<span id="branch">test</span>' in html
    assert f'<span id="commit">{COMMIT[:12]}</span>' in html
    assert re.search(r'id="count-users">\d+<', html)
    assert "saas_session=" in page.headers["set-cookie"]
    assert "HttpOnly" in page.headers["set-cookie"]

    users = app.client.get("/api/users").json()
    assert users["environment"] == "preview" and users["count"] >= 5
    for user in users["users"]:
        assert user["clerk_id"].startswith("user_")
        assert re.search(r"@(example\.(com|org|net)|mail\.example)$", user["email"])
    assert app.client.get("/nowhere").status_code == 404
    assert app.client.post("/dashboard").status_code == 405


def test_standard_library_only_and_colour_follows_the_environment(tmp_path: Path) -> None:
    env = app_env(f"sqlite:///{tmp_path / 'app.sqlite3'}", TRISTAGE_ENV="production")
    assert run_script("migrate.py", env).returncode == 0
    # python -S: no site-packages at all, as in a deploy without requirements
    running = launch(env, tmp_path / "p.log", "-S").start()
    try:
        html = running.client.get("/dashboard").text
        assert '<h1 id="environment">production</h1>' in html and "#b91c1c" in html  # red
        assert 'data-tier="production"' in html
    finally:
        running.client.close()
        assert running.stop() == 0


# -- tests: webhooks ------------------------------------------------------------------


def test_webhook_lifecycle_with_svix_signatures(app: AppProcess) -> None:
    clerk_id = f"user_{uuid.uuid4().hex[:24]}"
    t0 = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)

    created = user_event("user.created", clerk_id, "grace@example.com", t0)
    created_id = f"msg_{uuid.uuid4().hex}"
    r = deliver(app, created, created_id)
    assert r.status_code == 200 and r.json()["result"] == "applied"
    user = find_user(app, clerk_id)
    assert user is not None
    assert user["email"] == "grace@example.com"  # the primary address, not the first listed
    assert user["phone"] == "+1 202-555-0142" and user["deleted"] is False

    r = deliver(
        app,
        user_event("user.updated", clerk_id, "g.hopper@example.com", t0 + dt.timedelta(minutes=1)),
    )
    assert r.json()["result"] == "applied"
    assert find_user(app, clerk_id)["email"] == "g.hopper@example.com"  # type: ignore[index]

    # an older update delivered late changes nothing
    r = deliver(
        app, user_event("user.updated", clerk_id, "old@example.com", t0 + dt.timedelta(seconds=30))
    )
    assert r.status_code == 200 and r.json()["result"] == "stale"
    assert find_user(app, clerk_id)["email"] == "g.hopper@example.com"  # type: ignore[index]

    payment_id = f"pay_{uuid.uuid4().hex[:20]}"
    r = deliver(
        app, payment_event(payment_id, clerk_id, "pending", 1900, t0 + dt.timedelta(minutes=2))
    )
    assert r.json()["result"] == "applied"
    r = deliver(
        app, payment_event(payment_id, clerk_id, "paid", 1900, t0 + dt.timedelta(minutes=3))
    )
    assert r.json()["result"] == "applied"
    payment = find_payment(app, payment_id)
    assert payment is not None
    assert payment["status"] == "paid" and payment["amount_cents"] == 1900
    assert payment["currency"] == "USD" and payment["card_last4"] == "4242"
    assert payment["user_clerk_id"] == clerk_id

    deleted = {
        "type": "user.deleted",
        "timestamp": ms(t0 + dt.timedelta(minutes=4)),
        "data": {"id": clerk_id, "object": "user", "deleted": True},
    }
    r = deliver(app, deleted)
    assert r.json()["result"] == "applied"
    assert find_user(app, clerk_id)["deleted"] is True  # type: ignore[index]
    listed = app.client.get("/api/users", params={"limit": 500}).json()["users"]
    assert clerk_id not in {u["clerk_id"] for u in listed}
    assert find_payment(app, payment_id) is not None  # soft delete keeps references

    # redelivery of user.created (same svix-id, fresh signature): acknowledged, no change
    r = deliver(app, created, created_id)
    assert r.status_code == 200 and r.json()["result"] == "duplicate"
    user = find_user(app, clerk_id)
    assert user is not None and user["deleted"] is True and user["email"] == "g.hopper@example.com"


def test_payment_before_user_creates_the_user(app: AppProcess) -> None:
    clerk_id = f"user_{uuid.uuid4().hex[:24]}"
    payment_id = f"pay_{uuid.uuid4().hex[:20]}"
    t0 = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    r = deliver(app, payment_event(payment_id, clerk_id, "failed", 4900, t0))
    assert r.json()["result"] == "applied"
    assert find_user(app, clerk_id)["email"] == "payer@example.com"  # type: ignore[index]
    r = deliver(app, user_event("user.created", clerk_id, "real@example.com", t0))
    assert r.json()["result"] == "applied"
    assert find_user(app, clerk_id)["email"] == "real@example.com"  # type: ignore[index]
    org = payment_event(f"pay_{uuid.uuid4().hex[:20]}", clerk_id, "paid", 100, t0)
    del org["data"]["payer"]["user_id"]
    assert deliver(app, org).json()["result"] == "ignored"


def test_concurrent_redeliveries_apply_once(app: AppProcess, store: Store) -> None:
    clerk_id = f"user_{uuid.uuid4().hex[:24]}"
    event = user_event("user.created", clerk_id, "once@example.com", dt.datetime.now(dt.UTC))
    msg_id = f"msg_{uuid.uuid4().hex}"
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: deliver(app, event, msg_id), range(6)))
    assert [r.status_code for r in results] == [200] * 6
    assert sorted(r.json()["result"] for r in results) == ["applied"] + ["duplicate"] * 5
    assert store.query("SELECT count(*) FROM webhook_events WHERE svix_id = ?", (msg_id,)) == [(1,)]


def test_forged_or_stale_webhooks_are_refused_and_change_nothing(
    app: AppProcess, store: Store
) -> None:
    clerk_id = f"user_{uuid.uuid4().hex[:24]}"
    body = json.dumps(
        user_event("user.created", clerk_id, "mallory@example.com", dt.datetime.now(dt.UTC))
    )
    before = store.query("SELECT count(*) FROM users")
    other_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    ten_minutes_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    tampered = json.loads(body)
    tampered["data"]["email_addresses"][1]["email_address"] = "evil@example.com"
    cases: dict[str, tuple[bytes, dict[str, str]]] = {
        "wrong secret": (body.encode(), signed_headers(body, secret=other_secret)),
        "tampered body": (json.dumps(tampered).encode(), signed_headers(body)),
        "stale timestamp": (body.encode(), signed_headers(body, at=ten_minutes_ago)),
        "no headers": (body.encode(), {"content-type": "application/json"}),
    }
    headers = signed_headers(body)
    headers["svix-signature"] = "v1," + base64.b64encode(secrets.token_bytes(32)).decode()
    cases["random signature"] = (body.encode(), headers)
    headers = signed_headers(body)
    headers["svix-signature"] = headers["svix-signature"].replace("v1,", "v1a,")
    cases["unknown scheme only"] = (body.encode(), headers)
    for name, (content, hdrs) in cases.items():
        r = app.client.post("/clerk-users-webhook", content=content, headers=hdrs)
        assert r.status_code == 400, name
        assert "invalid signature" in r.json()["error"], name
    assert store.query("SELECT count(*) FROM users") == before
    assert find_user(app, clerk_id) is None

    # several signatures (a secret rotation): one valid v1 entry is enough
    headers = signed_headers(body)
    bogus = "v1," + base64.b64encode(secrets.token_bytes(32)).decode()
    headers["svix-signature"] = f"v1a,xyz {bogus} {headers['svix-signature']}"
    r = app.client.post("/clerk-users-webhook", content=body.encode(), headers=headers)
    assert r.status_code == 200 and find_user(app, clerk_id) is not None

    # signed but not an event: 422, and the delivery may be retried after a fix
    junk = '["not", "an", "event"]'
    hdrs = signed_headers(junk)
    r = app.client.post("/clerk-users-webhook", content=junk.encode(), headers=hdrs)
    assert r.status_code == 422
    assert store.query(
        "SELECT count(*) FROM webhook_events WHERE svix_id = ?", (hdrs["svix-id"],)
    ) == [(0,)]


# -- tests: the CSRF-protected form ----------------------------------------------------


def _form(html: str, payment: dict[str, Any]) -> tuple[str, str]:
    match = re.search(
        rf'<form method="post" action="(/payments/{payment["id"]}/refund)">'
        r'<input type="hidden" name="csrf_token" value="([^"]+)">',
        html,
    )
    assert match, "no refund form for the payment"
    return match.group(1), match.group(2)


def test_refund_form_requires_a_valid_csrf_token(app: AppProcess) -> None:
    clerk_id = f"user_{uuid.uuid4().hex[:24]}"
    payment_id = f"pay_{uuid.uuid4().hex[:20]}"
    now = dt.datetime.now(dt.UTC)
    assert deliver(app, payment_event(payment_id, clerk_id, "paid", 2500, now)).status_code == 200
    payment = find_payment(app, payment_id)
    assert payment is not None

    alice = httpx.Client(base_url=app.base, timeout=10)
    bob = httpx.Client(base_url=app.base, timeout=10)
    try:
        action, token = _form(alice.get("/dashboard").text, payment)
        _, bob_token = _form(bob.get("/dashboard").text, payment)
        assert token != bob_token

        refused = {
            "no token": (alice, {}),
            "forged token": (alice, {"csrf_token": "A" * len(token)}),
            "another session's token": (alice, {"csrf_token": bob_token}),
            "token without its cookie": (httpx.Client(base_url=app.base), {"csrf_token": token}),
        }
        for name, (client, form) in refused.items():
            r = client.post(action, data=form)
            assert r.status_code == 403, name
        assert find_payment(app, payment_id)["status"] == "paid"  # type: ignore[index]

        # a forged session cookie is no session
        forged = httpx.Client(base_url=app.base, cookies={"saas_session": "eyJzaWQiOiJ4In0.AAAA"})
        assert forged.post(action, data={"csrf_token": token}).status_code == 403

        r = alice.post(action, data={"csrf_token": token})
        assert r.status_code == 303 and r.headers["location"] == "/dashboard?notice=refunded"
        assert find_payment(app, payment_id)["status"] == "refunded"  # type: ignore[index]
        assert "Payment marked refunded." in alice.get(r.headers["location"]).text
        assert alice.post(action, data={"csrf_token": token}).status_code == 404
    finally:
        alice.close()
        bob.close()


def test_logs_hold_no_secret(app: AppProcess) -> None:
    # requests of its own (the app is shared by the module, in whatever order its tests run)
    assert app.client.get("/health").status_code == 200
    deliver(
        app,
        user_event(
            "user.created",
            f"user_{uuid.uuid4().hex[:24]}",
            "l@example.com",
            dt.datetime.now(dt.UTC),
        ),
    )
    log = app.log.read_text()
    assert "GET /health 200" in log and "POST /clerk-users-webhook 200" in log
    for value in (
        WEBHOOK_SECRET,
        WEBHOOK_SECRET.removeprefix("whsec_"),
        SESSION_SECRET,
        CSRF_SECRET,
        CLERK_SECRET_KEY,
        STRIPE_SECRET_KEY,
    ):
        assert value not in log


# -- tests: lifecycle -------------------------------------------------------------------


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    env = app_env(f"sqlite:///{tmp_path / 'app.sqlite3'}")
    assert run_script("migrate.py", env).returncode == 0
    return env


def test_sigterm_finishes_requests_in_flight(tmp_path: Path, sqlite_env: dict[str, str]) -> None:
    port = free_port()
    running = launch({**sqlite_env, "PORT": str(port)}, tmp_path / "app.log").start()
    assert running.base == f"http://127.0.0.1:{port}"
    # an idle keep-alive connection must not hold the stop back
    idle = httpx.Client(base_url=running.base)
    assert idle.get("/health").status_code == 200

    clerk_id = f"user_{uuid.uuid4().hex[:24]}"
    body = json.dumps(
        user_event("user.created", clerk_id, "late@example.com", dt.datetime.now(dt.UTC))
    )
    head = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(body).items())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(
            f"POST /clerk-users-webhook HTTP/1.1\r\nHost: x\r\n{head}"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        time.sleep(0.2)  # the request is being read
        running.proc.send_signal(signal.SIGTERM)
        time.sleep(0.7)
        assert running.proc.poll() is None, "stopped with a request in flight"
        conn.sendall(body.encode())
        response = b""
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            response += chunk
    assert response.startswith(b"HTTP/1.1 200"), response
    assert b"Connection: close" in response
    assert running.proc.wait(timeout=5) == 0
    idle.close()
    with sqlite3.connect(sqlite_env["DATABASE_URL"].removeprefix("sqlite:///")) as db:
        assert db.execute("SELECT email FROM users WHERE clerk_id = ?", (clerk_id,)).fetchall() == [
            ("late@example.com",)
        ]
    assert "received SIGTERM" in running.log.read_text()


def test_unmigrated_database_fails_the_health_check(tmp_path: Path) -> None:
    env = app_env(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    running = launch(env, tmp_path / "app.log").start()
    try:
        r = running.client.get("/health")
        assert r.status_code == 503
        assert "run 'python migrate.py'" in r.json()["database"]["error"]
        assert run_script("seed.py", env).returncode == 1
        assert run_script("migrate.py", env).returncode == 0
        assert running.client.get("/health").status_code == 200
    finally:
        running.client.close()
        assert running.stop() == 0


def test_postgres_without_psycopg_says_how_to_fix_it(tmp_path: Path) -> None:
    env = app_env(f"{PG_SERVER}/postgres")
    running = launch(env, tmp_path / "app.log", "-S").start()
    try:
        r = running.client.get("/health")
        assert r.status_code == 503
        error = r.json()["database"]["error"]
        assert "'psycopg' package is not installed" in error and "requirements.txt" in error
    finally:
        running.client.close()
        assert running.stop() == 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"SESSION_SECRET": ""}, "SESSION_SECRET is not set"),
        ({"CSRF_SECRET": "short"}, "CSRF_SECRET is shorter than 16 characters"),
        ({"CLERK_WEBHOOK_SECRET": "sk_test_notawebhooksecret"}, "starts with 'whsec_'"),
        ({"CLERK_WEBHOOK_SECRET": "whsec_***notbase64***"}, "is not base64"),
        ({"DATABASE_URL": "mysql://db/app"}, "scheme 'mysql' is not supported"),
        ({"DATABASE_URL": ""}, "DATABASE_URL is not set"),
        ({"PORT": "http"}, "PORT='http' is not a TCP port"),
    ],
)
def test_bad_configuration_is_refused_with_a_clear_message(
    override: dict[str, str], message: str
) -> None:
    env = app_env("sqlite:////nonexistent/never-created.sqlite3", **override)
    proc = subprocess.run(
        [sys.executable, "app.py"], cwd=APP_DIR, env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert message in proc.stdout
    assert "cannot start" in proc.stdout
    for value in override.values():
        if len(value) > 8:
            assert value not in proc.stdout  # the rejected secret is not echoed


def test_scripts_report_bad_database_urls() -> None:
    env = app_env("postgresql://postgres@127.0.0.1:1/nodb")
    proc = run_script("migrate.py", env)
    assert proc.returncode == 1 and "cannot connect to postgres 127.0.0.1:1/nodb" in proc.stderr
    proc = run_script("migrate.py", app_env("ftp://x"))
    assert proc.returncode == 2 and "is not supported" in proc.stderr


def test_a_database_password_is_never_printed() -> None:
    env = app_env("postgresql://app:hunter2secret@127.0.0.1:1/nodb")
    proc = run_script("migrate.py", env)
    assert proc.returncode == 1 and "hunter2secret" not in proc.stderr + proc.stdout


# -- the verifier against the svix library ---------------------------------------------


def test_verifier_interoperates_with_svix_both_ways() -> None:
    key = signatures.decode_secret(WEBHOOK_SECRET)
    body = b'{"type":"user.created","data":{"id":"user_1"}}'
    now = dt.datetime.now(dt.UTC)
    headers = signed_headers(body.decode(), "msg_1", at=now)
    assert signatures.verify(key, headers, body) == "msg_1"
    # the app's own signature is accepted by the svix library
    stamp = int(now.timestamp())
    ours = signatures.sign(key, "msg_2", stamp, body)
    Webhook(WEBHOOK_SECRET).verify(
        body, {"svix-id": "msg_2", "svix-timestamp": str(stamp), "svix-signature": ours}
    )
    with pytest.raises(WebhookVerificationError):
        Webhook(WEBHOOK_SECRET).verify(
            body, {"svix-id": "msg_3", "svix-timestamp": str(stamp), "svix-signature": ours}
        )
    # Standard Webhooks header names are accepted too
    std = {"webhook-" + k.removeprefix("svix-"): v for k, v in headers.items()}
    assert signatures.verify(key, std, body) == "msg_1"


def test_verifier_tolerance_is_five_minutes_both_ways() -> None:
    key = signatures.decode_secret(WEBHOOK_SECRET)
    body = b"{}"
    stamp = 1_800_000_000

    def hdrs() -> dict[str, str]:
        return {
            "svix-id": "m",
            "svix-timestamp": str(stamp),
            "svix-signature": signatures.sign(key, "m", stamp, body),
        }

    for offset in (-299, 0, 299):
        assert signatures.verify(key, hdrs(), body, now=stamp + offset) == "m"
    for offset, reason in ((-301, "future"), (301, "too old")):
        with pytest.raises(signatures.SignatureError, match=reason):
            signatures.verify(key, hdrs(), body, now=stamp + offset)
    bad = {**hdrs(), "svix-timestamp": "soon"}
    with pytest.raises(signatures.SignatureError, match="not an integer"):
        signatures.verify(key, bad, body, now=stamp)
    with pytest.raises(ValueError, match="shorter than 16 bytes"):
        signatures.decode_secret("whsec_" + base64.b64encode(b"short").decode())
