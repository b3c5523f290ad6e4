"""Delivery signals, limits, pausing, filters, several destinations, replay selections and
per-environment retention, over real HTTP: the real router and ingest app in front, real
apps on their own ports answering what each case needs, a real SQLite state store."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from test_webhooks_http import AppServer, svix_secret, wait_for
from tristage.api import Tristage
from tristage.domain import webhooks as dom
from tristage.edges import webhook_verify as wv
from tristage.edges.router import Route, Router, RouteTable
from tristage.http.internal import build_internal_app

pytestmark = pytest.mark.timeout(90)

HOST = "development.shop.localhost"

CONFIG = """
[project]
name = "shop"

[environments.development]
tier = "development"
branches = ["dev"]
webhook_retain_days = 7

[environments.development.webhooks.clerk]
kind = "clerk"
secret_var = "CLERK_WEBHOOK_SECRET"
path = "/clerk"
retry_schedule = [0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05]
pause_after = 0.3

[environments.development.webhooks.users]
kind = "clerk"
secret_var = "CLERK_WEBHOOK_SECRET"
path = "/users"
events = ["user.*", "paymentAttempt.updated"]
retain_days = 30

[environments.development.webhooks.fanout]
kind = "clerk"
secret_var = "CLERK_WEBHOOK_SECRET"
retry_schedule = [0.05, 0.05, 0.05]
destinations = [{ path = "/fanout" }, { name = "archive", url = "ARCHIVE_URL/archive" }]

[environments.development.webhooks.limited]
kind = "clerk"
secret_var = "CLERK_WEBHOOK_SECRET"
path = "/limited"
max_in_flight = 2

[environments.development.webhooks.slow]
kind = "clerk"
secret_var = "CLERK_WEBHOOK_SECRET"
path = "/slow"
rate = "5/s"

[environments.production]
tier = "production"
branches = ["main"]
"""


@dataclass
class ScriptedApp:
    """An app whose answer per path is scripted: a list of (status, headers) served in
    turn (the last one repeats), recording each request's time and concurrency."""

    secret: str
    script: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)
    seen: list[tuple[float, str, dict[str, str], bytes, int]] = field(default_factory=list)
    active: int = 0
    peak: int = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        at = time.time()
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        path = scope["path"]
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.delay.get(path, 0.0))
        finally:
            self.active -= 1
        turns = self.script.get(path) or [(200, {})]
        status, extra = turns.pop(0) if len(turns) > 1 else turns[0]
        try:
            wv.verify("clerk", [self.secret], headers, body)
        except wv.VerificationError:
            status = 400
        self.seen.append((at, path, headers, body, status))
        raw = [(k.encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": b"ok" if status < 300 else b"no"})

    def got(self, path: str, status: int | None = 200) -> list[dict[str, str]]:
        return [h for _, p, h, _, s in self.seen if p == path and (status is None or s == status)]


@dataclass
class Rig:
    api: Tristage
    secret: str
    app: ScriptedApp
    archive: ScriptedApp
    router_port: int
    client: httpx.AsyncClient

    async def post(self, source: str, event_type: str = "user.created") -> str:
        msg_id, event = dom.sample_event("clerk", event_type, time.time(), random.Random())
        body = json.dumps(event).encode()
        headers = wv.sign("clerk", self.secret, msg_id, int(time.time()), body)
        resp = await self.client.post(
            f"http://127.0.0.1:{self.router_port}/.tristage/webhooks/{source}",
            content=body,
            headers={**headers, "content-type": "application/json", "host": HOST},
        )
        assert resp.status_code == 200, resp.text
        return str(resp.json()["delivery"])

    def status(self, delivery: str) -> str:
        return self.api.webhooks.show(delivery).delivery.status

    def alerts(self, kind: str) -> list[Any]:
        return [a for a in self.api.monitor.alerts("shop") if a.kind == kind]


def make_project(api: Tristage, root: Path, archive_url: str) -> str:
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    (root / "tristage.toml").write_text(CONFIG.replace("ARCHIVE_URL", archive_url), "utf-8")
    api.open_project(root)
    secret = svix_secret()
    api.variables.set(
        "shop", "CLERK_WEBHOOK_SECRET", secret, environments=["development"], secret=True
    )
    return secret


@asynccontextmanager
async def rig(api: Tristage, root: Path) -> AsyncIterator[Rig]:
    archive = ScriptedApp("")
    archive_server = AppServer(archive)  # type: ignore[arg-type]
    secret = make_project(api, root, archive_server.url)
    archive.secret = secret
    app = ScriptedApp(secret)
    app_server = AppServer(app)  # type: ignore[arg-type]
    await app_server.start()
    await archive_server.start()
    routes = {HOST: Route("shop", "development", None, None)}
    router = Router(RouteTable(routes), internal_app=build_internal_app(api))
    port = await router.start(host="127.0.0.1", port=0)

    def upstream(p: str, e: str) -> str | None:
        return app_server.url if (p, e) == ("shop", "development") else None

    stop = asyncio.Event()
    forwarder = asyncio.create_task(
        api.webhooks.run_forwarder(stop, upstream, poll_interval=0.1, timeout=5.0)
    )
    async with httpx.AsyncClient(timeout=10) as client:
        try:
            yield Rig(api, secret, app, archive, port, client)
        finally:
            stop.set()
            await asyncio.wait_for(forwarder, 15)
            await router.stop()
            await app_server.stop()
            await archive_server.stop()


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Delivery signals


def test_a_429_with_retry_after_2_is_retried_after_at_least_2_seconds(
    api: Tristage, tmp_path: Path
) -> None:
    async def main() -> None:
        async with rig(api, tmp_path / "shop") as r:
            r.app.script["/clerk"] = [(429, {"Retry-After": "2"}), (200, {})]
            d = await r.post("clerk")
            await wait_for(lambda: r.status(d) == "delivered", 20, "the retry delivered")
            times = [at for at, p, *_ in r.app.seen if p == "/clerk"]
            assert len(times) == 2
            assert times[1] - times[0] >= 2.0, times  # the schedule alone says 0.05 s
            detail = api.webhooks.show(d)
            assert [a.status_code for a in detail.attempts] == [429, 200]

    run(main)


def test_a_410_dead_letters_at_once_with_an_alert_and_pauses_until_resumed(
    api: Tristage, tmp_path: Path
) -> None:
    async def main() -> None:
        async with rig(api, tmp_path / "shop") as r:
            r.app.script["/clerk"] = [(410, {}), (200, {})]
            gone = await r.post("clerk")
            await wait_for(lambda: r.status(gone) == "dead", 10, "dead-lettered")
            assert api.webhooks.show(gone).delivery.attempts == 1  # no retry after a 410
            await wait_for(lambda: bool(r.alerts("webhook_gone")), 10, "the alert")
            alert = r.alerts("webhook_gone")[0]
            assert "410" in alert.message and "hooks resume development clerk" in alert.message
            assert alert.resolved_at is None
            # the destination is paused: the next delivery waits without an attempt
            waiting = await r.post("clerk", "user.updated")
            await asyncio.sleep(0.5)
            assert api.webhooks.show(waiting).delivery.attempts == 0
            assert [p["destination"] for p in api.webhooks.paused("shop")] == ["app"]

            assert api.webhooks.resume("shop", "development", "clerk") == ["app"]
            await wait_for(lambda: r.status(waiting) == "delivered", 10, "resumed delivery")
            assert api.webhooks.paused("shop") == []
            assert r.alerts("webhook_gone")[0].resolved_at is not None
            assert r.status(gone) == "dead"  # a dead-lettered one waits for a replay

    run(main)


def test_a_destination_failing_past_pause_after_is_paused_and_a_send_test_resumes_it(
    api: Tristage, tmp_path: Path
) -> None:
    async def main() -> None:
        async with rig(api, tmp_path / "shop") as r:
            r.app.script["/clerk"] = [(500, {})]
            first = await r.post("clerk")
            await wait_for(lambda: bool(r.alerts("webhook_paused")), 15, "paused alert")
            paused = api.webhooks.paused("shop")
            assert paused[0]["paused_at"] is not None and "HTTP 500" in paused[0]["reason"]
            tries = api.webhooks.show(first).delivery.attempts
            await asyncio.sleep(0.5)
            assert api.webhooks.show(first).delivery.attempts == tries  # no more attempts
            assert r.status(first) == "failed"

            r.app.script["/clerk"] = [(200, {})]
            base = f"http://127.0.0.1:{r.router_port}"
            sent = await asyncio.to_thread(
                api.webhooks.send_test, "shop", "development", "clerk", "user.created",
                base_url=base,
            )  # fmt: skip
            assert sent.status == 200
            await wait_for(lambda: r.status(first) == "delivered", 15, "resumed by the test")
            assert api.webhooks.paused("shop") == []
            assert r.alerts("webhook_paused")[0].resolved_at is not None

    run(main)


def test_max_in_flight_and_rate_bound_one_source_only(api: Tristage, tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(api, tmp_path / "shop") as r:
            r.app.delay["/limited"] = 0.2
            ids = [await r.post("limited") for _ in range(8)]
            await wait_for(
                lambda: all(r.status(i) == "delivered" for i in ids), 20, "limited delivered"
            )
            assert r.app.peak <= 2  # max_in_flight = 2, the forwarder's own limit is 16

            r.app.peak = 0
            r.app.delay.pop("/limited")
            slow = [await r.post("slow") for _ in range(10)]
            await wait_for(lambda: all(r.status(i) == "delivered" for i in slow), 20, "slow")
            times = sorted(at for at, p, *_ in r.app.seen if p == "/slow")
            # 5/s: a burst of 5, then one every 0.2 s for the other 5
            assert times[-1] - times[0] >= 0.8, times

    run(main)


# ---------------------------------------------------------------------------
# Routing


def test_a_filtered_event_type_is_stored_not_forwarded_and_says_why(
    api: Tristage, tmp_path: Path
) -> None:
    async def main() -> None:
        async with rig(api, tmp_path / "shop") as r:
            kept = await r.post("users", "user.updated")
            payment = await r.post("users", "paymentAttempt.updated")
            other = await r.post("users", "session.created")
            await wait_for(
                lambda: r.status(kept) == "delivered" and r.status(payment) == "delivered",
                10,
                "selected events",
            )
            await asyncio.sleep(0.3)
            d = api.webhooks.show(other)
            assert d.delivery.status == "filtered" and d.delivery.attempts == 0
            assert d.delivery.last_error is not None
            assert "session.created" in d.delivery.last_error
            assert "user.*" in d.delivery.last_error
            assert b"session.created" in d.body  # stored
            assert len(r.app.got("/users")) == 2
            assert [x.id for x in api.webhooks.deliveries("shop", status="filtered")] == [other]

    run(main)


def test_two_destinations_each_get_the_delivery_once(api: Tristage, tmp_path: Path) -> None:
    async def main() -> None:
        async with rig(api, tmp_path / "shop") as r:
            r.archive.script["/archive"] = [(503, {}), (200, {})]  # fails once, then takes it
            d = await r.post("fanout")
            await wait_for(lambda: r.status(d) == "delivered", 15, "both destinations")
            await asyncio.sleep(0.3)
            assert [h["x-tristage-delivery"] for h in r.app.got("/fanout")] == [d]
            assert [h["x-tristage-delivery"] for h in r.archive.got("/archive")] == [d]
            assert len(r.app.got("/fanout", None)) == 1  # the app was not posted again
            detail = api.webhooks.show(d)
            states = {s.destination: s for s in detail.destinations}
            assert states["app"].status == "delivered" and states["app"].attempts == 1
            assert states["archive"].status == "delivered" and states["archive"].attempts == 2
            assert [(a.destination, a.status_code) for a in detail.attempts] == [
                ("app", 200),
                ("archive", 503),
                ("archive", 200),
            ] or sorted((a.destination or "", a.status_code or 0) for a in detail.attempts) == [
                ("app", 200),
                ("archive", 200),
                ("archive", 503),
            ]
            # the archive got the same signature headers the app verifies
            assert r.archive.got("/archive")[0]["svix-id"] == r.app.got("/fanout")[0]["svix-id"]

    run(main)


# ---------------------------------------------------------------------------
# Replay selections


def test_replay_by_status_time_range_and_event_type_and_dry_run(
    api: Tristage, tmp_path: Path
) -> None:
    async def main() -> None:
        async with rig(api, tmp_path / "shop") as r:
            ids = {e: await r.post("users", e) for e in ("user.created", "user.deleted")}
            ids["filtered"] = await r.post("users", "session.created")
            users = ("user.created", "user.deleted")
            await wait_for(
                lambda: all(r.status(ids[e]) == "delivered" for e in users), 10, "delivered"
            )
            hour = 3600.0
            api.store.execute(
                "UPDATE webhook_deliveries SET received_at = received_at - ? WHERE id=?",
                (2 * hour, ids["user.deleted"]),
            )
            now = time.time()
            old = api.webhooks.replay_many("shop", until=now - hour, dry_run=True)
            assert [d.id for d in old] == [ids["user.deleted"]]
            recent = api.webhooks.replay_many("shop", since=now - hour, dry_run=True)
            assert {d.id for d in recent} == {ids["user.created"], ids["filtered"]}
            by_type = api.webhooks.replay_many("shop", event_type="user.*", dry_run=True)
            assert {d.id for d in by_type} == {ids["user.created"], ids["user.deleted"]}
            assert (
                api.webhooks.replay_many("shop", status="filtered", dry_run=True)[0].id
                == (ids["filtered"])
            )
            assert r.status(ids["user.deleted"]) == "delivered"  # a dry run changes nothing
            before = len(r.app.got("/users"))

            replayed = api.webhooks.replay_many("shop", event_type="user.deleted")
            assert [d.id for d in replayed] == [ids["user.deleted"]]
            await wait_for(lambda: len(r.app.got("/users")) == before + 1, 10, "replayed once")
            assert r.app.got("/users")[-1]["x-tristage-delivery"] == ids["user.deleted"]
            with pytest.raises(Exception, match="needs a filter"):
                api.webhooks.replay_many("shop")

    run(main)


# ---------------------------------------------------------------------------
# Retention per environment


def test_past_the_environment_retention_a_delivery_keeps_only_its_stub(
    api: Tristage, tmp_path: Path
) -> None:
    async def main() -> None:
        async with rig(api, tmp_path / "shop") as r:
            env_default = await r.post("clerk")
            own_retention = await r.post("users")
            await wait_for(
                lambda: r.status(env_default) == r.status(own_retention) == "delivered",
                10,
                "delivered",
            )
            api.store.execute(
                "UPDATE webhook_deliveries SET received_at = received_at - ?", (8 * 86400,)
            )
            assert await api.webhooks.housekeeping() == (0, 1)
            stub = api.webhooks.show(env_default)
            # development's webhook_retain_days = 7: only the stub is left
            assert stub.body == b"" and stub.headers == {} and stub.delivery.pruned_at
            assert (
                stub.delivery.status == "delivered" and stub.delivery.event_type == "user.created"
            )
            assert stub.delivery.id == env_default and stub.delivery.received_at > 0
            # the source's own retain_days = 30 wins over the environment's
            kept = api.webhooks.show(own_retention)
            assert kept.delivery.pruned_at is None and b"user.created" in kept.body

    run(main)


def test_cli_replay_dry_run_lists_and_resume_says_what_it_did(
    api: Tristage, tmp_path: Path, cli: Any
) -> None:
    root = tmp_path / "shop"

    async def main() -> None:
        async with rig(api, root) as r:
            r.app.script["/clerk"] = [(410, {})]
            d = await r.post("clerk")
            await wait_for(lambda: r.status(d) == "dead", 10, "dead-lettered")
            await wait_for(lambda: bool(api.webhooks.paused("shop")), 10, "paused")

    run(main)
    dry = cli("hooks", "replay", "--status", "dead", "--since", "1h", "--dry-run", cwd=root)
    assert dry.returncode == 0, dry.stderr
    assert "would queue 1 deliveries" in dry.stdout and "user.created" in dry.stdout
    assert api.webhooks.select("shop", status="dead")  # still dead: nothing was queued
    as_json = cli("hooks", "replay", "--event", "user.*", "--dry-run", "--json", cwd=root)
    assert json.loads(as_json.stdout)["dry_run"] is True
    assert len(json.loads(as_json.stdout)["replayed"]) == 1
    bad = cli("hooks", "replay", "--since", "yesterday", cwd=root)
    assert bad.returncode == 2 and "not a time" in bad.stderr
    urls = cli("hooks", "urls", "--env", "development", cwd=root)
    assert "paused:" in urls.stdout and "hooks resume development clerk" in urls.stdout
    resumed = cli("hooks", "resume", "development", "clerk", cwd=root)
    assert resumed.returncode == 0 and "resumed development/clerk -> app" in resumed.stdout
    again = cli("hooks", "resume", "development", "clerk", cwd=root)
    assert "nothing of development/clerk was paused" in again.stdout
    nope = cli("hooks", "resume", "development", "clerk", "--destination", "x", cwd=root)
    assert nope.returncode == 1 and "no destination 'x'" in nope.stderr


# ---------------------------------------------------------------------------
# The writer: a turn of the loop's deliveries commit together on the loop when nothing
# waits, else on the writer thread


def test_deliveries_of_one_loop_turn_commit_together_here_or_on_the_writer(
    tmp_path: Path,
) -> None:
    import threading

    from tristage.edges.store import SqliteStore
    from tristage.services.batch_writer import BatchWriter

    schema = [("0001_t", "CREATE TABLE t (k TEXT PRIMARY KEY, thread TEXT NOT NULL);")]
    store = SqliteStore(tmp_path / "state.db", schema)
    other = SqliteStore(tmp_path / "state.db", schema)  # another process, say
    writer = BatchWriter(store)

    def put(key: str) -> Callable[[Any], str]:
        def job(s: Any) -> str:
            s.execute(
                "INSERT INTO t (k, thread) VALUES (?, ?)", (key, threading.current_thread().name)
            )
            return key

        return job

    async def main() -> None:
        here = threading.current_thread().name
        got = await asyncio.gather(*(writer.run_here(put(f"a{i}")) for i in range(20)))
        assert got == [f"a{i}" for i in range(20)]
        threads = {r["thread"] for r in store.query("SELECT thread FROM t WHERE k LIKE 'a%'")}
        assert threads == {here}  # nothing waited: committed on the loop, no hand-over
        # another client holds the write lock: the loop does not wait, the writer does
        holding, release = threading.Event(), threading.Event()

        def hold() -> None:
            with other.transaction():
                holding.set()
                release.wait(10)

        t = threading.Thread(target=hold)
        t.start()
        assert holding.wait(10)
        started = time.monotonic()
        pending = asyncio.ensure_future(writer.run_here(put("b")))
        await asyncio.sleep(0.2)
        assert not pending.done()  # waiting on the writer thread, the loop is free
        assert time.monotonic() - started < 1.0
        release.set()
        assert await asyncio.wait_for(pending, 10) == "b"
        t.join()
        row = store.query_one("SELECT thread FROM t WHERE k='b'")
        assert row is not None and row["thread"] == "tristage-webhook-writer"
        # a failing job fails alone, the others of its turn are stored
        bad = asyncio.ensure_future(writer.run_here(put("a0")))  # the key exists
        good = asyncio.ensure_future(writer.run_here(put("c")))
        assert await asyncio.wait_for(good, 10) == "c"
        with pytest.raises(Exception, match="UNIQUE"):
            await asyncio.wait_for(bad, 10)

    try:
        run(main)
    finally:
        writer.stop()
        other.close()
        store.close()


def test_a_flood_of_forged_large_bodies_is_shed_unread_and_small_ones_still_verified(
    api: Tristage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tristage.services import webhooks as svc

    async def main() -> None:
        async with rig(api, tmp_path / "shop") as r:
            url = f"http://127.0.0.1:{r.router_port}/.tristage/webhooks/clerk"
            big = b'{"type":"user.created","data":"' + b"x" * 200_000 + b'"}'
            forged = {
                "svix-id": "msg_forged",
                "svix-timestamp": str(int(time.time())),
                "svix-signature": "v1,bm90IGEgc2lnbmF0dXJl",
                "host": HOST,
            }
            codes = []
            for _ in range(svc.SHED_AFTER + 5):
                resp = await r.client.post(url, content=big, headers=forged)
                codes.append(resp.status_code)
            assert codes[: svc.SHED_AFTER] == [401] * svc.SHED_AFTER  # verified, refused
            assert set(codes[svc.SHED_AFTER :]) == {503}  # then refused unread
            resp = await r.client.post(url, content=big, headers=forged)
            assert resp.status_code == 503 and resp.headers["retry-after"] == "2"
            assert resp.json()["error"] == "busy"
            # a genuine (small) delivery at the same environment still gets in
            d = await r.post("clerk")
            await wait_for(lambda: r.status(d) == "delivered", 10, "the genuine one")
            # another environment is not shed
            from tristage.api import Endpoint

            dev = api.webhooks.endpoint("shop", "development", "clerk")
            assert api.webhooks.shedding(dev, 10**6) is not None
            assert api.webhooks.shedding(dev, 1000) is None  # small ones are verified
            other = Endpoint("shop", "production", "clerk", dev.config, dev.secrets)
            assert api.webhooks.shedding(other, 10**6) is None

    with caplog.at_level("WARNING", logger="tristage.webhooks"):
        run(main)
    assert "webhook flood: project=shop env=development" in caplog.text
