"""Router overhead: a small response direct from the app vs through the router.

    .venv/bin/python bench/router.py [--seconds 3] [--concurrency 32] [--rounds 2]
                                     [--loop uvloop|asyncio]

Starts a minimal ASGI app under uvicorn (httptools) and the router in two child
processes, then drives both with the same closed-loop client in this process,
alternating direct / routed for each round. Prints requests/s and p50/p99 for
each and the routed/direct ratio (medians over rounds).

Throughput on a shared machine moves with everything else running on it, so the
CPU time each process spent per request (from /proc) is printed too: the router's
cost per request against the app's is the figure that load does not move much.
The router runs on uvloop by default, as `tristage up` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _util import LoadResult, free_port, http_get, load, spawn, wait_port

BODY = b"hello from the app\n"


async def small_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"19")],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


def serve_app(port: int) -> None:
    import uvicorn

    uvicorn.run(
        small_app,
        host="127.0.0.1",
        port=port,
        http="httptools",
        interface="asgi3",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


def serve_router(port: int, upstream_port: int, use_uvloop: bool) -> None:
    from tristage.edges.router import Route, Router, RouteTable

    async def main() -> None:
        table = RouteTable()
        table.replace(
            {"bench.localhost": Route("bench", "production", "d1", ("127.0.0.1", upstream_port))}
        )
        router = Router(table)
        await router.start(host="127.0.0.1", port=port)
        await asyncio.Event().wait()

    if use_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary(label: str, runs: list[LoadResult]) -> tuple[float, float, float]:
    rps = statistics.median(r.rps for r in runs)
    p50 = statistics.median(r.p50 for r in runs)
    p99 = statistics.median(r.p99 for r in runs)
    errors = sum(r.errors for r in runs)
    print(
        f"{label:<10} {rps:>9.0f} req/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   errors {errors}"
    )
    return rps, p50, p99


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--loop", choices=["uvloop", "asyncio"], default="uvloop", help="the router's event loop"
    )
    ap.add_argument("--role", choices=["app", "router"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "app":
        serve_app(args.port)
        return
    if args.role == "router":
        serve_router(args.port, args.upstream, args.loop == "uvloop")
        return

    app_port, router_port = free_port(), free_port()
    me = str(Path(__file__).resolve())
    procs = [spawn(me, "--role", "app", "--port", str(app_port))]
    procs.append(
        spawn(
            me,
            "--role",
            "router",
            "--port",
            str(router_port),
            "--upstream",
            str(app_port),
            "--loop",
            args.loop,
        )
    )
    try:
        wait_port("127.0.0.1", app_port)
        wait_port("127.0.0.1", router_port)
        direct_req = http_get("/", "127.0.0.1")
        routed_req = http_get("/", "bench.localhost")
        direct: list[LoadResult] = []
        routed: list[LoadResult] = []
        print(
            f"small response ({len(BODY)} bytes), {args.concurrency} keep-alive connections, "
            f"{args.seconds:g} s x {args.rounds} rounds each; router loop: "
            f"{args.loop}"
        )
        app_pid, router_pid = procs[0].pid, procs[1].pid
        app_cost: list[float] = []  # app CPU microseconds per request, direct
        router_cost: list[float] = []  # router CPU microseconds per request, routed
        kw = {"concurrency": args.concurrency, "seconds": 0.5, "warmup": 0.0}
        asyncio.run(load("warmup", ("127.0.0.1", app_port), direct_req, **kw))
        asyncio.run(load("warmup", ("127.0.0.1", router_port), routed_req, **kw))
        for i in range(args.rounds):
            kw = {"concurrency": args.concurrency, "seconds": args.seconds, "warmup": 0.0}
            before = cpu_seconds(app_pid)
            direct.append(
                asyncio.run(load(f"direct#{i + 1}", ("127.0.0.1", app_port), direct_req, **kw))
            )
            app_cost.append((cpu_seconds(app_pid) - before) / direct[-1].requests * 1e6)
            print(direct[-1].line())
            before = cpu_seconds(router_pid)
            routed.append(
                asyncio.run(load(f"router#{i + 1}", ("127.0.0.1", router_port), routed_req, **kw))
            )
            router_cost.append((cpu_seconds(router_pid) - before) / routed[-1].requests * 1e6)
            print(routed[-1].line())
        print("-- medians")
        d_rps, d_p50, d_p99 = summary("direct", direct)
        r_rps, r_p50, r_p99 = summary("router", routed)
        a_us, r_us = statistics.median(app_cost), statistics.median(router_cost)
        print(f"CPU per request: app {a_us:.1f} us (direct), router {r_us:.1f} us (routed)")
        print(
            f"ratio router/direct: throughput {r_rps / d_rps:.2f}x, "
            f"p50 {r_p50 / d_p50:.2f}x, p99 {r_p99 / d_p99:.2f}x; "
            f"router CPU per request / app's {r_us / a_us:.2f}x"
        )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)


if __name__ == "__main__":
    main()
