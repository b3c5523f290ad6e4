"""Deploys from a git host: how fast the push endpoint answers, and push-to-served time.

    .venv/bin/python bench/git_push.py [--acks 300] [--deploys 3]

Starts `tristage up` on a scratch home, a project connected to GitHub (the origin is a
local bare repository fetched over file://; no API calls are made for branch pushes).

1. Time to acknowledge a signed delivery (verify HMAC-SHA256 in constant time, record
   the delivery id in the state store): GitHub `ping` events, one at a time, against the
   baseline of the same endpoint answering 405 to a GET (router + internal app, no
   verification and no store).
2. Push to served: a commit pushed to the origin and a signed push event sent, until the
   branch host serves the new deployment, against `git push tristage` of the same kind of
   commit (the baseline: the same pipeline without the fetch from the origin).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import httpx
from _deployenv import Scratch
from _util import percentile

from tristage.edges import git_hosts

GITHUB = git_hosts.get("github")


def serves(client: httpx.Client, port: int, host: str) -> str | None:
    try:
        r = client.get(f"http://127.0.0.1:{port}/", headers={"Host": host})
    except httpx.HTTPError:
        return None
    return str(r.json()["deployment"]) if r.status_code == 200 else None


def wait_new(client: httpx.Client, port: int, host: str, old: str | None) -> float:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        now = serves(client, port, host)
        if now is not None and now != old:
            return time.monotonic()
        time.sleep(0.02)
    raise SystemExit(f"{host} never served a new deployment")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--acks", type=int, default=300)
    ap.add_argument("--deploys", type=int, default=3)
    args = ap.parse_args()

    s = Scratch()
    try:
        s.project()
        origin = s.dir / "origin.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
        s.sh("git", "remote", "add", "origin", str(origin))
        s.sh("git", "push", "-q", "origin", "main")
        s.up()
        out = subprocess.run(
            [sys.executable, "-m", "tristage", "connect", "github", "acme/bench",
             "--clone-url", f"file://{origin}", "--api-url", "http://127.0.0.1:9",
             "--token-stdin", "--json"],
            cwd=s.repo, env=s.env, input="tok\n", capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        secret = json.loads(out)["secret"]
        url = f"http://127.0.0.1:{s.port}/.tristage/git"
        hdr = {"Host": "bench.localhost"}
        client = httpx.Client(timeout=30, trust_env=False)
        deadline = time.monotonic() + 20
        while client.get(url, headers=hdr).status_code != 405:
            if time.monotonic() > deadline:
                raise SystemExit("the endpoint is not served")
            time.sleep(0.05)

        base, acks = [], []
        body = json.dumps({"zen": "Practicality beats purity.", "hook_id": 1}).encode()
        for _ in range(args.acks):
            t = time.perf_counter()
            client.get(url, headers=hdr)
            base.append((time.perf_counter() - t) * 1000)
            headers = {**GITHUB.sign(secret, str(uuid.uuid4()), "ping", body), **hdr}
            t = time.perf_counter()
            r = client.post(url, content=body, headers=headers)
            acks.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, r.text
        print(f"acknowledge ({args.acks} each, one at a time)")
        print(f"  {'':28} {'p50 ms':>8} {'p99 ms':>8}")
        print(f"  {'baseline: GET 405':28} {percentile(base, 50):8.2f} {percentile(base, 99):8.2f}")
        print(f"  {'signed ping: verify+record':28} {percentile(acks, 50):8.2f} "
              f"{percentile(acks, 99):8.2f}")  # fmt: skip
        print(f"  ratio p50 {percentile(acks, 50) / percentile(base, 50):.2f}x")

        s.sh("git", "checkout", "-qb", "test")
        host_times, own_times = [], []
        for i in range(args.deploys):
            old = serves(client, s.port, "test.bench.localhost")
            s.commit(f"via host {i}")
            s.sh("git", "push", "-q", "-f", "origin", "test")
            sha = s.sh("git", "rev-parse", "HEAD").strip()
            event = {"ref": "refs/heads/test", "before": "0" * 40, "after": sha,
                     "deleted": False, "repository": {"full_name": "acme/bench"}}  # fmt: skip
            raw = json.dumps(event).encode()
            headers = {**GITHUB.sign(secret, str(uuid.uuid4()), "push", raw), **hdr}
            t = time.monotonic()
            r = client.post(url, content=raw, headers=headers)
            assert r.status_code == 202, r.text
            host_times.append(wait_new(client, s.port, "test.bench.localhost", old) - t)

            old = serves(client, s.port, "test.bench.localhost")
            s.commit(f"own remote {i}")
            t = time.monotonic()
            pushing = subprocess.Popen(
                ["git", "push", "-q", "-f", "tristage", "test"], cwd=s.repo, env=s.env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            own_times.append(wait_new(client, s.port, "test.bench.localhost", old) - t)
            pushing.wait(120)
        h, o = statistics.median(host_times), statistics.median(own_times)
        print(f"push to served (median of {args.deploys})")
        print(f"  baseline: git push tristage  {o:6.2f} s")
        print(f"  signed push event + fetch    {h:6.2f} s")
        print(f"  ratio {h / o:.2f}x")
        client.close()
    finally:
        s.close()


if __name__ == "__main__":
    main()
