"""Cost of one monitor tick inside the control plane, against its 1 s budget.

    .venv/bin/python bench/monitor.py [--deployments 60] [--ticks 200]

A real state store in a temporary home holds projects of three environments each,
every environment with a live deployment and an alias history. Each tick does what
the control plane's monitor does every second: take the router's counters (synthetic
here, every deployment serving traffic, so every sample is written), store the changed
samples, and judge every live deployment (window, rollback and alert rules, the store
queries they need). Prints the tick time (median, p99, max) and its share of the budget.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from tristage.api import Tristage
from tristage.edges.router.stats import DeploymentStats
from tristage.services.monitor import Monitor

BUDGET_MS = 1000.0


def setup(home: Path, projects: int) -> tuple[Tristage, list[str]]:
    api = Tristage(home, actor="bench")
    deps: list[str] = []
    now = time.time()
    for p in range(projects):
        root = home / f"app{p}"
        root.mkdir()
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        name = api.init_project(root, name=f"app{p}").project
        for e, env in enumerate(api.config_for(name).environments):
            for k in range(2):  # a previous and a live deployment per environment
                dep = f"{p % 10}{e}{k}b{p:04d}"
                api.store.execute(
                    "INSERT INTO deployments (id, seq, project, environment, branch, commit_sha,"
                    " trigger, status, created_at, updated_at, ready_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (dep, len(deps) + 1, name, env, "main", "0" * 40, "push", "ready",
                     now, now, now),
                )  # fmt: skip
                api.store.execute(
                    "INSERT INTO alias_history (project, environment, deployment, at)"
                    " VALUES (?,?,?,?)",
                    (name, env, dep, now - 60 + k),
                )
                deps.append(dep)
            api.store.execute(
                "INSERT INTO aliases (project, environment, desired, routed, desired_at,"
                " routed_at) VALUES (?,?,?,?,?,?)",
                (name, env, deps[-1], deps[-1], now, now - 59),
            )
    return api, deps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deployments", type=int, default=60, help="live deployments")
    parser.add_argument("--ticks", type=int, default=200)
    args = parser.parse_args()
    projects = max(1, args.deployments // 3)
    with tempfile.TemporaryDirectory() as tmp:
        api, deps = setup(Path(tmp), projects)
        live = deps[1::2]
        counts = dict.fromkeys(deps, 0)

        def stats() -> dict[str, DeploymentStats]:
            for dep in live:
                counts[dep] += 25
            return {
                dep: DeploymentStats(dep, n, n, 0, 0, 0, 0, 2.1, 9.8, time.time())
                for dep, n in counts.items()
            }

        monitor = Monitor(api, stats, log=lambda line: None, tick=1.0)
        times: list[float] = []
        for _ in range(args.ticks):
            t0 = time.perf_counter()
            now = time.time()
            monitor.sample(now)
            monitor.evaluate(now)
            times.append((time.perf_counter() - t0) * 1000)
        rows = api.store.query_one("SELECT COUNT(*) AS n FROM metric_samples")
        api.close()
    times.sort()
    median = statistics.median(times)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"{len(live)} live deployments in {projects} projects, {args.ticks} ticks, "
          f"{rows['n'] if rows else 0} samples written")  # fmt: skip
    print(f"tick: median {median:.2f} ms, p99 {p99:.2f} ms, max {times[-1]:.2f} ms")
    print(f"share of the {BUDGET_MS:.0f} ms tick budget: median {median / BUDGET_MS:.2%}, "
          f"p99 {p99 / BUDGET_MS:.2%}")  # fmt: skip


if __name__ == "__main__":
    main()
