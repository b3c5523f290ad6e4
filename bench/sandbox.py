"""The sandbox's cost, side by side in one run: the same app sandboxed and not.

1. release start until its first 200 (the runtime alone), N starts each;
2. `git push` until the new deployment is live (dependencies cached), through a
   control plane whose runtime is `sandbox` vs one forced `unsandboxed`;
3. req/s through the router to the release of 2.

Goal: start within +200 ms, req/s within 10 %.

    .venv/bin/python bench/sandbox.py [--starts 10] [--pushes 3] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _deployenv import Scratch, deployment_id
from _util import free_port, http_get, load

from tristage.domain.limits import Limits
from tristage.edges.runtime import Mount, ProcessSpec, open_runtime

APP = """\
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b'{"deployment": "%s"}' % os.environ.get("TRISTAGE_DEPLOYMENT", "x").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


def start_to_healthy(runtime_name: str, starts: int, workdir: Path) -> list[float]:
    rt = open_runtime(runtime_name)
    (workdir / "app.py").write_text(APP)
    out = []
    client = httpx.Client(timeout=1.0, trust_env=False)
    for i in range(starts):
        port = free_port()
        spec = ProcessSpec(
            f"bench{i}", (f"{sys.base_prefix}/bin/python3", "app.py"), workdir,
            {"PORT": str(port), "PATH": "/usr/bin:/bin"}, (Mount(workdir),),
            Limits(512 << 20, 1.0, 256), workdir / f"{runtime_name}-{i}.log",
        )  # fmt: skip
        t0 = time.perf_counter()
        handle = rt.start(spec)
        while True:
            try:
                if client.get(f"http://127.0.0.1:{port}/").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.002)
        out.append(time.perf_counter() - t0)
        rt.stop(handle, 2.0)
    return out


def pushes(runtime_name: str, count: int, seconds: float) -> tuple[list[float], float]:
    s = Scratch()
    s.env["TRISTAGE_RUNTIME"] = runtime_name
    try:
        s.project({"requirements.txt": "# standard library only\n"})
        s.up()
        s.push()  # cold: fills the dependency cache
        probe = httpx.Client(timeout=5, trust_env=False)
        times = []
        for i in range(count):
            (s.repo / "note.txt").write_text(f"{runtime_name} {i}\n")
            s.commit(f"change {i}")
            t0 = time.perf_counter()
            dep = deployment_id(s.push())
            r = probe.get(f"http://127.0.0.1:{s.port}/", headers={"Host": "bench.localhost"})
            assert r.json()["deployment"] == dep, r.text
            times.append(time.perf_counter() - t0)
        res = asyncio.run(load(runtime_name, ("127.0.0.1", s.port),
                               http_get("/", "bench.localhost"), seconds=seconds))  # fmt: skip
        print("  " + res.line())
        return times, res.rps
    finally:
        s.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--starts", type=int, default=10)
    ap.add_argument("--pushes", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tristage-bench-") as tmp:
        work = Path(tmp)
        print(f"1. release start until its first 200 ({args.starts} starts each)")
        plain = start_to_healthy("unsandboxed", args.starts, work)
        boxed = start_to_healthy("sandbox", args.starts, work)
        p, b = statistics.median(plain) * 1000, statistics.median(boxed) * 1000
        print(f"  unsandboxed median {p:7.1f} ms   sandbox median {b:7.1f} ms   "
              f"cost {b - p:+.1f} ms (goal: within +200 ms)")  # fmt: skip
    print(f"2./3. push to live (cached, {args.pushes} pushes) and req/s through the router")
    plain_t, plain_rps = pushes("unsandboxed", args.pushes, args.seconds)
    boxed_t, boxed_rps = pushes("sandbox", args.pushes, args.seconds)
    pm, bm = statistics.median(plain_t), statistics.median(boxed_t)
    print(f"  push to live: unsandboxed median {pm:.2f} s   sandbox median {bm:.2f} s   "
          f"ratio {bm / pm:.2f}x")  # fmt: skip
    print(f"  router req/s: unsandboxed {plain_rps:.0f}   sandbox {boxed_rps:.0f}   "
          f"ratio {boxed_rps / plain_rps:.2f} (goal: within 10 %)")  # fmt: skip


if __name__ == "__main__":
    main()
