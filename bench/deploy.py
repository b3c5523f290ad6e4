"""Deploy time: `git push` until the new deployment is healthy and routed, against the
floor (the same steps run by hand), and router throughput with 1 and 2 web replicas.

Apps: `stdlib` (the test suite's reference app, no dependencies) and `flask` (flask,
sqlalchemy, requests, pydantic and gunicorn from PyPI, served by `gunicorn`). The first
push installs the dependency cache (cold), the following pushes reuse it (cached).
The floor is what a person would run for one release: `git archive` of the commit,
`uv venv` + `uv pip install -r requirements.txt` (with a warm uv cache for the cached
floor), and starting the web command until its health path answers.

    .venv/bin/python bench/deploy.py [--app stdlib|flask] [--pushes 5] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _deployenv import Scratch, deployment_id, pct

GOAL_S = 3.0
FLASK_APP = """\
import os
from flask import Flask, jsonify
import sqlalchemy, requests, pydantic  # noqa: F401  (imported like a real app does)

app = Flask(__name__)

@app.get("/health")
def health():
    return "ok"

@app.get("/")
def index():
    return jsonify(deployment=os.environ.get("TRISTAGE_DEPLOYMENT"),
                   process=os.environ.get("TRISTAGE_PROCESS"))
"""
FLASK_REQS = "flask\nsqlalchemy\nrequests\npydantic\ngunicorn\n"
UV = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))


def files_for(app: str) -> dict[str, str]:
    if app == "flask":
        return {"requirements.txt": FLASK_REQS, "wsgi.py": FLASK_APP,
                "Procfile": "web: gunicorn -w 2 -b 127.0.0.1:$PORT wsgi:app\n"}  # fmt: skip
    return {"requirements.txt": "# standard library only\n"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def floor(s: Scratch, app: str, uv_cache: Path) -> dict[str, float]:
    """The steps of one release by hand, each timed (seconds)."""
    work = Path(tempfile.mkdtemp(prefix="tristage-floor-"))
    out: dict[str, float] = {}
    try:
        t = time.perf_counter()
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=s.repo, capture_output=True,
                                 check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
        out["archive"] = time.perf_counter() - t
        env = {**os.environ, "UV_CACHE_DIR": str(uv_cache)}
        t = time.perf_counter()
        subprocess.run([UV, "venv", "-q", "--python", sys.executable, str(work / ".venv")],
                       check=True, env=env)  # fmt: skip
        if app == "flask":
            subprocess.run([UV, "pip", "install", "-q", "--python", str(work / ".venv/bin/python"),
                            "-r", str(work / "requirements.txt")], check=True, env=env)  # fmt: skip
        out["venv + install"] = time.perf_counter() - t
        port = free_port()
        cmd = (f"{work}/.venv/bin/gunicorn -w 2 -b 127.0.0.1:{port} wsgi:app" if app == "flask"
               else f"{work}/.venv/bin/python app.py")  # fmt: skip
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, shell=True, cwd=work, env={**env, "PORT": str(port)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
        try:
            with httpx.Client(timeout=1, trust_env=False) as c:
                while True:
                    try:
                        if c.get(f"http://127.0.0.1:{port}/health").status_code < 400:
                            break
                    except httpx.HTTPError:
                        time.sleep(0.01)
            out["start to healthy"] = time.perf_counter() - t
        finally:
            os.killpg(proc.pid, 9)
            proc.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["total"] = sum(out.values())
    return out


def wrk(port: int, seconds: float) -> float:
    r = subprocess.run(["wrk", "-t2", "-c32", f"-d{seconds:g}s", "-H", "Host: bench.localhost",
                        f"http://127.0.0.1:{port}/"], capture_output=True, text=True)  # fmt: skip
    m = re.search(r"Requests/sec:\s+([\d.]+)", r.stdout)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", r.stdout)
    if errors:
        print(f"  wrk: {errors.group(0)}")
    return float(m.group(1)) if m else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--app", choices=("stdlib", "flask"), default="stdlib")
    ap.add_argument("--pushes", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    s = Scratch()
    try:
        s.project(files_for(args.app))
        s.up()
        probe = httpx.Client(timeout=5, trust_env=False)

        def timed_push() -> float:
            t0 = time.perf_counter()
            out = s.push()
            dep = deployment_id(out)
            r = probe.get(f"http://127.0.0.1:{s.port}/", headers={"Host": "bench.localhost"})
            if r.status_code != 200 or r.json()["deployment"] != dep:
                raise SystemExit(f"{dep} not routed after the push:\n{out}")
            return time.perf_counter() - t0

        cold = timed_push()
        cached: list[float] = []
        for i in range(args.pushes):
            s.commit(f"change {i}")
            cached.append(timed_push())
        uv_cache = s.dir / "uv-cache"
        cold_floor = floor(s, args.app, uv_cache)
        warm_floor = [floor(s, args.app, uv_cache) for _ in range(3)]
        warm = sorted(warm_floor, key=lambda f: f["total"])[1]
        print(f"app: {args.app}")
        print(f"cold push (dependency cache miss): {cold:.2f} s; "
              f"hand-run floor {cold_floor['total']:.2f} s")  # fmt: skip
        print(f"cached pushes (n={len(cached)}): p50 {pct(cached, 50):.2f} s  "
              f"max {max(cached):.2f} s")  # fmt: skip
        print("cached floor: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in warm.items()))
        print(f"cached push - floor: {pct(cached, 50) - warm['total']:.2f} s (goal <= 0.3 s); "
              f"ratio {pct(cached, 50) / warm['total']:.1f}x")  # fmt: skip
        print(f"ratio cached p50 / goal ({GOAL_S:.0f} s): {pct(cached, 50) / GOAL_S:.2f}")
        one = wrk(s.port, args.seconds)
        s.sh(sys.executable, "-m", "tristage", "scale", "web=2", "--env", "production")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = json.loads(s.sh(sys.executable, "-m", "tristage", "ps", "--env",
                                   "production", "--json"))  # fmt: skip
            webs = [r for r in rows if r["live"] and r["process"].startswith("web.")
                    and r["status"] == "healthy"]  # fmt: skip
            if len(webs) == 2:
                break
            time.sleep(0.2)
        two = wrk(s.port, args.seconds)
        print(f"router req/s, 1 web replica: {one:.0f}; 2 web replicas: {two:.0f} "
              f"(ratio {two / one if one else 0:.2f}; 2 cores shared)")  # fmt: skip
    finally:
        s.close()


if __name__ == "__main__":
    main()
