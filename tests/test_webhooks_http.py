"""The webhook gateway over real HTTP: the real router in front of the ingest app, a real
app on its own port receiving forwards, a real SQLite state store, real signatures."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

import acme_provider
from tristage.api import Tristage
from tristage.domain import webhooks as dom
from tristage.edges import webhook_verify as wv
from tristage.edges.router import Route, Router, RouteTable
from tristage.errors import TristageError
from tristage.http.internal import build_internal_app

pytestmark = pytest.mark.timeout(60)

CONFIG = """
[project]
name = "shop"

[environments.development]
tier = "development"
branches = ["dev", "feature/*"]

[environments.development.webhooks.clerk]
kind = "clerk"
secret_var = "CLERK_WEBHOOK_SECRET"
path = "/clerk-users-webhook"
retry_schedule = [0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 4]

[environments.development.webhooks.stripe]
kind = "stripe"
secret_var = "STRIPE_WEBHOOK_SECRET"
path = "/stripe-webhook"
retry_schedule = [0.05, 0.1, 0.2]

[environments.development.webhooks.events]
kind = "standard"
secret_var = "EVENTS_WEBHOOK_SECRET"
path = "/events"
max_body_bytes = 8192
retry_schedule = [0.05, 0.05]

[environments.development.webhooks.acme]
kind = "acme"
secret_var = "ACME_WEBHOOK_SECRET"
path = "/acme"
retry_schedule = [0.05, 0.1]

[environments.development.webhooks.unset]
kind = "standard"
secret_var = "NEVER_SET_SECRET"
path = "/unset"

[environments.production]
tier = "production"
branches = ["main"]

[environments.production.webhooks.clerk]
kind = "clerk"
secret_var = "CLERK_WEBHOOK_SECRET"
path = "/clerk-users-webhook"
"""

HOST = "development.shop.localhost"
KINDS = {"clerk": "clerk", "stripe": "stripe", "events": "standard"}


def svix_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass
class Project:
    api: Tristage
    root: Path
    secrets: dict[str, str]  # source -> secret


def make_project(api: Tristage, root: Path) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    (root / "tristage.toml").write_text(CONFIG, encoding="utf-8")
    api.open_project(root)
    values = {
        "clerk": svix_secret(),
        "stripe": "whsec_" + secrets.token_hex(16),
        "events": svix_secret(),
    }
    names = {
        "clerk": "CLERK_WEBHOOK_SECRET",
        "stripe": "STRIPE_WEBHOOK_SECRET",
        "events": "EVENTS_WEBHOOK_SECRET",
    }
    for source, value in values.items():
        api.variables.set("shop", names[source], value, environments=["development"], secret=True)
    return Project(api, root, values)


@pytest.fixture
def project(api: Tristage, tmp_path: Path) -> Project:
    return make_project(api, tmp_path / "shop")


def signed(
    project: Project,
    source: str,
    event_type: str = "user.created",
    *,
    timestamp: int | None = None,
    message_id: str | None = None,
) -> tuple[dict[str, str], bytes, str]:
    """A provider-style signed request: (headers, body, message id)."""
    import random

    kind = KINDS[source]
    msg_id, event = dom.sample_event(kind, event_type, time.time(), random.Random())  # type: ignore[arg-type]
    if message_id is not None:
        msg_id = message_id
        if kind == "stripe":
            event["id"] = message_id
    body = json.dumps(event).encode()
    ts = int(time.time()) if timestamp is None else timestamp
    headers = wv.sign(kind, project.secrets[source], msg_id, ts, body)  # type: ignore[arg-type]
    headers["content-type"] = "application/json"
    return headers, body, msg_id


# ---------------------------------------------------------------------------
# A real app on its own port that verifies what it receives, as a real app would


@dataclass
class AppRecorder:
    secrets: dict[str, tuple[str, str]]  # path -> (kind, secret)
    status: int = 200
    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    refused: int = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        status = self.status
        kind_secret = self.secrets.get(scope["path"])
        if kind_secret is not None:
            try:
                wv.verify(kind_secret[0], [kind_secret[1]], headers, body)  # type: ignore[arg-type]
            except wv.VerificationError:
                status = 400
                self.refused += 1
        if status == 200:
            self.received.append((scope["path"], headers, body))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok" if status == 200 else b"no"})

    def ids(self) -> list[str]:
        return [h.get("x-tristage-delivery", "") for _, h, _ in self.received]


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class AppServer:
    """A uvicorn server on a socket bound up front: while stopped, the port refuses."""

    def __init__(self, app: AppRecorder) -> None:
        self.app = app
        self.sock = bound_socket()
        self.port: int = self.sock.getsockname()[1]
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.sock.listen(128)
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            await self.task
        self.sock.close()


@dataclass
class Gateway:
    project: Project
    router_port: int
    app: AppRecorder
    app_server: AppServer
    client: httpx.AsyncClient
    live: dict[tuple[str, str], str | None]

    async def post(
        self, source: str, headers: dict[str, str], body: bytes, host: str = HOST
    ) -> httpx.Response:
        return await self.client.post(
            f"http://127.0.0.1:{self.router_port}/.tristage/webhooks/{source}",
            content=body,
            headers={**headers, "host": host},
        )

    def rows(self, sql: str = "SELECT * FROM webhook_deliveries") -> list[dict[str, Any]]:
        return self.project.api.store.query(sql)


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def gateway(
    project: Project, *, app_up: bool = True, live: bool = True
) -> AsyncIterator[Gateway]:
    recorder = AppRecorder(
        {
            "/clerk-users-webhook": ("clerk", project.secrets["clerk"]),
            "/stripe-webhook": ("stripe", project.secrets["stripe"]),
            "/events": ("standard", project.secrets["events"]),
        }
    )
    app_server = AppServer(recorder)
    if app_up:
        await app_server.start()
    routes = {
        HOST: Route("shop", "development", None, None),
        "shop.localhost": Route("shop", "production", None, None),
    }
    router = Router(RouteTable(routes), internal_app=build_internal_app(project.api))
    port = await router.start(host="127.0.0.1", port=0)
    table: dict[tuple[str, str], str | None] = {
        ("shop", "development"): app_server.url if live else None
    }

    def upstream(p: str, e: str) -> str | None:
        return table.get((p, e))

    stop = asyncio.Event()
    forwarder = asyncio.create_task(
        project.api.webhooks.run_forwarder(stop, upstream, poll_interval=0.1, timeout=2.0)
    )
    async with httpx.AsyncClient(timeout=10) as client:
        try:
            yield Gateway(project, port, recorder, app_server, client, table)
        finally:
            stop.set()
            await asyncio.wait_for(forwarder, 10)
            await router.stop()
            await app_server.stop()


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())  # type: ignore[arg-type]


# ---------------------------------------------------------------------------


def test_signed_clerk_stripe_and_standard_deliveries_reach_the_app(project: Project) -> None:
    async def main() -> None:
        async with gateway(project) as gw:
            sent = {}
            for source, event in (
                ("clerk", "user.created"),
                ("stripe", "payment_intent.succeeded"),
                ("events", "invoice.paid"),
            ):
                headers, body, _msg_id = signed(project, source, event)
                resp = await gw.post(source, headers, body)
                assert resp.status_code == 200, resp.text
                answer = resp.json()
                assert answer["ok"] is True and answer["duplicate"] is False
                sent[answer["delivery"]] = (source, body, headers)
            await wait_for(lambda: len(gw.app.received) == 3, what="3 forwards")
            for path, headers, body in gw.app.received:
                delivery = headers["x-tristage-delivery"]
                source, original, original_headers = sent[delivery]
                assert body == original  # byte for byte
                for name, value in original_headers.items():
                    assert headers[name] == value
                assert (
                    path == project.api.config_for("shop").env("development").webhooks[source].path
                )
            assert gw.app.refused == 0
            await wait_for(
                lambda: all(r["status"] == "delivered" for r in gw.rows()), what="recorded"
            )
            detail = project.api.webhooks.show(next(iter(sent)))
            assert detail.delivery.status == "delivered" and detail.delivery.attempts == 1
            assert detail.attempts[0].status_code == 200
            assert detail.attempts[0].duration_ms > 0
            assert detail.attempts[0].url.startswith(gw.app_server.url)

    run(main)


def test_forged_expired_tampered_missing_and_oversized_never_reach_the_app(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with gateway(project) as gw:
            cases = []
            headers, body, _ = signed(project, "clerk")
            forged = dict(headers)
            forged.update(
                wv.sign("clerk", svix_secret(), headers["svix-id"], int(time.time()), body)
            )
            cases.append(("forged", "clerk", forged, body, 401))
            old_h, old_b, _ = signed(project, "clerk", timestamp=int(time.time()) - 3600)
            cases.append(("expired", "clerk", old_h, old_b, 401))
            cases.append(("tampered", "clerk", headers, body.replace(b"event", b"evil!"), 401))
            missing = {k: v for k, v in headers.items() if k != "svix-signature"}
            cases.append(("missing", "clerk", missing, body, 400))
            s_h, s_b, _ = signed(project, "stripe", "invoice.paid")
            cases.append(("stripe tampered", "stripe", s_h, s_b + b" ", 401))
            s_old, s_ob, _ = signed(project, "stripe", timestamp=int(time.time()) - 600)
            cases.append(("stripe expired", "stripe", s_old, s_ob, 401))
            big = b'{"type":"x","data":"' + b"a" * 9000 + b'"}'
            big_h = wv.sign("standard", project.secrets["events"], "msg_big", int(time.time()), big)
            cases.append(("oversized", "events", big_h, big, 413))
            for name, source, h, b, status in cases:
                resp = await gw.post(source, h, b)
                assert resp.status_code == status, (name, resp.text)
                assert resp.json()["ok"] is False

            # other ways in are refused too
            resp = await gw.client.get(
                f"http://127.0.0.1:{gw.router_port}/.tristage/webhooks/clerk",
                headers={"host": HOST},
            )
            assert resp.status_code == 405
            resp = await gw.post("nope", headers, body)
            assert resp.status_code == 404 and resp.json()["error"] == "unknown_source"
            # an unauthenticated answer names no source, project, environment or variable
            for detail in ("clerk", "stripe", "events", "unset", "shop", "development", "_VAR"):
                assert detail not in resp.text.replace("unknown_source", ""), detail

            # a valid one afterwards arrives, alone
            ok_h, ok_b, _ = signed(project, "clerk")
            assert (await gw.post("clerk", ok_h, ok_b)).status_code == 200
            await wait_for(lambda: len(gw.app.received) == 1, what="the valid delivery")
            await asyncio.sleep(0.3)
            assert len(gw.app.received) == 1 and gw.app.received[0][2] == ok_b
            assert len(gw.rows()) == 1
            await wait_for(
                lambda: (
                    sum(r["count"] for r in gw.rows("SELECT count FROM webhook_rejections"))
                    == len(cases)
                ),
                what="rejections counted",
            )
            counts = project.api.webhooks.rejections("shop")
            assert counts[("development", "clerk")] == {
                "bad_signature": 2,
                "expired": 1,
                "missing_header": 1,
            }
            assert counts[("development", "events")] == {"too_large": 1}

    with caplog.at_level("WARNING", logger="tristage.webhooks"):
        run(main)
    logged = caplog.text
    assert "reason=bad_signature" in logged and "reason=too_large" in logged
    assert "user.created" not in logged and "email_address" not in logged  # never the body
    assert "no webhook source 'nope'" in logged and "declared sources: clerk" in logged


def test_the_same_message_id_twice_reaches_the_app_once(project: Project) -> None:
    async def main() -> None:
        async with gateway(project) as gw:
            headers, body, _ = signed(project, "clerk", message_id="msg_dup_1")
            first = await gw.post("clerk", headers, body)
            second = await gw.post("clerk", headers, body)
            assert first.json()["duplicate"] is False
            assert second.status_code == 200 and second.json()["duplicate"] is True
            assert first.json()["delivery"] == second.json()["delivery"]
            s_h, s_b, _ = signed(project, "stripe", message_id="evt_dup_1")
            for _ in range(3):
                assert (await gw.post("stripe", s_h, s_b)).status_code == 200
            sentinel_h, sentinel_b, _ = signed(project, "events", "sentinel")
            await gw.post("events", sentinel_h, sentinel_b)
            await wait_for(lambda: len(gw.app.received) == 3, what="3 forwards")
            await asyncio.sleep(0.3)
            assert sorted(p for p, _, _ in gw.app.received) == [
                "/clerk-users-webhook",
                "/events",
                "/stripe-webhook",
            ]
            dups = {r["message_id"]: r["duplicates"] for r in gw.rows()}
            assert dups["msg_dup_1"] == 1 and dups["evt_dup_1"] == 2

    run(main)


def test_with_the_app_stopped_100_deliveries_are_retried_and_all_arrive(
    project: Project,
) -> None:
    async def main() -> None:
        async with gateway(project, app_up=False) as gw:

            async def one(i: int) -> str:
                h, b, _ = signed(project, "clerk", "user.updated", message_id=f"msg_down_{i}")
                resp = await gw.post("clerk", h, b)
                assert resp.status_code == 200
                return str(resp.json()["delivery"])

            ids = await asyncio.gather(*(one(i) for i in range(100)))
            await wait_for(
                lambda: (
                    len(
                        gw.rows(
                            "SELECT id FROM webhook_deliveries"
                            " WHERE status='failed' AND attempts >= 2"
                        )
                    )
                    == 100
                ),
                what="every delivery retried at least once",
            )
            assert not gw.rows("SELECT id FROM webhook_deliveries WHERE status='dead'")
            await gw.app_server.start()
            await wait_for(
                lambda: (
                    len(gw.app.received) >= 100
                    and len(gw.rows("SELECT id FROM webhook_deliveries WHERE status='delivered'"))
                    == 100
                ),
                timeout=20,
                what="all 100 delivered",
            )
            assert sorted(gw.app.ids()) == sorted(ids)  # each exactly once
            attempts = project.api.webhooks.show(ids[0]).attempts
            assert attempts[0].status_code is None and "Refused" in (attempts[0].error or "")
            assert attempts[-1].status_code == 200

    run(main)


def test_without_a_live_release_no_attempt_is_spent(project: Project) -> None:
    async def main() -> None:
        async with gateway(project, live=False) as gw:
            h, b, _ = signed(project, "stripe", "invoice.paid")
            delivery = (await gw.post("stripe", h, b)).json()["delivery"]
            await asyncio.sleep(0.5)
            row = gw.rows(f"SELECT status, attempts FROM webhook_deliveries WHERE id='{delivery}'")
            assert row == [{"status": "pending", "attempts": 0}]
            gw.live[("shop", "development")] = gw.app_server.url
            await wait_for(lambda: len(gw.app.received) == 1, what="forward once live")
            # the forwarder records the attempt after the app has answered
            await wait_for(
                lambda: project.api.webhooks.show(delivery).delivery.status == "delivered",
                what="the attempt recorded",
            )
            assert project.api.webhooks.show(delivery).delivery.attempts == 1

    run(main)


def test_failing_app_dead_letters_then_replay_delivers(project: Project) -> None:
    async def main() -> None:
        async with gateway(project) as gw:
            gw.app.status = 500
            h, b, _ = signed(project, "events", "order.created")
            delivery = (await gw.post("events", h, b)).json()["delivery"]
            await wait_for(
                lambda: project.api.webhooks.show(delivery).delivery.status == "dead",
                what="dead-lettered",
            )
            detail = project.api.webhooks.show(delivery)
            assert [a.status_code for a in detail.attempts] == [500, 500, 500]
            assert all(a.error and a.error.startswith("HTTP 500") for a in detail.attempts)
            listed = project.api.webhooks.deliveries(
                "shop", environment="development", status="dead"
            )
            assert [d.id for d in listed] == [delivery]
            gw.app.status = 200
            assert project.api.webhooks.replay_dead("shop", "development") == [delivery]
            await wait_for(lambda: len(gw.app.received) == 1, what="replayed delivery")
            await wait_for(
                lambda: project.api.webhooks.show(delivery).delivery.status == "delivered",
                what="delivered after replay",
            )
            assert project.api.webhooks.show(delivery).delivery.attempts == 4
            events = project.api.audit.events(project="shop", action="webhook.*")
            assert [e.action for e in events] == ["webhook.replay"]

    run(main)


def test_missing_secret_answers_503_and_stores_nothing(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with gateway(project) as gw:
            body = b'{"type":"x"}'
            h = wv.sign("standard", svix_secret(), "msg_u", int(time.time()), body)
            resp = await gw.post("unset", h, body)
            assert resp.status_code == 503 and resp.json()["error"] == "no_secret"
            for detail in ("NEVER_SET_SECRET", "development", "shop", "unset"):
                assert detail not in resp.text.replace("no_secret", ""), detail
            assert gw.rows() == []

    with caplog.at_level("ERROR", logger="tristage.webhooks"):
        run(main)
    assert "NEVER_SET_SECRET is not set" in caplog.text


def test_a_late_retry_carries_a_fresh_signature_the_app_accepts(project: Project) -> None:
    async def main() -> None:
        async with gateway(project, live=False) as gw:
            h, b, msg_id = signed(project, "clerk", "user.deleted")
            delivery = (await gw.post("clerk", h, b)).json()["delivery"]
            # received ten minutes ago: its original signature is now too old to verify
            project.api.store.execute(
                "UPDATE webhook_deliveries SET received_at = received_at - 600 WHERE id=?",
                (delivery,),
            )
            stale = {**h, "svix-timestamp": str(int(time.time()) - 600)}
            stale.update(
                wv.sign("clerk", project.secrets["clerk"], msg_id, int(time.time()) - 600, b)
            )
            with pytest.raises(wv.VerificationError):
                wv.verify("clerk", [project.secrets["clerk"]], stale, b)
            gw.live[("shop", "development")] = gw.app_server.url
            await wait_for(lambda: len(gw.app.received) == 1, what="late forward")
            _, headers, body = gw.app.received[0]
            assert body == b and headers["svix-id"] == msg_id
            assert int(headers["svix-timestamp"]) >= int(time.time()) - 5
            assert gw.app.refused == 0

    run(main)


# ---------------------------------------------------------------------------
# kill -9 of a process that acknowledged deliveries loses none of them

SERVE = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from tristage.api import Tristage
    from tristage.edges.router import Route, RouteTable, Router
    from tristage.http.internal import build_internal_app

    async def main():
        api = Tristage(Path(sys.argv[1]))
        table = RouteTable({"development.shop.localhost": Route("shop", "development", None, None)})
        router = Router(table, internal_app=build_internal_app(api))
        port = await router.start(host="127.0.0.1", port=0)
        stop = asyncio.Event()
        # the release is not live: deliveries are acknowledged and wait in the store
        forwarder = asyncio.create_task(
            api.webhooks.run_forwarder(stop, lambda p, e: None, poll_interval=0.1)
        )
        print(port, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


@pytest.mark.slow
def test_kill_9_after_acknowledging_loses_no_delivery(
    project: Project, home: Path, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        acked: list[str] = []

        async def blast() -> None:
            # 300 at once on a loaded machine: the point is that none is lost, not speed
            async with httpx.AsyncClient(timeout=60) as client:

                async def one(i: int) -> None:
                    h, b, _msg_id = signed(project, "clerk", message_id=f"msg_crash_{i}")
                    resp = await client.post(
                        f"http://127.0.0.1:{port}/.tristage/webhooks/clerk",
                        content=b,
                        headers={**h, "host": HOST},
                    )
                    if resp.status_code == 200:
                        acked.append(resp.json()["delivery"])

                await asyncio.gather(*(one(i) for i in range(300)))

        asyncio.run(blast())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(acked) == 300

    # a fresh process (new API, new connections) forwards every acknowledged delivery
    fresh = Tristage(home, actor="tester")
    restarted = Project(fresh, project.root, project.secrets)

    async def main() -> None:
        async with gateway(restarted) as gw:
            await wait_for(lambda: len(gw.app.received) >= 300, timeout=30, what="all forwarded")
            assert sorted(gw.app.ids()) == sorted(acked)

    try:
        run(main)
    finally:
        fresh.close()


# ---------------------------------------------------------------------------
# The CLI over a running gateway


class ThreadedGateway:
    """The router + ingest app + forwarder running in a background thread's loop."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.ready = threading.Event()
        self.port = 0
        self.app = AppRecorder({})
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with gateway(self.project) as gw:
            self.port = gw.router_port
            self.app = gw.app
            self.ready.set()
            await self._stop.wait()

    def __enter__(self) -> ThreadedGateway:
        self._thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def test_cli_urls_send_test_deliveries_show_and_replay(project: Project, cli: Any) -> None:
    env = {"TRISTAGE_PORT": "9123"}
    urls = cli("hooks", "urls", "--json", cwd=project.root, env=env)
    assert urls.returncode == 0, urls.stderr
    listed = {(u["environment"], u["source"]): u for u in json.loads(urls.stdout)}
    assert listed[("development", "clerk")]["urls"] == [
        "http://development.shop.localhost:9123/.tristage/webhooks/clerk"
    ]
    assert listed[("production", "clerk")]["urls"][1] == (
        "http://shop.localhost:9123/.tristage/webhooks/clerk"
    )
    assert listed[("development", "clerk")]["secret_set"] is True
    assert listed[("production", "clerk")]["secret_set"] is False
    assert project.secrets["clerk"] not in urls.stdout
    table = cli("hooks", "urls", cwd=project.root, env=env)
    assert "CLERK_WEBHOOK_SECRET (not set)" in table.stdout and "warning" in table.stdout

    with ThreadedGateway(project) as gw:
        base = f"http://127.0.0.1:{gw.port}"
        sent = cli(
            "hooks",
            "send-test",
            "development",
            "clerk",
            "user.created",
            "--url",
            base,
            "--json",
            cwd=project.root,
        )
        assert sent.returncode == 0, sent.stderr
        result = json.loads(sent.stdout)
        assert result["status"] == 200
        delivery = result["response"]["delivery"]
        for _ in range(200):
            if gw.app.received:
                break
            time.sleep(0.05)
        assert gw.app.received, "the test event reached the app"
        forwarded = json.loads(gw.app.received[0][2])
        assert forwarded["type"] == "user.created" and forwarded["data"]["object"] == "user"

        # through the router's address recorded in the environment (Host header routing)
        routed = cli(
            "hooks",
            "send-test",
            "development",
            "stripe",
            "checkout.session.completed",
            cwd=project.root,
            env={"TRISTAGE_PORT": str(gw.port)},
        )
        assert routed.returncode == 0, routed.stdout + routed.stderr
        assert "200" in routed.stdout and "stored as whd_" in routed.stdout

        # a secret that is not set: a clear error, exit 1
        unset = cli(
            "hooks", "send-test", "development", "unset", "x.y", "--url", base, cwd=project.root
        )
        assert unset.returncode == 1 and "NEVER_SET_SECRET is not set" in unset.stderr

        for _ in range(200):
            done = project.api.webhooks.deliveries("shop", status="delivered")
            if len(done) == 2:
                break
            time.sleep(0.05)
        rows = json.loads(
            cli("hooks", "deliveries", "--json", "--status", "delivered", cwd=project.root).stdout
        )
        assert {r["event_type"] for r in rows} == {"user.created", "checkout.session.completed"}

        shown = cli("hooks", "show", delivery, cwd=project.root)
        assert shown.returncode == 0 and "delivered" in shown.stdout and "200" in shown.stdout
        as_json = json.loads(cli("hooks", "show", delivery, "--json", cwd=project.root).stdout)
        assert as_json["attempts"][0]["status_code"] == 200

        replayed = cli("hooks", "replay", delivery, cwd=project.root)
        assert replayed.returncode == 0 and "queued" in replayed.stdout
        for _ in range(200):
            if len(gw.app.received) == 3:
                break
            time.sleep(0.05)
        assert len(gw.app.received) == 3  # the replay went out again

    listing = cli("hooks", "deliveries", "--env", "development", cwd=project.root)
    assert listing.returncode == 0 and delivery in listing.stdout
    bad = cli("hooks", "deliveries", "--status", "lost", cwd=project.root)
    assert bad.returncode == 2 and "pending" in bad.stderr
    missing = cli("hooks", "show", "whd_nope", cwd=project.root)
    assert missing.returncode == 1 and "no webhook delivery" in missing.stderr
    usage = cli("hooks", "replay", "--dead", cwd=project.root)
    assert usage.returncode == 2
    dead = cli("hooks", "replay", "--dead", "--env", "development", "--json", cwd=project.root)
    assert dead.returncode == 0 and json.loads(dead.stdout) == {"replayed": [], "dry_run": False}


def test_an_unbranded_clerk_delivery_reaches_the_app_verifiable_on_the_first_attempt(
    project: Project,
) -> None:
    """Clerk signs through Svix; `webhook-*` headers are valid Svix headers. The app's own
    library (Clerk's SDK reads `svix-id/-timestamp/-signature`) must accept the forward."""
    from svix.webhooks import Webhook as SvixWebhook

    async def main() -> None:
        async with gateway(project) as gw:
            headers, body, msg_id = signed(project, "clerk", "user.created")
            unbranded = {k.replace("svix-", "webhook-"): v for k, v in headers.items()}
            assert "svix-id" not in unbranded and "webhook-id" in unbranded
            resp = await gw.post("clerk", unbranded, body)
            assert resp.status_code == 200, resp.text
            await wait_for(lambda: len(gw.app.received) == 1, what="the forward")
            _, got, got_body = gw.app.received[0]
            assert got["svix-id"] == msg_id
            assert got["svix-timestamp"] == unbranded["webhook-timestamp"]
            assert got["svix-signature"] == unbranded["webhook-signature"]
            svix_only = {k: v for k, v in got.items() if k.startswith("svix-")}
            SvixWebhook(project.secrets["clerk"]).verify(got_body, svix_only)
            assert got["x-tristage-attempt"] == "1" and gw.app.refused == 0

    run(main)


def test_duplicate_signature_headers_the_first_copy_wins(project: Project) -> None:
    """Two copies of a signature header: the first is verified (as most verifiers do)."""

    async def main() -> None:
        async with gateway(project) as gw:
            url = f"http://127.0.0.1:{gw.router_port}/.tristage/webhooks/clerk"
            h, body, _ = signed(project, "clerk")
            forged = wv.sign("clerk", svix_secret(), h["svix-id"], int(time.time()), body)

            def listed(first: str, second: str) -> list[tuple[str, str]]:
                out = [(k, v) for k, v in h.items() if k != "svix-signature"]
                return [*out, ("svix-signature", first), ("svix-signature", second), ("host", HOST)]

            resp = await gw.client.post(
                url, content=body, headers=listed(forged["svix-signature"], h["svix-signature"])
            )
            assert resp.status_code == 401, resp.text
            resp = await gw.client.post(
                url, content=body, headers=listed(h["svix-signature"], forged["svix-signature"])
            )
            assert resp.status_code == 200, resp.text
            await wait_for(lambda: len(gw.app.received) == 1, what="the forward")
            assert gw.app.received[0][1]["svix-signature"] == h["svix-signature"]

    run(main)


# ---------------------------------------------------------------------------
# Bodies at rest: sealed with the secret box, removed after the source's retention


def _raw_state(api: Tristage) -> bytes:
    return b"".join(p.read_bytes() for p in api.home.glob("state.db*") if p.is_file())


def test_bodies_are_encrypted_at_rest_and_forwarded_intact(project: Project) -> None:
    async def main() -> None:
        async with gateway(project) as gw:
            h, b, _ = signed(project, "clerk", "user.created")
            email = json.loads(b)["data"]["email_addresses"][0]["email_address"]
            delivery = (await gw.post("clerk", h, b)).json()["delivery"]
            await wait_for(lambda: len(gw.app.received) == 1, what="the forward")
            assert gw.app.received[0][2] == b and gw.app.refused == 0
            row = gw.rows("SELECT body, sealed FROM webhook_deliveries")[0]
            assert row["sealed"] == 1 and bytes(row["body"]).startswith(b"ts1:")
            assert email.encode() not in bytes(row["body"])
            assert project.api.webhooks.show(delivery).body == b
        project.api.store.scrub()  # fold the WAL into the file: neither holds the address
        assert email.encode() not in _raw_state(project.api)

    run(main)


def test_plain_bodies_stored_before_sealing_are_sealed_and_still_delivered(
    project: Project,
) -> None:
    h, b, msg_id = signed(project, "clerk", "user.updated")
    project.api.store.execute(
        "INSERT INTO webhook_deliveries (id, project, environment, source, kind, message_id,"
        " event_type, received_at, headers, body, size, path, status, next_attempt_at, sealed)"
        " VALUES ('whd_old', 'shop', 'development', 'clerk', 'clerk', ?, 'user.updated', ?,"
        " ?, ?, ?, '/clerk-users-webhook', 'pending', ?, 0)",
        (msg_id, time.time(), json.dumps(h), b, len(b), time.time()),
    )

    async def main() -> None:
        async with gateway(project) as gw:
            await wait_for(lambda: len(gw.app.received) == 1, what="the old delivery")
            assert gw.app.received[0][2] == b and gw.app.refused == 0
            await wait_for(
                lambda: gw.rows("SELECT sealed FROM webhook_deliveries")[0]["sealed"] == 1,
                what="sealed",
            )
            row = gw.rows("SELECT body FROM webhook_deliveries")[0]
            assert bytes(row["body"]).startswith(b"ts1:") and b not in bytes(row["body"])

    run(main)


def test_after_the_retention_a_delivered_body_is_removed_and_its_stub_kept(
    project: Project,
) -> None:
    async def main() -> None:
        async with gateway(project, live=False) as gw:
            ids = []
            for event in ("user.created", "user.deleted"):
                h, b, _ = signed(project, "clerk", event)
                ids.append((await gw.post("clerk", h, b)).json()["delivery"])
            old, waiting = ids
            month = 31 * 86400
            project.api.store.execute(
                "UPDATE webhook_deliveries SET received_at = received_at - ?", (month,)
            )
            project.api.store.execute(
                "UPDATE webhook_deliveries SET status='delivered', next_attempt_at=NULL,"
                " delivered_at=received_at WHERE id=?",
                (old,),
            )
        # the next forwarder prunes on its way up
        async with gateway(project, live=False) as gw:
            await wait_for(
                lambda: project.api.webhooks.show(old).delivery.pruned_at is not None,
                what="pruned",
            )
            stub = project.api.webhooks.show(old)
            assert stub.body == b"" and stub.delivery.event_type == "user.created"
            assert stub.delivery.status == "delivered" and stub.delivery.message_id
            raw = f"SELECT length(body) AS n FROM webhook_deliveries WHERE id='{old}'"
            assert gw.rows(raw)[0]["n"] == 0
            assert await project.api.webhooks.housekeeping() == (0, 0)  # nothing left to do
            assert gw.rows(raw)[0]["n"] == 0 and project.api.webhooks.show(old).body == b""
            # a delivery still waiting keeps its body, whatever its age
            kept = project.api.webhooks.show(waiting)
            assert kept.delivery.pruned_at is None and b"user.deleted" in kept.body
            with pytest.raises(TristageError, match="retain_days"):
                project.api.webhooks.replay(old)

    run(main)


def test_a_provider_registered_outside_tristage_verifies_and_forwards(project: Project) -> None:
    """`kind = "acme"`: a plug-in registered by a test module, no change to tristage."""
    acme = acme_provider.PROVIDER
    secret = acme.new_secret()
    project.api.variables.set(
        "shop", "ACME_WEBHOOK_SECRET", secret, environments=["development"], secret=True
    )

    async def main() -> None:
        async with gateway(project) as gw:
            gw.app.secrets["/acme"] = ("acme", secret)
            import random

            msg_id, event = acme.sample_event("order.shipped", time.time(), random.Random())
            body = json.dumps(event).encode()
            forged = acme.sign(acme.new_secret(), msg_id, int(time.time()), body)
            assert (await gw.post("acme", forged, body)).status_code == 401
            h = acme.sign(secret, msg_id, int(time.time()), body)
            resp = await gw.post("acme", {**h, "content-type": "application/json"}, body)
            assert resp.status_code == 200, resp.text
            assert (await gw.post("acme", h, body)).json()["duplicate"] is True
            await wait_for(lambda: len(gw.app.received) == 1, what="the acme forward")
            path, headers, got = gw.app.received[0]
            assert path == "/acme" and got == body and headers["x-acme-id"] == msg_id
            assert gw.app.refused == 0
            d = project.api.webhooks.show(resp.json()["delivery"]).delivery
            assert (d.kind, d.event_type, d.message_id) == ("acme", "order.shipped", msg_id)

    run(main)


def _fill_backlog(api: Tristage, n: int, environment: str = "development", start: int = 0) -> None:
    now = time.time()
    with api.store.transaction():
        for i in range(start, start + n):
            api.store.execute(
                "INSERT INTO webhook_deliveries (id, project, environment, source, kind,"
                " message_id, event_type, received_at, headers, body, size, path, status,"
                " next_attempt_at, sealed) VALUES (?, 'shop', ?, 'clerk', 'clerk', ?, 'x', ?,"
                " '{}', x'7b7d', 2, '/c', ?, ?, 0)",
                (
                    f"whd_b{environment}{i}",
                    environment,
                    f"m{environment}{i}",
                    now,
                    "pending" if i % 2 else "failed",
                    now + 3600 + i,
                ),
            )


def test_a_forwarder_wake_up_costs_the_same_whatever_the_backlog(project: Project) -> None:
    """Finding what is due must not re-scan every waiting delivery."""
    import statistics

    service = project.api.webhooks

    def wake_up_ms() -> float:
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            pairs = service._waiting_pairs()
            times.append((time.perf_counter() - t0) * 1000)
        assert [(p, e) for p, e, _ in pairs] == [("shop", "development"), ("shop", "production")]
        return statistics.median(times)

    _fill_backlog(project.api, 50, "production")
    _fill_backlog(project.api, 50)
    small = wake_up_ms()
    _fill_backlog(project.api, 40_000, "production", start=50)
    large = wake_up_ms()
    assert large < small * 3 + 1.0, (small, large)  # was 10 ms against 0.03 ms
    due = min(p[2] for p in service._waiting_pairs())
    assert due == pytest.approx(time.time() + 3600, abs=60)


def test_claiming_a_batch_costs_the_same_whatever_the_backlog_due(project: Project) -> None:
    """With a large backlog all due (the app is back), a claim takes the earliest few
    without sorting every due delivery."""
    import statistics

    service = project.api.webhooks
    store = project.api.store

    def claim_ms(now: float) -> float:
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            with store.transaction():
                got = service._claim(store, {("shop", "production"): "http://x"}, now, 32, 60)
            times.append((time.perf_counter() - t0) * 1000)
            assert len(got) == 32
            assert [g.id for g in got] == sorted(
                (g.id for g in got), key=lambda i: int(i.rsplit("n", 1)[1])
            )
        return statistics.median(times)

    later = time.time() + 10 * 86400  # every delivery is due by then
    _fill_backlog(project.api, 400, "production")
    small = claim_ms(later)
    _fill_backlog(project.api, 40_000, "production", start=400)
    large = claim_ms(later)
    assert large < small * 3 + 1.0, (small, large)


def test_a_source_whose_provider_is_not_registered_answers_503_and_logs_why(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    from tristage.edges import webhook_providers as providers

    acme = acme_provider.PROVIDER
    project.api.variables.set(
        "shop", "ACME_WEBHOOK_SECRET", acme.new_secret(), environments=["development"], secret=True
    )

    async def main() -> None:
        async with gateway(project) as gw:
            body = b'{"event":"order.shipped"}'
            providers.unregister("acme")
            try:
                resp = await gw.post("acme", acme.sign("k", "m1", int(time.time()), body), body)
            finally:
                providers.register(acme, replace=True)
            assert resp.status_code == 503 and resp.json()["error"] == "unknown_kind"
            assert "acme" not in resp.text and gw.rows() == []

    with caplog.at_level("ERROR", logger="tristage.webhooks"):
        run(main)
    assert "no webhook provider 'acme'" in caplog.text and "use one of" in caplog.text


def test_a_flood_at_one_environment_does_not_hold_up_another(project: Project) -> None:
    """Deliveries are verified a few at a time per environment; past a short queue an
    environment's deliveries get 503 (providers retry), other environments are untouched."""
    project.api.variables.set(
        "shop",
        "CLERK_WEBHOOK_SECRET",
        project.secrets["clerk"],
        environments=["production"],
        secret=True,
    )

    async def main() -> None:
        routes = {
            HOST: Route("shop", "development", None, None),
            "shop.localhost": Route("shop", "production", None, None),
        }
        app = build_internal_app(project.api, per_environment=2, queue=2)
        router = Router(RouteTable(routes), internal_app=app)
        port = await router.start(host="127.0.0.1", port=0)
        held: list[asyncio.StreamWriter] = []
        try:
            for _ in range(4):  # two being read, two waiting: development is full
                _r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(
                    f"POST /.tristage/webhooks/clerk HTTP/1.1\r\nHost: {HOST}\r\n"
                    "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode()
                )
                held.append(w)
            await asyncio.sleep(0.3)
            url = f"http://127.0.0.1:{port}/.tristage/webhooks/clerk"
            async with httpx.AsyncClient(timeout=5) as c:
                headers, body, _ = signed(project, "clerk")
                r = await c.post(url, content=body, headers={**headers, "host": HOST})
                assert r.status_code == 503, r.text
                assert r.json()["error"] == "busy" and r.headers["retry-after"]
                headers, body, _ = signed(project, "clerk")
                r = await c.post(url, content=body, headers={**headers, "host": "shop.localhost"})
                assert r.status_code == 200, r.text  # production is served at once
                for w in held:
                    w.close()
                await asyncio.sleep(0.3)
                headers, body, _ = signed(project, "clerk")
                r = await c.post(url, content=body, headers={**headers, "host": HOST})
                assert r.status_code == 200, r.text  # and development again once it drains
        finally:
            for w in held:
                w.close()
            await router.stop()

    run(main)
