"""Local processes: releases run as their own session on a loopback port.

A release is two processes in one new session: a log pump (the session leader)
and the app, its child, whose stdout/stderr the pump writes redacted to the log.
Both outlive the control plane (so a `kill -9` of it leaves releases serving) and
are identified by pid *and* kernel start time, so a reused pid is never taken for
a release.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Process:
    pid: int
    pgid: int
    proc_start: str


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def proc_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), None if gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: split after the last ')'
    fields = data[data.rfind(")") + 2 :].split()
    if fields and fields[0] == "Z":
        return None  # a zombie is not a running release
    return fields[19] if len(fields) > 19 else None


def alive(proc: Process) -> bool:
    return proc_start(proc.pid) == proc.proc_start


def spawn(
    argv: list[str] | str,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    project: str,
    home: Path,
) -> tuple[Process, subprocess.Popen[bytes]]:
    """Start a release (pump + app) in a new session; returns its leader process."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    shell = isinstance(argv, str)
    cmd = [argv] if isinstance(argv, str) else list(argv)
    leader = subprocess.Popen(
        [sys.executable, "-I", "-m", "tristage.edges.runtime.logpump", str(log_path), "--", *cmd],
        cwd=cwd,
        env={
            **env,
            "TRISTAGE_PUMP_HOME": str(home),
            "TRISTAGE_PUMP_PROJECT": project,
            "TRISTAGE_PUMP_SHELL": "1" if shell else "0",
        },
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    started = None
    for _ in range(200):
        started = proc_start(leader.pid)
        if started:
            break
        time.sleep(0.001)
    return Process(leader.pid, leader.pid, started or "?"), leader


def signal_group(proc: Process, sig: int) -> bool:
    if not alive(proc):
        return False
    try:
        os.killpg(proc.pgid, sig)
    except ProcessLookupError:
        return False
    return True


def stop(proc: Process, grace: float = 5.0) -> None:
    """SIGTERM the release's process group, SIGKILL after `grace` seconds."""
    if not signal_group(proc, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive(proc):
            break
        time.sleep(0.02)
    try:
        os.killpg(proc.pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
