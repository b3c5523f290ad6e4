"""Helpers for deploy tests: a project working copy, a real control plane, real HTTP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from conftest import GIT_ENV, git, run_cli
from tristage.services.front_door import stop_router_process

APPS = Path(__file__).parent / "apps"
FAST = {
    "TRISTAGE_RESTART_BACKOFF": "0.05,0.1",
    "TRISTAGE_CRASH_LIMIT": "3",
    "TRISTAGE_CRASH_WINDOW": "30",
}


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def make_project(repo: Path, app: str = "hello", name: str = "shop", **app_settings: str) -> Path:
    """Copy a fixture app into `repo`, `tristage init` it, tune it for tests, commit."""
    for item in (APPS / app).iterdir():
        if item.is_file():
            shutil.copy(item, repo / item.name)
    r = run_cli("init", "--name", name, cwd=repo)
    assert r.returncode == 0, r.stderr
    toml = (repo / "tristage.toml").read_text()
    toml = toml.replace('health_path = "/"', 'health_path = "/health"')
    # short, so tests of a failing check are quick; `npm start` itself takes seconds on a
    # loaded machine (npm, then node), so a Node app gets more
    timeout = 15 if app == "node" else 4
    toml = toml.replace("health_timeout = 30 ", f"health_timeout = {timeout} ")
    toml = toml.replace("keep_warm = 2 ", "drain_seconds = 0.5\nkeep_warm = 2 ")
    extra = "".join(f"{k} = {v}\n" for k, v in app_settings.items())
    toml = toml.replace("[app]\n", "[app]\n" + extra)
    (repo / "tristage.toml").write_text(toml)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first")
    return repo


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


def push(repo: Path, branch: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "push", "tristage", f"{branch}:{branch}"],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV, "COLUMNS": "200"},
        timeout=timeout,
    )


@dataclass
class ControlPlane:
    home: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=5, trust_env=False))
    args: tuple[str, ...] = ()  # more arguments of `tristage up`

    def start(self) -> ControlPlane:
        self.log = self.home / f"up-{time.monotonic_ns()}.log"
        out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tristage", "up", "--port", str(self.port), *self.args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **FAST},
            start_new_session=True,
        )
        # two Python processes start (the control plane and its router): generous on a busy machine
        info = wait_for(self._info, 45, "the control plane to start")
        self.port = info["router_port"]
        return self

    def _info(self) -> dict[str, Any] | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"control plane exited: {self.output()}")
        try:
            info: dict[str, Any] = json.loads((self.home / "controlplane.json").read_text())
        except (OSError, ValueError):
            return None
        return info if info["pid"] == self.proc.pid else None

    def output(self) -> str:
        return self.log.read_text() if self.log and self.log.exists() else ""

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # the router process outlives a control plane that was killed: stop it too
        stop_router_process(self.home)
        self.client.close()

    def get(self, host: str, path: str = "/") -> httpx.Response:
        return self.client.get(f"http://127.0.0.1:{self.port}{path}", headers={"Host": host})

    def serves(self, host: str) -> str | None:
        """The deployment id a host serves (None if it does not answer 200)."""
        try:
            r = self.get(host)
        except httpx.HTTPError:
            return None
        return r.json()["deployment"] if r.status_code == 200 else None


class Load:
    """Concurrent clients hammering a host; counts failures and who answered."""

    def __init__(self, port: int, host: str, workers: int = 4) -> None:
        self.port, self.host = port, host
        self.failures: list[str] = []
        self.seen: dict[str, int] = {}
        self.requests = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def answered(self, more: int = 10, timeout: float = 10.0) -> None:
        """Wait until `more` further requests have been answered (or failed)."""
        with self._lock:
            target = self.requests + more
        wait_for(lambda: self.requests >= target, timeout, f"{more} more requests")

    def _client(self) -> httpx.Client:
        return httpx.Client(timeout=5, trust_env=False)

    def _get(self, client: httpx.Client) -> httpx.Response:
        return client.get(f"http://127.0.0.1:{self.port}/", headers={"Host": self.host})

    def _run(self) -> None:
        with self._client() as client:
            while not self._stop.is_set():
                try:
                    r = self._get(client)
                    ok = r.status_code == 200
                    dep = r.json()["deployment"] if ok else f"HTTP {r.status_code}"
                except (httpx.HTTPError, ValueError) as exc:
                    ok, dep = False, f"{type(exc).__name__}: {exc}"
                with self._lock:
                    self.requests += 1
                    if ok:
                        self.seen[dep] = self.seen.get(dep, 0) + 1
                    else:
                        self.failures.append(dep)


def deployments(repo: Path) -> list[dict[str, Any]]:
    r = run_cli("deployments", "--json", cwd=repo)
    assert r.returncode == 0, r.stderr
    data: list[dict[str, Any]] = json.loads(r.stdout)
    return data


def deployment_id(push_output: str) -> str:
    for line in push_output.splitlines():
        if "queued" in line and "deployment" in line:
            return line.split("deployment", 1)[1].split()[0]
    raise AssertionError(f"no deployment id in:\n{push_output}")
