"""Switch latency: 50 promote/rollback cycles under continuous load on production.

Each switch is timed in two parts, on one clock (CLOCK_MONOTONIC, shared by processes):

- **switch latency**: from the start of the promote/rollback call (the Python API call
  that the CLI makes) to the first response served by the new deployment, whichever
  client got it (the load generators, or a probe that asks once the call returned);
- **API call**: the call's own duration (it returns once the router acknowledged the
  new table and the switch is recorded).

One rollback/promote cycle runs untimed first (the calling process imports what a
promote needs on its first one). Every request of the load generators is checked, so
any failed request during a switch is counted. A few switches are also issued through
the CLI (a new interpreter each time) to show what a person typing the command sees.

    .venv/bin/python bench/switch.py [--cycles 50] [--workers 4] [--edge haproxy]
                                     [--rate 250]

With `--edge haproxy` the control plane runs `tristage up --edge haproxy` and the load
and the probe go through HAProxy's HTTP port, which serves the host straight from the
release: a switch is servers made ready and drained through HAProxy's runtime API.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import subprocess
import sys
import time
from typing import Any

import httpx
from _deployenv import Scratch, deployment_id, pct

GOAL_P50_MS = 20.0
GOAL_P99_MS = 50.0


def _load(url: str, host: str, stop: Any, results: Any, rate: float = 0.0) -> None:
    """Requests back to back (or `rate` a second, paced); each change of the deployment
    that answers is noted with the time its response arrived."""
    n, failed = 0, []
    seen: list[tuple[float, str]] = []
    last = None
    next_at = time.monotonic()
    with httpx.Client(timeout=5, trust_env=False) as c:
        while not stop.is_set():
            if rate:  # paced, with no catching up after a stall
                now = time.monotonic()
                if next_at > now:
                    time.sleep(next_at - now)
                next_at = max(next_at, now) + 1 / rate
            try:
                r = c.get(url, headers={"Host": host})
                if r.status_code != 200:
                    failed.append(f"HTTP {r.status_code}")
                else:
                    dep = r.json()["deployment"]
                    if dep != last:
                        seen.append((time.monotonic(), dep))
                        last = dep
            except httpx.HTTPError as exc:
                failed.append(type(exc).__name__)
            n += 1
    results.put((n, failed, seen))


def first_served(seen: list[tuple[float, str]], target: str, since: float) -> float | None:
    """When a response from `target` first arrived at or after `since`."""
    times = [t for t, dep in seen if dep == target and t >= since]
    return min(times) if times else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--edge", choices=["router", "haproxy"], default="router")
    ap.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="requests a second per load process (default: back to back, which takes "
        "more CPU from what is measured the faster the edge is)",
    )
    args = ap.parse_args()
    switches_under_load(args.edge, args.cycles, args.workers, args.rate)


def switches_under_load(edge: str, cycles: int, workers_n: int, rate: float) -> None:
    from _util import free_port

    haproxy = edge == "haproxy"
    http, https = free_port(), free_port()
    s = Scratch()
    try:
        s.project()
        if haproxy:
            s.up("--edge", "haproxy", "--edge-bind", "127.0.0.1", "--http-port", str(http),
                 "--https-port", str(https))  # fmt: skip
        else:
            s.up()
        a = deployment_id(s.push())
        s.commit("second")
        b = deployment_id(s.push())
        from tristage.api import Tristage

        api = Tristage(s.home, actor="bench")
        host = "bench.localhost"
        url = f"http://127.0.0.1:{http if haproxy else s.port}/"
        stop = mp.Event()
        results: mp.Queue[tuple[int, list[str], list[tuple[float, str]]]] = mp.Queue()
        # the load runs in its own processes so it does not share the GIL with the timing
        workers = [
            mp.Process(target=_load, args=(url, host, stop, results, rate), daemon=True)
            for _ in range(workers_n)
        ]
        for w in workers:
            w.start()
        probe = httpx.Client(timeout=5, trust_env=False)

        def serves() -> str:
            return str(probe.get(url, headers={"Host": host}).json()["deployment"])

        # (target, call started, call returned, the probe's first response from target)
        switches: list[tuple[str, float, float, float]] = []

        def switch(action: str, target: str) -> None:
            t0 = time.monotonic()
            if action == "rollback":
                api.deploys.rollback("bench")
            else:
                api.deploys.promote("bench", target)
            t1 = time.monotonic()
            while serves() != target:
                pass
            switches.append((target, t0, t1, time.monotonic()))

        # one untimed cycle first (a fresh process's first promote imports the
        # preflight's modules)
        switch("rollback", a)
        switch("promote", b)
        del switches[:]
        began = time.monotonic()
        for _ in range(cycles):
            switch("rollback", a)
            switch("promote", b)
        elapsed = time.monotonic() - began
        cli: list[float] = []
        for i in range(0 if haproxy else 4):
            target = a if i % 2 == 0 else b
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "tristage", "rollback", "--to", target],
                cwd=s.repo,
                env=s.env,
                check=True,
                capture_output=True,
            )
            while serves() != target:
                pass
            cli.append((time.perf_counter() - t0) * 1000)
        stop.set()
        requests, failures = 0, []
        seen: list[tuple[float, str]] = []
        for _ in workers:
            n, failed, changes = results.get(timeout=30)
            requests += n
            failures.extend(failed)
            seen.extend(changes)
        for w in workers:
            w.join()
        # from the call to the first response of the new deployment, by any client (the
        # probe's own answer when it came first)
        latencies, calls = [], []
        for target, t0, t1, probed in switches:
            first = first_served(seen, target, t0)
            latencies.append((min(probed, first or probed) - t0) * 1000)
            calls.append((t1 - t0) * 1000)
        p50, p99 = pct(latencies, 50), pct(latencies, 99)
        if haproxy:
            print("edge:              haproxy (runtime API switch, straight to the release)")
        print(f"switches:          {len(latencies)} ({cycles} rollback/promote cycles)")
        print(
            f"switch latency:    p50 {p50:.1f} ms   p99 {p99:.1f} ms   max {max(latencies):.1f} ms"
            "  (call start to the first response from the new deployment)"
        )
        print(
            f"API call:          p50 {pct(calls, 50):.1f} ms   p99 {pct(calls, 99):.1f} ms   "
            f"max {max(calls):.1f} ms  (promote/rollback call, start to return)"
        )
        if cli:
            print(f"via the CLI:       p50 {pct(cli, 50):.0f} ms (includes interpreter start)")
        took = [
            float(line.rsplit("; ", 1)[1].split(" ms")[0])
            for line in (s.dir / "up.log").read_text().splitlines()
            if "production now serves" in line and "; " in line
        ]
        if took:
            serving = " with HAProxy serving it" if haproxy else ""
            print(
                f"control plane:     p50 {pct(took, 50):.1f} ms   p99 {pct(took, 99):.1f} ms "
                f"(its reconcile, read to recorded{serving}, from its log)"
            )
        load = f"load requests:     {requests} from {workers_n} client processes"
        if haproxy:
            from tristage.edges.haproxy.runtime_api import stat_rows
            from tristage.paths import socket_path

            direct = sum(
                int(r["hrsp_2xx"] or 0)
                for r in stat_rows(socket_path(s.home / "edge" / "haproxy" / "admin.sock"))
                if r["pxname"].startswith("be_h") and r["svname"] not in ("FRONTEND", "BACKEND")
            )
            load += f"; HAProxy's servers of now answered {direct} of them"
        print(f"{load} ({elapsed:.1f} s of switching, then the CLI's)" if cli else
              f"{load} ({elapsed:.1f} s of switching)")  # fmt: skip
        print(f"failed requests:   {len(failures)} {sorted(set(failures))[:5]}")
        print(
            f"ratio to goal: p50 / {GOAL_P50_MS:.0f} ms {p50 / GOAL_P50_MS:.2f}, "
            f"p99 / {GOAL_P99_MS:.0f} ms {p99 / GOAL_P99_MS:.2f}"
        )
    finally:
        s.close()


if __name__ == "__main__":
    main()
