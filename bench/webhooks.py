"""Webhook gateway: verified, durably stored ingest and forwarding throughput.

    .venv/bin/python bench/webhooks.py [--events 5000] [--concurrency 16]

Starts, as child processes: the router with the webhook ingest app and the forwarder
(what `tristage up` runs), and a minimal app under uvicorn that the forwarder posts
to. This process drives the ingest URL with distinct, correctly signed Clerk
`user.created` deliveries (Svix signatures, ~1.2 KB bodies) over keep-alive
connections, one request at a time per connection, and measures each
time-to-acknowledge: the 200 comes only after the delivery is committed to the
SQLite state store (WAL).

Phases:
  1. ingest with the app down (no live release: deliveries wait in the store)
  2. forwarding: the release goes live; time until every stored delivery is delivered
  3. ingest with the app up (forwarding runs concurrently on the same 2 cores)
  4. the same, paced at the goal's 1,000 events/s (open loop) instead of flat out

The baseline is the goal: 1,000 verified, stored events/s with p99 under 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import httptools
from _util import LoadResult, exchange, free_port, wait_port

GOAL_RPS = 1000.0
GOAL_P99_MS = 20.0
HOST = "development.bench.localhost"
CONFIG = """
[project]
name = "bench"

[environments.development]
tier = "development"
branches = ["dev"]

[environments.development.webhooks.clerk]
kind = "clerk"
secret_var = "CLERK_WEBHOOK_SECRET"
path = "/clerk-users-webhook"
"""


# ---------------------------------------------------------------------------
# child processes


def serve_gateway(home: str, port: int, live_file: str) -> None:
    from tristage.api import Tristage
    from tristage.edges.router import Route, Router, RouteTable
    from tristage.http.internal import build_internal_app

    async def main() -> None:
        api = Tristage(Path(home))
        table = RouteTable({HOST: Route("bench", "development", None, None)})
        router = Router(table, internal_app=build_internal_app(api))
        await router.start(host="127.0.0.1", port=port)
        cache: dict[str, Any] = {"at": 0.0, "url": None}

        def upstream(project: str, environment: str) -> str | None:
            if time.monotonic() - cache["at"] > 0.05:
                cache["url"] = Path(live_file).read_text().strip() or None
                cache["at"] = time.monotonic()
            return cache["url"]  # type: ignore[no-any-return]

        stop = asyncio.Event()
        await api.webhooks.run_forwarder(stop, upstream)

    asyncio.run(main())


def serve_app(port: int) -> None:
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            msg = await receive()
            more = msg.get("more_body", False)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"2")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})

    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="warning", http="httptools", lifespan="off"
    )


# ---------------------------------------------------------------------------
# the load generator


def signed_requests(secret: str, n: int, port: int, tag: str) -> list[bytes]:
    from tristage.domain.webhooks import sample_event
    from tristage.edges.webhook_verify import sign

    rng = random.Random(tag)
    out = []
    now = time.time()
    for i in range(n):
        msg_id, event = sample_event("clerk", "user.created", now, rng)
        msg_id = f"{msg_id}_{tag}_{i}"
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = sign("clerk", secret, msg_id, int(now), body)
        lines = [
            "POST /.tristage/webhooks/clerk HTTP/1.1",
            f"Host: {HOST}:{port}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        out.append(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return out


async def drive(
    label: str, port: int, requests: list[bytes], concurrency: int, rate: float | None = None
) -> LoadResult:
    """Closed loop (as fast as acknowledged), or paced at `rate` requests/s (open loop:
    latency counts from the scheduled send time, so a stall is not hidden)."""
    result = LoadResult(label, 0.0)
    todo = iter(enumerate(requests))
    start = time.perf_counter()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for k, request in todo:
                t0 = time.perf_counter()
                if rate is not None:
                    t0 = start + k / rate
                    wait = t0 - time.perf_counter()
                    if wait > 0:
                        await asyncio.sleep(wait)
                await exchange(reader, writer, request, result, t0)
        except (OSError, httptools.HttpParserError):
            result.errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - start
    return result


def count(db: Path, status: str) -> int:
    with sqlite3.connect(db, timeout=10) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE status=?", (status,)
        ).fetchone()
        return int(row[0])


def wait_delivered(db: Path, n: int, timeout: float = 300.0) -> float:
    start = time.perf_counter()
    while count(db, "delivered") < n:
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"only {count(db, 'delivered')} of {n} delivered")
        time.sleep(0.02)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5000, help="deliveries per phase")
    parser.add_argument("--concurrency", type=int, default=16, help="client connections")
    parser.add_argument("--serve-gateway", nargs=3, metavar=("HOME", "PORT", "LIVE"))
    parser.add_argument("--serve-app", type=int, metavar="PORT")
    args = parser.parse_args()
    if args.serve_gateway:
        home, port, live = args.serve_gateway
        serve_gateway(home, int(port), live)
        return
    if args.serve_app:
        serve_app(args.serve_app)
        return

    from tristage.api import Tristage

    with tempfile.TemporaryDirectory(prefix="tristage-bench-") as tmp:
        home = Path(tmp) / "home"
        root = Path(tmp) / "bench"
        root.mkdir()
        os.environ["TRISTAGE_MASTER_KEY_FILE"] = str(home / "master.key")
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
        (root / "tristage.toml").write_text(CONFIG)
        api = Tristage(home, actor="bench")
        api.open_project(root)
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        api.variables.set(
            "bench", "CLERK_WEBHOOK_SECRET", secret, environments=["development"], secret=True
        )
        api.close()
        live = Path(tmp) / "live"
        live.write_text("")
        gw_port, app_port = free_port(), free_port()
        env = {**os.environ, "TRISTAGE_MASTER_KEY_FILE": str(home / "master.key")}
        me = str(Path(__file__).resolve())
        gateway = subprocess.Popen(
            [sys.executable, me, "--serve-gateway", str(home), str(gw_port), str(live)], env=env
        )
        app = subprocess.Popen([sys.executable, me, "--serve-app", str(app_port)], env=env)
        try:
            wait_port("127.0.0.1", gw_port)
            wait_port("127.0.0.1", app_port)
            n, c = args.events, args.concurrency
            print(
                f"webhook gateway on 2 cores: {n} signed Clerk deliveries per phase, "
                f"{c} connections"
            )
            warm = signed_requests(secret, 300, gw_port, "warm")
            asyncio.run(drive("warmup", gw_port, warm, c))
            db = home / "state.db"

            batch = signed_requests(secret, n, gw_port, "down")
            down = asyncio.run(drive("app down", gw_port, batch, c))
            print(f"ingest, app down   {down.line()}")
            stored = count(db, "pending")
            print(f"                   stored and waiting: {stored}")

            live.write_text(f"http://127.0.0.1:{app_port}")
            secs = wait_delivered(db, stored + 0)
            fwd_rate = stored / secs
            print(f"forwarding         {fwd_rate:9.0f} deliveries/s ({stored} in {secs:.2f} s)")

            before = count(db, "delivered")
            batch = signed_requests(secret, n, gw_port, "up")
            up = asyncio.run(drive("app up", gw_port, batch, c))
            print(f"ingest, app up     {up.line()}")
            drained = wait_delivered(db, before + n)
            print(f"                   all forwarded {drained:.2f} s after the last ack")

            before = count(db, "delivered")
            batch = signed_requests(secret, n, gw_port, "paced")
            paced = asyncio.run(drive("paced", gw_port, batch, c, rate=GOAL_RPS))
            print(f"paced at {GOAL_RPS:.0f}/s, app up {paced.line()}")
            wait_delivered(db, before + n)

            print()
            for label, r in (("app down", down), ("app up", up), ("paced, app up", paced)):
                print(
                    f"vs goal ({label}): throughput {r.rps / GOAL_RPS:.2f}x of "
                    f"{GOAL_RPS:.0f}/s, p99 {r.p99:.2f} ms = {r.p99 / GOAL_P99_MS:.2f}x of "
                    f"the {GOAL_P99_MS:.0f} ms budget"
                )
        finally:
            for proc in (gateway, app):
                proc.terminate()
            for proc in (gateway, app):
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    main()
