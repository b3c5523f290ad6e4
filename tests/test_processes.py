"""Process types and replicas through a real control plane: every Procfile line runs
(web replicas behind the router, a worker supervised without an HTTP check), a killed
web replica under load costs no request, `tristage scale` and `tristage ps`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli
from test_deploy_helpers import (
    ControlPlane,
    Load,
    commit,
    deployments,
    make_project,
    push,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

WORKER = """\
import os, time
from pathlib import Path

out = Path(os.environ["TRISTAGE_DATA_DIR"]) / "worker.txt"
print("worker", os.environ["TRISTAGE_PROCESS"], "PORT" in os.environ, flush=True)
n = 0
while True:
    n += 1
    out.write_text(f"{os.environ['TRISTAGE_DEPLOYMENT']} {os.environ['TRISTAGE_PROCESS']} {n}\\n")
    time.sleep(0.1)
"""


def ps(repo: Path, env: str = "production") -> list[dict[str, object]]:
    r = run_cli("ps", "--env", env, "--json", cwd=repo)
    assert r.returncode == 0, r.stderr
    rows: list[dict[str, object]] = json.loads(r.stdout)
    return rows


def live_processes(repo: Path) -> dict[str, dict[str, object]]:
    return {str(r["process"]): r for r in ps(repo) if r["live"]}


def two_webs_and_a_worker(repo: Path) -> Path:
    make_project(repo, processes="{ web = 2, worker = 1 }")
    procfile = "web: python app.py\nworker: python worker.py\n"
    commit(repo, {"worker.py": WORKER, "Procfile": procfile}, "a worker")
    return repo


def answering(cp: ControlPlane, names: set[str]) -> None:
    """Wait until the router has sent requests to each of `names`."""
    seen: set[str] = set()

    def check() -> bool:
        seen.update(cp.get("shop.localhost").json()["process"] for _ in range(10))
        return seen >= names

    wait_for(check, 20, f"{', '.join(sorted(names))} to answer")


def release_handle(home: Path, dep: str, process: str) -> dict[str, Any]:
    with contextlib.closing(sqlite3.connect(home / "state.db")) as db:
        row = db.execute(
            "SELECT handle FROM releases WHERE deployment=? AND process=?", (dep, process)
        ).fetchone()
    handle: dict[str, Any] = json.loads(row[0])
    return handle


def healthy(repo: Path, names: set[str]) -> dict[str, dict[str, object]] | None:
    procs = live_processes(repo)
    if set(procs) == names and all(p["status"] == "healthy" for p in procs.values()):
        return procs
    return None


def test_web_replicas_and_a_worker_run_and_a_killed_replica_costs_no_request(
    repo: Path, home: Path, cp: ControlPlane
) -> None:
    two_webs_and_a_worker(repo)
    r = push(repo, "main", timeout=120)
    assert r.returncode == 0, r.stderr
    dep = deployments(repo)[0]["id"]
    procs = wait_for(lambda: healthy(repo, {"web.1", "web.2", "worker.1"}), 30, "3 processes")
    assert procs["worker.1"]["port"] is None and procs["web.2"]["port"] != procs["web.1"]["port"]
    # the worker runs (no HTTP check) and writes into the environment's data directory
    data = home / "data" / "shop" / "production" / "worker.txt"
    wait_for(lambda: data.exists() and data.read_text().startswith(f"{dep} worker.1"), 20,
             "the worker's file")  # fmt: skip
    # both web replicas take requests
    answering(cp, {"web.1", "web.2"})
    handle = release_handle(home, dep, "web.2")
    with Load(cp.port, "shop.localhost", workers=4) as load:
        load.answered(50, 30)
        os.killpg(handle["pid"], signal.SIGKILL)  # web.2, its log pump and its sandbox
        wait_for(lambda: int(live_processes(repo)["web.2"]["restarts"]) >= 1, 30, "a restart")
        wait_for(lambda: healthy(repo, {"web.1", "web.2", "worker.1"}), 30, "web.2 back")
        load.answered(50, 30)
    assert load.failures == [], load.failures[:5]
    assert load.requests > 100
    # the log: each process's lines, the health probes' requests left out
    r = run_cli("logs", "--env", "production", "--process", "worker.1", cwd=repo)
    assert r.returncode == 0 and "[worker.1] worker worker.1 False" in r.stdout, r.stdout
    assert all("[worker.1]" in x for x in r.stdout.splitlines()), r.stdout[-500:]
    r = run_cli("logs", "--env", "production", "--process", "web.1", cwd=repo)
    assert '"GET / HTTP/1.1" 200' in r.stdout and "[worker.1]" not in r.stdout
    whole = run_cli("logs", "--env", "production", cwd=repo).stdout
    assert "GET /health" not in whole and "tristage-probe" not in whole


def test_scale_starts_and_stops_replicas_and_a_deploy_replaces_them_without_failures(
    repo: Path, home: Path, cp: ControlPlane
) -> None:
    two_webs_and_a_worker(repo)
    assert push(repo, "main", timeout=120).returncode == 0
    first = deployments(repo)[0]["id"]
    wait_for(lambda: healthy(repo, {"web.1", "web.2", "worker.1"}), 30, "3 processes")
    r = run_cli("scale", "web=3", "worker=0", "--env", "production", cwd=repo)
    assert r.returncode == 0, r.stderr
    assert "web=3" in r.stdout and "worker=0" in r.stdout
    wait_for(lambda: healthy(repo, {"web.1", "web.2", "web.3"}), 30, "web.3 and no worker")
    answering(cp, {"web.1", "web.2", "web.3"})
    with Load(cp.port, "shop.localhost", workers=4) as load:
        load.answered(30, 30)
        commit(repo, {"app.py": (repo / "app.py").read_text().replace("hello", "hi")}, "second")
        assert push(repo, "main", timeout=120).returncode == 0
        second = deployments(repo)[0]["id"]
        wait_for(lambda: cp.serves("shop.localhost") == second, 30, "the new deployment")
        load.answered(30, 30)
    assert load.failures == [], load.failures[:5]
    procs = wait_for(lambda: healthy(repo, {"web.1", "web.2", "web.3"}), 30, "3 new replicas")
    assert {p["deployment"] for p in procs.values()} == {second}
    # --since: the lines of both deployments, each after its deployment's id
    r = run_cli("logs", "--env", "production", "--since", "10m", cwd=repo)
    assert r.returncode == 0, r.stderr
    starts = {x.split(" ", 1)[0] for x in r.stdout.splitlines()}
    assert {first, second} <= starts, r.stdout[-500:]
    # the previous deployment stays warm with one web process only
    wait_for(lambda: {str(p["process"]) for p in ps(repo) if p["deployment"] == first}
             == {"web.1"}, 30, "the warm release to shrink")  # fmt: skip


def test_scale_refuses_bad_input_and_unknown_types(repo: Path, cp: ControlPlane) -> None:
    two_webs_and_a_worker(repo)
    assert push(repo, "main", timeout=120).returncode == 0
    for args, what in ((["web=0"], "at least 1"), (["web"], "TYPE=COUNT"),
                       (["release=1"], "once per deployment"), (["clock=1"], "no process type"),
                       (["web=99"], "at most")):  # fmt: skip
        r = run_cli("scale", *args, "--env", "production", cwd=repo)
        assert r.returncode != 0 and what in r.stderr, (args, r.stderr)


CRASHING_WORKER = """\
import sys, time
print("worker starting, then failing", flush=True)
time.sleep(1)
sys.exit(3)
"""


def test_a_crash_looping_worker_is_crashed_and_alerts_while_web_serves(
    repo: Path, cp: ControlPlane
) -> None:
    make_project(repo)
    procfile = "web: python app.py\nworker: python worker.py\n"
    commit(repo, {"worker.py": CRASHING_WORKER, "Procfile": procfile}, "a failing worker")
    assert push(repo, "main", timeout=120).returncode == 0
    dep = deployments(repo)[0]["id"]
    with Load(cp.port, "shop.localhost", workers=2) as load:
        # after TRISTAGE_CRASH_LIMIT (3) exits within the window: the process is crashed
        worker = wait_for(lambda: next((p for p in ps(repo) if p["process"] == "worker.1"
                                        and p["status"] == "crashed"), None), 60,
                          "worker.1 to be marked crashed")  # fmt: skip
        assert worker["deployment"] == dep and "exit code 3" in str(worker["last_exit"])
        load.answered(30, 30)
    # the web process kept serving: the deployment stays ready and live
    assert load.failures == [], load.failures[:5]
    assert cp.serves("shop.localhost") == dep
    row = next(d for d in deployments(repo) if d["id"] == dep)
    assert row["status"] == "ready" and row["crashed_processes"] == ["worker.1"]
    r = run_cli("deployments", cwd=repo)
    assert "worker.1 crashed" in r.stdout and "worker.1 in a crash loop" in r.stdout, r.stdout
    # one alert through the monitor's path, naming the process and how it ended
    r = run_cli("alerts", "--json", cwd=repo)
    assert r.returncode == 0, r.stderr
    loops = [a for a in json.loads(r.stdout) if a["kind"] == "crash_loop"]
    assert len(loops) == 1, loops
    assert loops[0]["deployment"] == dep and loops[0]["resolved_at"] is None
    assert "worker.1 crash loop: the worker process ended 3 times" in loops[0]["message"]
    assert "exit code 3" in loops[0]["message"]
    # it is still retried (at the longest backoff), and stays crashed and alerted once
    before = int(worker["restarts"])
    wait_for(lambda: int(next(p for p in ps(repo) if p["process"] == "worker.1")["restarts"])
             > before, 30, "another retry")  # fmt: skip
    r = run_cli("alerts", "--json", cwd=repo)
    assert len([a for a in json.loads(r.stdout) if a["kind"] == "crash_loop"]) == 1


def test_a_rollback_to_a_warm_release_with_replicas_switches_at_once(
    repo: Path, home: Path, cp: ControlPlane
) -> None:
    # each web process takes 3 s to listen (as a real app's boot does)
    make_project(repo, processes="{ web = 2 }")
    procfile = "web: sleep 3 && exec python app.py\n"
    toml = (repo / "tristage.toml").read_text().replace("health_timeout = 4", "health_timeout = 20")
    commit(repo, {"Procfile": procfile, "requirements.txt": "# stdlib only\n",
                  "tristage.toml": toml}, "slow boot")  # fmt: skip
    r = push(repo, "main", timeout=120)
    assert r.returncode == 0, r.stderr
    first = deployments(repo)[0]["id"]
    commit(repo, {"app.py": (repo / "app.py").read_text().replace("hello", "hi")}, "second")
    assert push(repo, "main", timeout=120).returncode == 0
    second = deployments(repo)[0]["id"]
    wait_for(lambda: healthy(repo, {"web.1", "web.2"}), 30, "two replicas of the second")
    # the previous deployment is warm with one web process
    wait_for(lambda: [str(p["process"]) for p in ps(repo) if p["deployment"] == first]
             == ["web.1"], 30, "the warm release to shrink")  # fmt: skip
    answering(cp, {"web.1", "web.2"})
    with Load(cp.port, "shop.localhost", workers=4) as load:
        load.answered(30, 30)
        r = run_cli("rollback", cwd=repo)
        assert r.returncode == 0, r.stderr
        with contextlib.closing(sqlite3.connect(home / "state.db")) as db:
            desired_at, routed_at, routed = db.execute(
                "SELECT desired_at, routed_at, routed FROM aliases WHERE environment=?",
                ("production",),
            ).fetchone()
        # switched to the healthy warm web.1 at once, not after web.2's 3 s boot
        assert routed == first and routed_at - desired_at < 2.0, routed_at - desired_at
        # the missing replica comes up behind it, and then takes requests too
        procs = wait_for(lambda: healthy(repo, {"web.1", "web.2"}), 30, "web.2 behind it")
        assert {p["deployment"] for p in procs.values()} == {first}
        answering(cp, {"web.1", "web.2"})
        load.answered(30, 30)
    assert load.failures == [], load.failures[:5]
    assert second != first


SICKLY = """\
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

me = os.environ["TRISTAGE_PROCESS"]
sick = Path(os.environ["TRISTAGE_DATA_DIR"]) / f"sick-{me}"


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        code = 500 if sick.exists() else 200
        body = json.dumps({"process": me}).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


def test_a_replica_failing_its_health_check_leaves_the_rotation_and_comes_back(
    repo: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRISTAGE_REPLICA_CHECK", "0.2")
    plane = ControlPlane(home).start()
    try:
        make_project(repo, processes="{ web = 2 }")
        commit(repo, {"app.py": SICKLY}, "a replica that can fall sick")
        assert push(repo, "main", timeout=120).returncode == 0
        wait_for(lambda: healthy(repo, {"web.1", "web.2"}), 30, "two replicas")
        answering(plane, {"web.1", "web.2"})
        # web.2 still runs but answers 500: out of the rotation after 3 failed checks
        sick = home / "data" / "shop" / "production" / "sick-web.2"
        sick.write_text("")
        wait_for(lambda: live_processes(repo)["web.2"]["status"] == "unhealthy", 20,
                 "web.2 to be unhealthy")  # fmt: skip
        answers = [plane.get("shop.localhost") for _ in range(40)]
        assert {(r.status_code, r.json()["process"]) for r in answers} == {(200, "web.1")}
        assert int(live_processes(repo)["web.2"]["restarts"]) == 0  # not restarted: it runs
        # it answers again: back in
        sick.unlink()
        wait_for(lambda: healthy(repo, {"web.1", "web.2"}), 20, "web.2 back")
        answering(plane, {"web.1", "web.2"})
    finally:
        plane.stop()
