"""Switch latency: 50 promote/rollback cycles under continuous load on production.

Latency is measured from the command being issued (the Python API call that the
CLI makes) to the first request that the target answers; every request of the
load generator is checked, so any failed request during a switch is counted.
A few switches are also issued through the CLI (a new interpreter each time) to
show what a person typing the command sees.

    .venv/bin/python bench/switch.py [--cycles 50] [--workers 4]
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


def _load(url: str, host: str, stop: Any, results: Any) -> None:
    n, failed = 0, []
    with httpx.Client(timeout=5, trust_env=False) as c:
        while not stop.is_set():
            try:
                r = c.get(url, headers={"Host": host})
                if r.status_code != 200:
                    failed.append(f"HTTP {r.status_code}")
            except httpx.HTTPError as exc:
                failed.append(type(exc).__name__)
            n += 1
    results.put((n, failed))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    s = Scratch()
    try:
        s.project()
        s.up()
        a = deployment_id(s.push())
        s.commit("second")
        b = deployment_id(s.push())
        from tristage.api import Tristage

        api = Tristage(s.home, actor="bench")
        host = "bench.localhost"
        url = f"http://127.0.0.1:{s.port}/"
        stop = mp.Event()
        results: mp.Queue[tuple[int, list[str]]] = mp.Queue()
        # the load runs in its own processes so it does not share the GIL with the timing
        workers = [
            mp.Process(target=_load, args=(url, host, stop, results), daemon=True)
            for _ in range(args.workers)
        ]
        for w in workers:
            w.start()
        probe = httpx.Client(timeout=5, trust_env=False)

        def switch(action: str, target: str) -> float:
            t0 = time.perf_counter()
            if action == "rollback":
                api.deploys.rollback("bench")
            else:
                api.deploys.promote("bench", target)
            while probe.get(url, headers={"Host": host}).json()["deployment"] != target:
                pass
            return (time.perf_counter() - t0) * 1000

        latencies: list[float] = []
        for _ in range(args.cycles):
            latencies.append(switch("rollback", a))
            latencies.append(switch("promote", b))
        cli: list[float] = []
        for i in range(4):
            target = a if i % 2 == 0 else b
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "tristage", "rollback", "--to", target],
                cwd=s.repo,
                env=s.env,
                check=True,
                capture_output=True,
            )
            while probe.get(url, headers={"Host": host}).json()["deployment"] != target:
                pass
            cli.append((time.perf_counter() - t0) * 1000)
        stop.set()
        counts = {"requests": 0, "failed": 0}
        failures: list[str] = []
        for _ in workers:
            n, failed = results.get(timeout=30)
            counts["requests"] += n
            counts["failed"] += len(failed)
            failures.extend(failed)
        for w in workers:
            w.join()
        p50, p99 = pct(latencies, 50), pct(latencies, 99)
        print(f"switches:          {len(latencies)} ({args.cycles} rollback/promote cycles)")
        print(
            f"switch latency:    p50 {p50:.1f} ms   p99 {p99:.1f} ms   max {max(latencies):.1f} ms"
        )
        print(f"via the CLI:       p50 {pct(cli, 50):.0f} ms (includes interpreter start)")
        print(f"load requests:     {counts['requests']} from {args.workers} client processes")
        print(f"failed requests:   {counts['failed']} {sorted(set(failures))[:5]}")
        print(
            f"ratio to goal: p50 / {GOAL_P50_MS:.0f} ms {p50 / GOAL_P50_MS:.2f}, "
            f"p99 / {GOAL_P99_MS:.0f} ms {p99 / GOAL_P99_MS:.2f}"
        )
    finally:
        s.close()


if __name__ == "__main__":
    main()
