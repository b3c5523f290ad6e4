"""Control-plane start: `tristage up` until it serves (its `controlplane.json` written,
what the "Control plane" step of `tristage quickstart` waits for), and the first push
after it (the test suite's reference app, no dependencies: `git push` until it returns,
the deployment live), pushed at once (while the data stores are still imported in the
background) or `--wait` seconds later (after). A fresh platform home for each run.

    .venv/bin/python bench/controlplane_start.py [--runs 3] [--wait 5]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import time

from _deployenv import Scratch

from tristage.services.front_door import stop_router_process


def one(wait: float) -> tuple[float, float]:
    """(seconds until the control plane serves, seconds of the first push)."""
    s = Scratch()
    try:
        s.project()
        t0 = time.monotonic()
        s.up()
        serving = time.monotonic() - t0
        time.sleep(wait)
        t1 = time.monotonic()
        s.push()
        return serving, time.monotonic() - t1
    finally:
        if s.proc is not None:
            s.proc.send_signal(signal.SIGINT)
            s.proc.wait(30)
        stop_router_process(s.home)  # the router process outlives the control plane
        s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--wait", type=float, default=5.0, help="seconds before the later push")
    args = ap.parse_args()
    for label, wait in (("at once", 0.0), (f"after {args.wait:g} s", args.wait)):
        runs = [one(wait) for _ in range(args.runs)]
        start = [r[0] for r in runs]
        push = [r[1] for r in runs]
        print(
            f"first push {label:>10}: start to serving median {statistics.median(start):.2f} s "
            f"(min {min(start):.2f}), first push median {statistics.median(push):.2f} s "
            f"(min {min(push):.2f}, max {max(push):.2f}), {args.runs} runs",
            flush=True,
        )


if __name__ == "__main__":
    main()
