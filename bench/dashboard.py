"""Dashboard pages against the JSON API for the same data, side by side.

    .venv/bin/python bench/dashboard.py [--projects 12] [--events 20000] [--requests 60]

Builds a scratch platform home with `--projects` projects (three environments each) and
`--events` audit events, serves the HTTP API + dashboard app (what `tristage up` serves)
with uvicorn on loopback, signs in with a one-time link, and times each request over
real HTTP (one keep-alive connection, one request at a time):

  overview       GET /projects/P               vs  GET /api/v1/projects/P/environments
  all projects   GET /                         vs  the API call once per project
  audit page     GET /audit (50 a page)        vs  GET /api/v1/audit?limit=50
  audit, older   GET /audit?before=ID          (the page after the first)
  audit, actor   GET /audit?actor=token:ci     (a filter that matches 1 event in --events)
  variables      GET /projects/P/variables     vs  GET /api/v1/projects/P/variables

It prints the median and p95 of each and the ratio to its API baseline (the cost of
rendering HTML, the alerts, rollbacks and rule findings the page adds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import httpx
from _util import percentile


def build_home(home: Path, projects: int, events: int) -> str:
    """The platform home: projects, variables and audit events; returns an admin token."""
    from tristage.api import Role, Tristage

    api = Tristage(home, actor="bench")
    try:
        for i in range(projects):
            repo = home.parent / f"app{i}"
            repo.mkdir()
            subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
            api.init_project(repo, name=f"app{i}")
            for n in range(15):
                api.variables.set(f"app{i}", f"SETTING_{n}", f"value {n}",
                                  environments=["preview"])  # fmt: skip
            api.variables.set(f"app{i}", "STRIPE_SECRET_KEY", "sk_live_bench123456",
                              environments=["preview"], secret=True)  # fmt: skip
        with api.store.transaction():
            for i in range(events):
                api.audit.record(f"bench.e{i % 7}", project=f"app{i % projects}",
                                 environment="preview", target=str(i))  # fmt: skip
        api.audit.record("deploy.promote", project="app0", environment="production",
                         target="x", actor="token:ci")  # fmt: skip
        return api.tokens.create("bench", Role.admin).token
    finally:
        api.close()


class Server:
    def __init__(self, home: Path) -> None:
        from tristage.edges.embedded_server import EmbeddedServer
        from tristage.http.app import build_app

        self.loop = asyncio.new_event_loop()
        self.server = EmbeddedServer(build_app(home), "bench-http", lifespan="on")
        self.port = 0
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.port = self.loop.run_until_complete(self.server.start("127.0.0.1", 0))
        self.ready.set()
        self.loop.run_forever()

    def start(self) -> Server:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def timed(n: int, call: Callable[[], None]) -> tuple[float, float]:
    call()  # warm up
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t) * 1000)
    return percentile(samples, 50), percentile(samples, 95)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--projects", type=int, default=12)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--requests", type=int, default=60)
    args = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="tristage-bench-dashboard-"))
    home = scratch / "home"
    home.mkdir()
    os.environ["TRISTAGE_HOME"] = str(home)
    os.environ["TRISTAGE_MASTER_KEY_FILE"] = str(home / "master.key")
    for k in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        os.environ.setdefault(k, "bench")
    for k in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        os.environ.setdefault(k, "bench@example.invalid")
    t0 = time.perf_counter()
    token = build_home(home, args.projects, args.events)
    print(f"setup: {args.projects} projects, {args.events} audit events "
          f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip
    server = Server(home).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        from tristage.api import Tristage

        owner = Tristage(home, actor="bench")
        code = owner.tokens.sign_in_link()
        owner.close()
        page = httpx.Client(base_url=base, trust_env=False, timeout=30)
        assert page.get("/login/link", params={"code": code}).status_code == 303
        api = httpx.Client(base_url=base, trust_env=False, timeout=30,
                           headers={"authorization": f"Bearer {token}"})  # fmt: skip

        def get(client: httpx.Client, path: str) -> Callable[[], None]:
            def call() -> None:
                r = client.get(path)
                assert r.status_code == 200, (path, r.status_code, r.text[:200])

            return call

        def every_project() -> None:
            for i in range(args.projects):
                get(api, f"/api/v1/projects/app{i}/environments")()

        first = page.get("/audit").text
        before = first.split('<tr data-event="')[50].split('"')[0] if "Older" in first else "1"
        rows = [
            ("overview", get(page, "/projects/app0"),
             get(api, "/api/v1/projects/app0/environments")),
            ("all projects", get(page, "/"), every_project),
            ("audit page", get(page, "/audit"), get(api, "/api/v1/audit?limit=50")),
            ("audit, older", get(page, f"/audit?before={before}"), None),
            ("audit, actor", get(page, "/audit?actor=token:ci"), None),
            ("variables", get(page, "/projects/app0/variables?environment=preview"),
             get(api, "/api/v1/projects/app0/variables?environment=preview")),
        ]  # fmt: skip
        print(f"\n{'page':<14} {'p50 ms':>8} {'p95 ms':>8}   {'API p50':>8} {'API p95':>8}"
              f"   {'p50 ratio':>9}")  # fmt: skip
        for name, dash, baseline in rows:
            p50, p95 = timed(args.requests, dash)
            if baseline is None:
                print(f"{name:<14} {p50:8.1f} {p95:8.1f}")
                continue
            b50, b95 = timed(args.requests, baseline)
            print(f"{name:<14} {p50:8.1f} {p95:8.1f}   {b50:8.1f} {b95:8.1f}   "
                  f"{p50 / b50:8.2f}x")  # fmt: skip
        page.close()
        api.close()
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
