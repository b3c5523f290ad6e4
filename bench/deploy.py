"""Deploy time: `git push` until the new deployment is healthy and routed, against the
floor (the same steps run by hand), with where the push's time went, and router
throughput with 1 and 2 web replicas.

Apps: `stdlib` (the test suite's reference app, no dependencies), `flask` (flask,
sqlalchemy, requests, pydantic and gunicorn from PyPI, served by `gunicorn`) and `next`
(a minimal Next.js 15 app, `bench/fixtures/next15`, its lock file committed; needs the
npm registry). The first push installs the dependency cache (cold), the following
pushes reuse it (cached). The floor is what a person would run for one release: `git
archive` of the commit, `uv venv` + `uv pip install -r requirements.txt` (with a warm
uv cache for the cached floor) or `npm ci` + `next build` (with a warm npm cache and
`.next/cache` for the cached floor), and starting the web command until its health
path answers.

Each push's phases are read from its output as it arrives: `hook` (git push until the
deployment is queued: git, the hook and the control plane taking it), `build` (queued
until built: archive, dependencies, build command), `start` (starting until healthy:
sandbox, the app's own start, the health check), `switch` (healthy until the router
serves it and the push says so) and `exit` (until `git push` returns: the hook's exit,
git's ref update, post-receive).

    .venv/bin/python bench/deploy.py [--app stdlib|flask|next] [--pushes 5] [--seconds 3]
        [--no-wrk]
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


NEXT_APP = Path(__file__).resolve().parent / "fixtures" / "next15"
NPM = shutil.which("npm") or "npm"
PHASES = ("hook", "build", "start", "switch", "exit")


def files_for(app: str) -> dict[str, str]:
    if app == "flask":
        return {"requirements.txt": FLASK_REQS, "wsgi.py": FLASK_APP,
                "Procfile": "web: gunicorn -w 2 -b 127.0.0.1:$PORT wsgi:app\n"}  # fmt: skip
    if app == "next":
        files = {str(p.relative_to(NEXT_APP)): p.read_text() for p in NEXT_APP.rglob("*")
                 if p.is_file()}  # fmt: skip
        return {**files, "Procfile": "web: npm start\n"}
    return {"requirements.txt": "# standard library only\n"}


def phases(stamped: list[tuple[float, str]], total: float) -> dict[str, float]:
    """Seconds per phase of one push, from its output lines and when each arrived."""

    def at(*marks: str) -> float | None:
        return next((t for t, line in stamped if any(m in line for m in marks)), None)

    points = [0.0, at("queued"), at("> built ("), at("> starting the release"),
              at("healthy in"), at("(deployment http"), total]  # fmt: skip
    if any(p is None for p in points):
        return {}
    t = [float(p) for p in points if p is not None]
    return {"hook": t[1], "build": t[2] - t[1], "start": t[4] - t[3],
            "switch": t[5] - t[4] + t[3] - t[2], "exit": t[6] - t[5]}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def floor(s: Scratch, app: str, cache: Path) -> dict[str, float]:
    """The steps of one release by hand, each timed (seconds). `cache`: uv's and npm's
    caches, and the `.next/cache` the last hand-run Next.js build left."""
    work = Path(tempfile.mkdtemp(prefix="tristage-floor-"))
    out: dict[str, float] = {}
    try:
        t = time.perf_counter()
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=s.repo, capture_output=True,
                                 check=True).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
        out["archive"] = time.perf_counter() - t
        env = {**os.environ, "UV_CACHE_DIR": str(cache / "uv"), "CI": "1",
               "npm_config_cache": str(cache / "npm"), "NEXT_TELEMETRY_DISABLED": "1"}  # fmt: skip
        if app == "next":
            quiet = subprocess.DEVNULL
            t = time.perf_counter()
            subprocess.run([NPM, "ci", "--prefer-offline", "--no-audit", "--no-fund"], cwd=work,
                           env=env, check=True, stdout=quiet, stderr=quiet)  # fmt: skip
            out["npm ci"] = time.perf_counter() - t
            saved = cache / "next-cache"
            if saved.is_dir():
                shutil.copytree(saved, work / ".next" / "cache", symlinks=True)
            t = time.perf_counter()
            subprocess.run([NPM, "run", "build"], cwd=work, env=env, check=True, stdout=quiet,
                           stderr=quiet)  # fmt: skip
            out["next build"] = time.perf_counter() - t
            shutil.rmtree(saved, ignore_errors=True)
            shutil.copytree(work / ".next" / "cache", saved, symlinks=True)
        else:
            t = time.perf_counter()
            subprocess.run([UV, "venv", "-q", "--python", sys.executable, str(work / ".venv")],
                           check=True, env=env)  # fmt: skip
            if app == "flask":
                subprocess.run([UV, "pip", "install", "-q", "--python",
                                str(work / ".venv/bin/python"), "-r",
                                str(work / "requirements.txt")], check=True, env=env)  # fmt: skip
            out["venv + install"] = time.perf_counter() - t
        port = free_port()
        cmd = {"flask": f"{work}/.venv/bin/gunicorn -w 2 -b 127.0.0.1:{port} wsgi:app",
               "next": "npm start"}.get(app, f"{work}/.venv/bin/python app.py")  # fmt: skip
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
    ap.add_argument("--app", choices=("stdlib", "flask", "next"), default="stdlib")
    ap.add_argument("--pushes", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--no-wrk", action="store_true", help="Skip the router throughput.")
    args = ap.parse_args()
    s = Scratch()
    try:
        s.project(files_for(args.app))
        if args.app == "next":
            s.sh(sys.executable, "-m", "tristage", "env", "set", "NEXT_TELEMETRY_DISABLED", "1",
                 "--all")  # fmt: skip
            s.commit("telemetry off")
        s.up()
        probe = httpx.Client(timeout=5, trust_env=False)
        breakdown: list[dict[str, float]] = []

        def timed_push() -> float:
            t0 = time.perf_counter()
            proc = subprocess.Popen(["git", "push", "tristage", "main"], cwd=s.repo, env=s.env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True)  # fmt: skip
            assert proc.stderr is not None
            stamped = [(time.perf_counter() - t0, line) for line in proc.stderr]
            proc.wait()
            total = time.perf_counter() - t0
            out = "".join(line for _, line in stamped)
            if proc.returncode != 0:
                raise SystemExit(f"git push failed:\n{out}")
            dep = deployment_id(out)
            path = "/health" if args.app == "next" else "/"  # the page of an app naming it
            r = probe.get(f"http://127.0.0.1:{s.port}{path}", headers={"Host": "bench.localhost"})
            if r.status_code != 200 or r.json()["deployment"] != dep:
                raise SystemExit(f"{dep} not routed after the push:\n{out}")
            breakdown.append(phases(stamped, total))
            return total

        cold = timed_push()
        cached: list[float] = []
        for i in range(args.pushes):
            s.commit(f"change {i}")
            cached.append(timed_push())
        cache = s.dir / "floor-cache"
        cold_floor = floor(s, args.app, cache)
        warm_floor = [floor(s, args.app, cache) for _ in range(3)]
        warm = sorted(warm_floor, key=lambda f: f["total"])[1]
        print(f"app: {args.app}  (load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores)")
        print(f"cold push (dependency cache miss): {cold:.2f} s; "
              f"hand-run floor {cold_floor['total']:.2f} s")  # fmt: skip
        print("cold floor: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in cold_floor.items()))
        print(f"cached pushes (n={len(cached)}): p50 {pct(cached, 50):.2f} s  "
              f"max {max(cached):.2f} s")  # fmt: skip
        print("cached floor: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in warm.items()))
        rows = [b for b in breakdown[1:] if b]
        if rows:
            print("cached push phases (p50): " + ", ".join(
                f"{k} {pct([b[k] for b in rows], 50) * 1000:.0f} ms" for k in PHASES))  # fmt: skip
        if breakdown[0]:
            print("cold push phases: " + ", ".join(
                f"{k} {breakdown[0][k] * 1000:.0f} ms" for k in PHASES))  # fmt: skip
        print(f"cached push - floor: {pct(cached, 50) - warm['total']:.2f} s (goal <= 0.3 s); "
              f"ratio {pct(cached, 50) / warm['total']:.2f}x"
              f"{' (goal <= 1.2x)' if args.app == 'next' else ''}")  # fmt: skip
        print(f"ratio cached p50 / goal ({GOAL_S:.0f} s): {pct(cached, 50) / GOAL_S:.2f}")
        if args.no_wrk or shutil.which("wrk") is None:
            return
        one = wrk(s.port, args.seconds)
        s.sh(sys.executable, "-m", "tristage", "scale", "web=2", "--env", "production")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows_ps = json.loads(s.sh(sys.executable, "-m", "tristage", "ps", "--env",
                                      "production", "--json"))  # fmt: skip
            webs = [r for r in rows_ps if r["live"] and r["process"].startswith("web.")
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
