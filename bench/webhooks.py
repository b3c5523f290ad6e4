"""Webhook gateway against a floor: verified, durably stored ingest, side by side.

    .venv/bin/python bench/webhooks.py [--events 3000] [--backlog 50000]

Starts, as child processes, one at a time on the same cores:
  - the gateway: the router with the webhook ingest app and the forwarder (what
    `tristage up` runs), five environments each with a Clerk source;
  - the floor: a minimal Starlette endpoint (uvicorn, httptools) that verifies the same
    Svix signature with `standardwebhooks` and commits each delivery to SQLite in WAL
    mode with the same durability (synchronous=NORMAL), de-duplicated by message id;
  - a minimal app under uvicorn that the forwarder posts to.
This process drives both with distinct, correctly signed Clerk `user.created`
deliveries (~2 KB bodies) over keep-alive connections, one request at a time per
connection, and measures each time-to-acknowledge (a 200 comes only after the commit).

Phases, each measured on the floor and on the gateway in turn:
  1, 16, 64 connections   the app down (deliveries wait in the store)
  forwarding              16 connections while the forwarder posts every delivery to the app
  backlog                 16 connections with 50,000 deliveries pending in the store
  five environments       4 connections to each of four environments, then again while a
                          fifth is flooded with forged 1 MB deliveries (the others' p99)

Goals: throughput >= 1.0x the floor's and p99 <= 1.0x the floor's in every phase; the
flooded phase's p99 < 2x the same environments' unflooded p99.
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
from _util import LoadResult, exchange, free_port, percentile, wait_port

ENVIRONMENTS = ("development", "e1", "e2", "e3", "e4")
FLOODED = "e4"
SOURCE_PATH = "/.tristage/webhooks/clerk"


def host(environment: str) -> str:
    return f"{environment}.bench.localhost"


CONFIG = """
[project]
name = "bench"
""" + "".join(
    f"""
[environments.{e}]
tier = "{"development" if e == "development" else "preview"}"
branches = ["{e}"]

[environments.{e}.webhooks.clerk]
kind = "clerk"
secret_var = "CLERK_WEBHOOK_SECRET"
path = "/clerk-users-webhook"
"""
    for e in ENVIRONMENTS
)


# ---------------------------------------------------------------------------
# child processes


def serve_gateway(home: str, port: int, live_file: str) -> None:
    import logging

    from tristage.api import Tristage
    from tristage.edges.router import Route, Router, RouteTable
    from tristage.http.internal import build_internal_app

    logging.getLogger("tristage.webhooks").setLevel(logging.CRITICAL)  # refusals: counted

    async def main() -> None:
        api = Tristage(Path(home))
        table = RouteTable({host(e): Route("bench", e, None, None) for e in ENVIRONMENTS})
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


def serve_floor(db: str, port: int, secret: str) -> None:
    """The floor: verify with standardwebhooks, one commit per delivery, WAL, NORMAL."""
    import uvicorn
    from standardwebhooks import Webhook, WebhookVerificationError
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS deliveries (id INTEGER PRIMARY KEY, message_id TEXT"
        " NOT NULL UNIQUE, received_at REAL NOT NULL, headers TEXT NOT NULL, body BLOB"
        " NOT NULL)"
    )
    hook = Webhook(secret)

    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        h = request.headers
        headers = {
            "webhook-id": h.get("svix-id", ""),
            "webhook-timestamp": h.get("svix-timestamp", ""),
            "webhook-signature": h.get("svix-signature", ""),
        }
        try:
            hook.verify(body, headers)
        except WebhookVerificationError:
            return JSONResponse({"ok": False}, status_code=401)
        conn.execute(
            "INSERT INTO deliveries (message_id, received_at, headers, body) VALUES (?,?,?,?)"
            " ON CONFLICT (message_id) DO NOTHING",
            (headers["webhook-id"], time.time(), json.dumps(headers), body),
        )
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route(SOURCE_PATH, receive, methods=["POST"])])
    uvicorn.run(
        app, host="127.0.0.1", port=port, log_level="warning", http="httptools", lifespan="off"
    )


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


def signed_requests(
    secret: str, n: int, port: int, tag: str, environment: str = "development"
) -> list[bytes]:
    from tristage.domain.webhooks import sample_event
    from tristage.edges.webhook_verify import sign

    rng = random.Random(tag)
    out = []
    now = time.time()
    for i in range(n):
        msg_id, event = sample_event("clerk", "user.created", now, rng)
        msg_id = f"{msg_id}_{tag}_{i}"
        body = json.dumps(event, separators=(",", ":")).encode()
        out.append(_request(port, environment, body, sign("clerk", secret, msg_id, int(now), body)))
    return out


def forged_requests(n: int, port: int, environment: str, size: int = 1_000_000) -> list[bytes]:
    """1 MB bodies with well-formed Svix headers whose signature is wrong."""
    filler = base64.b64encode(secrets.token_bytes(size * 3 // 4))[: size - 40]
    body = b'{"type":"user.created","data":"' + filler + b'"}'
    now = int(time.time())
    out = []
    for i in range(n):
        sig = base64.b64encode(secrets.token_bytes(32)).decode()
        headers = {"svix-id": f"msg_forged_{i}", "svix-timestamp": str(now),
                   "svix-signature": f"v1,{sig}"}  # fmt: skip
        out.append(_request(port, environment, body, headers))
    return out


def _request(port: int, environment: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        f"POST {SOURCE_PATH} HTTP/1.1",
        f"Host: {host(environment)}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


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


async def flood(port: int, requests: list[bytes], concurrency: int, stop: asyncio.Event) -> int:
    """Forged requests in a loop on `concurrency` connections until `stop`."""
    sent = 0

    async def connection() -> None:
        nonlocal sent
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.01)
                continue
            try:
                while not stop.is_set():
                    scratch = LoadResult("flood", 0.0)
                    await exchange(reader, writer, random.choice(requests), scratch, 0.0)
                    sent += 1
            except (OSError, httptools.HttpParserError):
                pass
            finally:
                writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return sent


def serve_flood(port: int) -> None:
    """A flooder in its own process (so its 1 MB writes do not slow the measuring
    client): forged requests on 8 connections until SIGTERM; prints how many."""
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        sent = await flood(port, forged_requests(4, port, FLOODED), 8, stop)
        print(sent, flush=True)

    asyncio.run(main())


async def environments_phase(
    port: int, secret: str, n: int, flooded: bool
) -> tuple[dict[str, LoadResult], int]:
    """4 connections to each of four environments; optionally a flood at the fifth."""
    quiet = [e for e in ENVIRONMENTS if e != FLOODED]
    tag = "flooded" if flooded else "calm"
    batches = {e: signed_requests(secret, n // 4, port, f"{tag}-{e}", e) for e in quiet}
    flooder = None
    if flooded:
        me = str(Path(__file__).resolve())
        flooder = subprocess.Popen(
            [sys.executable, me, "--serve-flood", str(port)], stdout=subprocess.PIPE, text=True
        )
        await asyncio.sleep(3.0)  # the flood is on before the measured traffic starts
    results = await asyncio.gather(*(drive(e, port, batches[e], 4) for e in quiet))
    sent = 0
    if flooder is not None:
        flooder.terminate()
        out, _ = flooder.communicate(timeout=30)
        sent = int(out.strip() or 0)
    return dict(zip(quiet, results, strict=True)), sent


def count(db: Path, status: str) -> int:
    with sqlite3.connect(db, timeout=10) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM webhook_deliveries WHERE status=?", (status,)
        ).fetchone()
        return int(row[0])


def wait_delivered(db: Path, n: int, timeout: float = 600.0) -> float:
    start = time.perf_counter()
    while count(db, "delivered") < n:
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"only {count(db, 'delivered')} of {n} delivered")
        time.sleep(0.02)
    return time.perf_counter() - start


def fill_gateway_backlog(db: Path, n: int) -> None:
    """`n` pending deliveries, as ingest stores them (sealed bodies of the usual size)."""
    now = time.time()
    body = secrets.token_bytes(2100)
    with sqlite3.connect(db, timeout=30) as conn:
        conn.executemany(
            "INSERT INTO webhook_deliveries (id, project, environment, source, kind,"
            " message_id, event_type, received_at, headers, body, size, path, status,"
            " next_attempt_at, sealed) VALUES (?, 'bench', 'development', 'clerk', 'clerk',"
            " ?, 'user.created', ?, '{}', ?, 2072, '/clerk-users-webhook', 'pending', ?, 1)",
            ((f"whd_backlog{i}", f"msg_backlog{i}", now, body, now) for i in range(n)),
        )


def fill_floor_backlog(db: Path, n: int) -> None:
    now = time.time()
    body = secrets.token_bytes(2072)
    with sqlite3.connect(db, timeout=30) as conn:
        conn.executemany(
            "INSERT INTO deliveries (message_id, received_at, headers, body) VALUES (?,?,?,?)",
            ((f"msg_backlog{i}", now, "{}", body) for i in range(n)),
        )


def side_by_side(label: str, floor: LoadResult, gw: LoadResult) -> str:
    line = (
        f"{label:<22} floor {floor.rps:6.0f}/s p50 {floor.p50:5.2f} p99 {floor.p99:6.2f} ms"
        f" | gateway {gw.rps:6.0f}/s p50 {gw.p50:5.2f} p99 {gw.p99:6.2f} ms"
        f" | throughput {gw.rps / floor.rps:4.2f}x, p99 {gw.p99 / floor.p99:4.2f}x"
    )
    if floor.errors or gw.errors:
        line += f"  (errors {floor.errors}/{gw.errors})"
    if set(gw.statuses) - {200}:
        line += f"  statuses {dict(sorted(gw.statuses.items()))}"
    return line


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def merge(into: LoadResult, r: LoadResult) -> None:
    into.seconds += r.seconds
    into.latencies_ms += r.latencies_ms
    into.errors += r.errors
    for k, v in r.statuses.items():
        into.statuses[k] = into.statuses.get(k, 0) + v


def report(rows: dict[str, tuple[LoadResult, LoadResult]]) -> None:
    if not rows:
        return
    worst_t = min(g.rps / f.rps for f, g in rows.values())
    worst_p = max(g.p99 / f.p99 for f, g in rows.values())
    print(
        f"\nagainst the floor: worst throughput {worst_t:.2f}x (goal >= 1.0x), "
        f"worst p99 {worst_p:.2f}x (goal <= 1.0x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=3000, help="deliveries per phase")
    parser.add_argument("--backlog", type=int, default=50_000, help="pending deliveries")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per phase")
    parser.add_argument(
        "--phases",
        default="1,16,64,forwarding,backlog,environments",
        help="a comma-separated subset of the phases",
    )
    parser.add_argument("--serve-gateway", nargs=3, metavar=("HOME", "PORT", "LIVE"))
    parser.add_argument("--serve-floor", nargs=3, metavar=("DB", "PORT", "SECRET"))
    parser.add_argument("--serve-app", type=int, metavar="PORT")
    parser.add_argument("--serve-flood", type=int, metavar="PORT")
    args = parser.parse_args()
    if args.serve_gateway:
        home, port, live = args.serve_gateway
        serve_gateway(home, int(port), live)
        return
    if args.serve_floor:
        db, port, secret = args.serve_floor
        serve_floor(db, int(port), secret)
        return
    if args.serve_app:
        serve_app(args.serve_app)
        return
    if args.serve_flood:
        serve_flood(args.serve_flood)
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
            "bench", "CLERK_WEBHOOK_SECRET", secret, environments=list(ENVIRONMENTS), secret=True
        )
        api.close()
        live = Path(tmp) / "live"
        live.write_text("")
        floor_db = Path(tmp) / "floor.db"
        gw_port, floor_port, app_port = free_port(), free_port(), free_port()
        env = {**os.environ, "TRISTAGE_MASTER_KEY_FILE": str(home / "master.key")}
        me = str(Path(__file__).resolve())
        gateway = subprocess.Popen(
            [sys.executable, me, "--serve-gateway", str(home), str(gw_port), str(live)], env=env
        )
        floor = subprocess.Popen(
            [sys.executable, me, "--serve-floor", str(floor_db), str(floor_port), secret], env=env
        )
        app = subprocess.Popen([sys.executable, me, "--serve-app", str(app_port)], env=env)
        procs = (gateway, floor, app)
        try:
            for p in (gw_port, floor_port, app_port):
                wait_port("127.0.0.1", p, timeout=120.0)
            n = args.events
            print(
                f"webhook ingest, {n} signed Clerk deliveries per phase and server, "
                f"{os.cpu_count()} cores; floor = Starlette + standardwebhooks + SQLite WAL"
            )
            db = home / "state.db"
            for port in (floor_port, gw_port):
                asyncio.run(drive("warmup", port, signed_requests(secret, 300, port, "w"), 16))

            def pair(label: str, c: int) -> tuple[LoadResult, LoadResult]:
                """Floor and gateway in turn, in `rounds` alternating rounds (the machine
                is shared: a burst of someone else's load hits both alike), with the CPU
                time each server process spent per request."""
                f, g = LoadResult("floor", 0.0), LoadResult("gateway", 0.0)
                cpu = {"floor": 0.0, "gateway": 0.0}
                for k in range(args.rounds):
                    order = ((f, floor_port, floor.pid), (g, gw_port, gateway.pid))
                    for into, port, pid in order if k % 2 == 0 else order[::-1]:
                        reqs = signed_requests(secret, n // args.rounds, port, f"{label}{k}")
                        before = cpu_seconds(pid)
                        r = asyncio.run(drive(into.label, port, reqs, c))
                        cpu[into.label] += cpu_seconds(pid) - before
                        merge(into, r)
                print(side_by_side(label, f, g), flush=True)
                fc, gc = (
                    cpu[x] / max(1, r.requests) * 1e6 for x, r in (("floor", f), ("gateway", g))
                )
                print(
                    f"{'':<22} CPU per request: floor {fc:.0f} us, gateway {gc:.0f} us "
                    f"(including its forwarder) = {gc / fc:.2f}x",
                    flush=True,
                )
                return f, g

            phases = set(args.phases.split(","))
            rows: dict[str, tuple[LoadResult, LoadResult]] = {}
            for c in (1, 16, 64):
                if str(c) in phases:
                    rows[f"{c} conn, app down"] = pair(f"{c} conn, app down", c)

            if "forwarding" in phases:
                # forwarding running: the release goes live, the waiting ones drain first
                waiting = count(db, "pending")
                live.write_text(f"http://127.0.0.1:{app_port}")
                secs = wait_delivered(db, waiting)
                rate = waiting / secs if secs else 0.0
                print(f"{'forwarding':<22} {rate:7.0f} deliveries/s ({waiting} in {secs:.2f} s)")
                before = count(db, "delivered")
                rows["16 conn, forwarding"] = pair("16 conn, forwarding", 16)
                drained = wait_delivered(db, before + n)
                print(f"{'':<22} all forwarded {drained:.2f} s after the last ack")
                live.write_text("")
                time.sleep(0.3)  # the forwarder's live-release cache lapses

            if "backlog" in phases:
                fill_gateway_backlog(db, args.backlog)
                fill_floor_backlog(floor_db, args.backlog)
                print(f"{'':<22} {count(db, 'pending')} deliveries pending")
                label = f"16 conn, {args.backlog // 1000}k pending"
                rows[label] = pair(label, 16)
            if "environments" not in phases:
                report(rows)
                return
            calm, _ = asyncio.run(environments_phase(gw_port, secret, n, flooded=False))
            hit, forged = asyncio.run(environments_phase(gw_port, secret, n, flooded=True))
            calm_p99 = percentile([x for r in calm.values() for x in r.latencies_ms], 99)
            hit_p99 = percentile([x for r in hit.values() for x in r.latencies_ms], 99)
            errors = sum(r.errors for r in hit.values())
            statuses: dict[int, int] = {}
            for r in hit.values():
                for k, v in r.statuses.items():
                    statuses[k] = statuses.get(k, 0) + v
            print(
                f"{'5 environments':<22} 4 quiet ones at 4 conn each: p99 {calm_p99:.2f} ms; "
                f"with {FLOODED} flooded ({forged} forged 1 MB requests sent): "
                f"p99 {hit_p99:.2f} ms "
                f"= {hit_p99 / calm_p99:.2f}x (goal < 2x); statuses {statuses}, errors {errors}"
            )
            report(rows)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    main()
