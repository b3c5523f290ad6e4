"""Deploy time: `git push` until the new deployment is healthy and routed.

A small Python app with a requirements.txt: the first push installs the
dependency cache (cold), the following pushes reuse it (warm). `git push` returns
once the hook has seen the deployment routed; a probe then confirms that the
production host serves the new deployment.

    .venv/bin/python bench/deploy.py [--pushes 8]
"""

from __future__ import annotations

import argparse
import time

import httpx
from _deployenv import Scratch, deployment_id, pct

GOAL_S = 3.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pushes", type=int, default=8)
    args = ap.parse_args()
    s = Scratch()
    try:
        s.project({"requirements.txt": "# standard library only\n"})
        s.up()
        probe = httpx.Client(timeout=5, trust_env=False)

        def timed_push() -> float:
            t0 = time.perf_counter()
            out = s.push()
            dep = deployment_id(out)
            r = probe.get(f"http://127.0.0.1:{s.port}/", headers={"Host": "bench.localhost"})
            if r.json()["deployment"] != dep:
                raise SystemExit(f"{dep} not routed after the push:\n{out}")
            return time.perf_counter() - t0

        cold = timed_push()
        warm: list[float] = []
        for i in range(args.pushes):
            s.commit(f"change {i}")
            warm.append(timed_push())
        print(f"cold push (dependency cache miss): {cold:.2f} s")
        print(
            f"warm pushes (cached deps, n={len(warm)}): p50 {pct(warm, 50):.2f} s  "
            f"max {max(warm):.2f} s"
        )
        print(f"ratio p50 / goal ({GOAL_S:.0f} s): {pct(warm, 50) / GOAL_S:.2f}")
    finally:
        s.close()


if __name__ == "__main__":
    main()
