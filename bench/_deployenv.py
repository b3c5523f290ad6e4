"""Shared setup for the deploy benchmarks: a scratch platform home, a project, a control plane."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "tests" / "apps" / "hello"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}


class Scratch:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tristage-bench-"))
        self.home = self.dir / "home"
        self.repo = self.dir / "app"
        self.env = {
            **os.environ,
            **GIT_ENV,
            "TRISTAGE_HOME": str(self.home),
            "TRISTAGE_MASTER_KEY_FILE": str(self.home / "master.key"),
        }
        os.environ.update({k: v for k, v in self.env.items() if k.startswith(("TRISTAGE", "GIT"))})
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def sh(self, *args: str) -> str:
        r = subprocess.run(args, cwd=self.repo, env=self.env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed: {r.stderr}")
        return r.stdout + r.stderr

    def project(self, files: dict[str, str] | None = None) -> None:
        self.repo.mkdir(parents=True)
        self.sh("git", "init", "-q", "-b", "main")
        for item in APP.iterdir():
            shutil.copy(item, self.repo / item.name)
        for name, text in (files or {}).items():
            (self.repo / name).parent.mkdir(parents=True, exist_ok=True)
            (self.repo / name).write_text(text)
        self.sh(sys.executable, "-m", "tristage", "init", "--name", "bench")
        toml = (self.repo / "tristage.toml").read_text()
        toml = toml.replace('health_path = "/"', 'health_path = "/health"')
        toml = toml.replace("keep_warm = 2 ", "drain_seconds = 1\nkeep_warm = 2 ")
        (self.repo / "tristage.toml").write_text(toml)
        self.commit("first")

    def commit(self, message: str) -> None:
        (self.repo / "version.txt").write_text(message + "\n")
        self.sh("git", "add", "-A")
        self.sh("git", "commit", "-qm", message)

    def up(self, *args: str) -> None:
        log = (self.dir / "up.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tristage", "up", "--port", "0", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                info = json.loads((self.home / "controlplane.json").read_text())
                if info["pid"] == self.proc.pid:
                    self.port = int(info["router_port"])
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise SystemExit("control plane did not start")

    def push(self, branch: str = "main") -> str:
        return self.sh("git", "push", "tristage", branch)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


def deployment_id(push_output: str) -> str:
    for line in push_output.splitlines():
        if "queued" in line and "deployment" in line:
            return line.split("deployment", 1)[1].split()[0]
    raise SystemExit(f"no deployment in push output:\n{push_output}")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]
