"""Another environment's traffic under a webhook flood: production's latency alone and
while development is flooded with forged 1 MB webhook deliveries, side by side.

    .venv/bin/python bench/webhook_flood.py [--seconds 5] [--flood 100] [--connections 8]

Runs the real `tristage up` (its router process and control plane) on a scratch home:
the test app deployed to production, a Clerk webhook source on development. Production
(`bench.localhost`, a small JSON response) is driven by the closed-loop client of
`_util.load` (keep-alive connections, one request at a time each), first alone, then
while another process keeps `--flood` connections busy sending development's webhook
path deliveries of 1 MB with well-formed Svix headers and a wrong signature, one after
another on each connection. Every forged delivery must be refused (401).

Goal: production's p50 under the flood < 2x its p50 alone (the flood at one environment
must not slow another; 7x was measured before verification left the router's loop).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import secrets
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httptools
from _deployenv import Scratch, deployment_id
from _util import LoadResult, exchange, http_get, load

GOAL_RATIO = 2.0
WEBHOOKS = """
[environments.development.webhooks.clerk]
kind = "clerk"
secret_var = "CLERK_WEBHOOK_SECRET"
path = "/clerk-users-webhook"
"""


def forged(port: int, n: int, size: int = 1_000_000) -> list[bytes]:
    """`n` deliveries of `size` bytes to development's Clerk source, wrongly signed."""
    filler = base64.b64encode(secrets.token_bytes(size * 3 // 4))[: size - 40]
    body = b'{"type":"user.created","data":"' + filler + b'"}'
    out = []
    for i in range(n):
        sig = base64.b64encode(secrets.token_bytes(32)).decode()
        head = (
            f"POST /.tristage/webhooks/clerk HTTP/1.1\r\n"
            f"Host: development.bench.localhost:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"svix-id: msg_forged_{i}\r\nsvix-timestamp: {int(time.time())}\r\n"
            f"svix-signature: v1,{sig}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


def serve_flood(port: int, connections: int) -> None:
    """The flooder, in its own process: forged deliveries on `connections` connections
    until its stdin closes; prints the statuses it got."""
    requests = forged(port, 4)
    result = LoadResult("flood", 0.0)

    async def connection(i: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                result.errors += 1
                await asyncio.sleep(0.05)
                continue
            try:
                while not stop.is_set():
                    await exchange(reader, writer, requests[i % 4], result, time.perf_counter())
            except (OSError, httptools.HttpParserError):
                result.errors += 1  # the router may close a connection it refused
            finally:
                writer.close()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_reader(sys.stdin.fileno(), stop.set)
        tasks = [asyncio.create_task(connection(i, stop)) for i in range(connections)]
        print("flooding", flush=True)
        await asyncio.gather(*tasks)
        print(f"{result.requests} {result.errors} {dict(sorted(result.statuses.items()))}")

    asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--flood", type=int, default=100, help="concurrent forged deliveries")
    ap.add_argument("--connections", type=int, default=8, help="production's load connections")
    ap.add_argument("--serve-flood", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_flood:
        serve_flood(args.serve_flood, args.flood)
        return
    s = Scratch()
    try:
        s.project()
        (s.repo / "tristage.toml").write_text((s.repo / "tristage.toml").read_text() + WEBHOOKS)
        s.commit("webhooks")
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        s.sh(
            sys.executable, "-m", "tristage", "env", "set", "CLERK_WEBHOOK_SECRET", secret,
            "--env", "development", "--secret",
        )  # fmt: skip
        s.up()
        deployment_id(s.push())
        addr = ("127.0.0.1", s.port)
        request = http_get("/", "bench.localhost")
        kw = {"concurrency": args.connections, "seconds": args.seconds, "warmup": 1.0}
        calm = asyncio.run(load("alone", addr, request, **kw))
        flooder = subprocess.Popen(
            [sys.executable, __file__, "--serve-flood", str(s.port), "--flood", str(args.flood)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert flooder.stdout is not None
        flooder.stdout.readline()  # "flooding"
        time.sleep(2.0)  # the flood is on before production is measured
        flooded = asyncio.run(load("flooded", addr, request, **kw))
        out, _ = flooder.communicate("", timeout=60)
        sent, errors, statuses = out.strip().split(" ", 2)
        print(
            f"production, {args.connections} keep-alive connections, {args.seconds:g} s each; "
            f"flood: {args.flood} connections of forged 1 MB deliveries at development"
        )
        print(calm.line())
        print(flooded.line())
        print(f"flood: {sent} forged deliveries answered {statuses}, {errors} connection errors")
        ratio50, ratio99 = flooded.p50 / calm.p50, flooded.p99 / calm.p99
        print(
            f"ratio flooded/alone: p50 {ratio50:.2f}x, p99 {ratio99:.2f}x, throughput "
            f"{flooded.rps / calm.rps:.2f}x (goal: p50 < {GOAL_RATIO:.0f}x)"
        )
    finally:
        s.close()


if __name__ == "__main__":
    main()
