"""Local processes, sandboxed with bubblewrap (`sandbox`) or not (`unsandboxed`).

A release is a log pump (the session leader, outside the sandbox) and the app,
its child: `bwrap … -- COMMAND` for the sandbox, the command itself otherwise.
Both outlive the control plane (a `kill -9` of it leaves releases serving); they
are identified by pid *and* kernel start time, so a reused pid is never taken for
a release. Where cgroups are writable the app runs in a cgroup of its own with
its limits, and stopping it kills the whole cgroup (children that called
`setsid()` included); without cgroups (unsandboxed only) its process group is
signalled. bwrap's `--die-with-parent` ties the sandbox to its pump: a pump that
dies takes the app with it, so a release is never left running unsupervised.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import fcntl
import json
import os
import pty
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ...domain.limits import format_size
from . import bwrap, sockets
from .base import Handle, ProcessSpec, RuntimeError_, SandboxUnavailable, State, Status
from .cgroups import Cgroup, CgroupError, hierarchy
from .logpump import log_max_bytes

FD_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def proc_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), None if it is gone.

    Raises OSError when /proc cannot be read for another reason (out of file
    descriptors): that is not an exit."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name may hold spaces and parentheses: split after the last ')'
    fields = data[data.rfind(")") + 2 :].split()
    if fields and fields[0] == "Z":
        return None  # a zombie is not a running process
    return fields[19] if len(fields) > 19 else None


@dataclass(frozen=True)
class Process:
    pid: int
    proc_start: str

    def alive(self) -> bool:
        return proc_start(self.pid) == self.proc_start


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_bwrap(pid: int, path: str) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/exe") == path
    except OSError:
        return False


def sandbox_problem(bwrap_path: str | None) -> str | None:
    """Why the sandbox cannot run here (None when it can): checked by starting one."""
    if bwrap_path is None:
        return "bubblewrap (bwrap) is not installed"
    h = hierarchy()
    if not h.usable:
        return f"cgroups are not usable: {h.problem}"
    probe = bwrap.argv(
        bwrap_path,
        ProcessSpec("probe", ("/bin/true",), Path("/"), {}),
        bwrap.SystemView.of_host(),
    )
    try:
        proc = subprocess.run(probe, capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not run: {exc}"
    if proc.returncode != 0:
        return f"bwrap could not create its namespaces: {proc.stderr.decode().strip()}"
    return None


class LocalRuntime:
    """Processes on this machine; `sandboxed` wraps each in bubblewrap."""

    def __init__(self, sandboxed: bool = True, bwrap_path: str | None = None) -> None:
        self.sandboxed = sandboxed
        self.name = "sandbox" if sandboxed else "unsandboxed"
        self._bwrap = bwrap_path or shutil.which("bwrap")
        self._view: bwrap.SystemView | None = None
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._checked = False

    # -- what runs ----------------------------------------------------------------
    def check(self) -> None:
        """Raise SandboxUnavailable when this runtime cannot run here."""
        if not self.sandboxed or self._checked:
            return
        problem = sandbox_problem(self._bwrap)
        if problem:
            raise SandboxUnavailable(
                f"the sandbox cannot run on this machine: {problem}",
                "run 'tristage doctor' for how to fix it",
            )
        self._checked = True

    def _argv(self, spec: ProcessSpec) -> tuple[list[str], dict[str, str]]:
        if not self.sandboxed:
            return spec.argv(), dict(spec.env)
        self.check()
        assert self._bwrap is not None
        if self._view is None:
            self._view = bwrap.SystemView.of_host()
        return bwrap.argv(self._bwrap, spec, self._view), bwrap.sandbox_env(dict(spec.env))

    def _cgroup(self, spec: ProcessSpec) -> Cgroup | None:
        if not hierarchy().usable:
            if self.sandboxed:
                raise SandboxUnavailable(f"cgroups are not usable: {hierarchy().problem}")
            return None
        try:
            return Cgroup.create(spec.name, spec.limits, scope=spec.scope)
        except CgroupError as exc:
            raise RuntimeError_(f"could not set the limits of {spec.name}: {exc}") from None

    # -- releases -------------------------------------------------------------------
    def start(self, spec: ProcessSpec) -> Handle:
        if spec.log_path is None:
            raise RuntimeError_("a release needs a log file")
        argv, env = self._argv(spec)
        cgroup = self._cgroup(spec)
        instructions = {
            "argv": argv,
            "cwd": str(spec.cwd),
            "log": str(spec.log_path),
            "prefix": spec.log_prefix,
            "drop": list(spec.drop_lines),
            "log_max_bytes": log_max_bytes(),
            "cgroup": cgroup.to_json() if cgroup else None,
            "redact": list(spec.redact),
            "memory_limit": format_size(spec.limits.memory) if spec.limits.memory else None,
        }
        try:
            pump = subprocess.Popen(
                [sys.executable, "-I", "-m", "tristage.edges.runtime.logpump"],
                cwd=spec.cwd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError:
            if cgroup:
                cgroup.remove()
            raise
        assert pump.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            pump.stdin.write(json.dumps(instructions).encode())
        pump.stdin.close()
        started = None
        for _ in range(500):
            with contextlib.suppress(OSError):  # out of descriptors: the pump runs, ask again
                started = proc_start(pump.pid)
            if started:
                break
            time.sleep(0.001)
        with self._lock:
            self._children[pump.pid] = pump
        return {
            "runtime": self.name,
            "pid": pump.pid,
            "start": started or "?",
            "cgroup": cgroup.to_json() if cgroup else None,
        }

    def listening(self, handle: Handle) -> list[tuple[str, int]]:
        """The (address, port) pairs the release's processes listen on."""
        cgroup = Cgroup.from_json(handle["cgroup"]) if handle.get("cgroup") else None
        try:
            pids = set(cgroup.pids()) if cgroup else sockets.descendants(int(handle["pid"]))
        except OSError:
            return []
        return sockets.listening(pids)

    def _pump(self, handle: Handle) -> Process:
        return Process(int(handle["pid"]), str(handle["start"]))

    def _exit_code(self, pid: int) -> int | None:
        with self._lock:
            popen = self._children.get(pid)
        if popen is None:
            return None
        code = popen.poll()
        if code is None:
            return None
        # the pump exits with the app's code; 128+N for a signal
        return -(code - 128) if code > 128 else code

    def status(self, handle: Handle) -> Status:
        pump = self._pump(handle)
        try:
            if pump.alive() and self._exit_code(pump.pid) is None:
                return Status(State.running)
        except OSError as exc:
            if exc.errno in FD_ERRORS:
                return Status(State.unknown, detail=f"cannot tell: {exc.strerror}")
            raise
        cgroup = Cgroup.from_json(handle["cgroup"]) if handle.get("cgroup") else None
        try:
            left = bool(cgroup.pids()) if cgroup else _group_alive(pump.pid)
        except OSError as exc:
            return Status(State.unknown, detail=f"cannot tell: {exc.strerror}")
        oom = cgroup.oom_kills() > 0 if cgroup else False
        limit = cgroup.memory_limit() if cgroup else None
        detail = f"limit {format_size(limit)}" if oom and limit else ""
        if left:
            return Status(State.orphaned, None, oom, "its log pump is gone")
        return Status(State.exited, self._exit_code(pump.pid), oom, detail)

    def stop(self, handle: Handle, grace: float = 5.0) -> Status:
        pump = self._pump(handle)
        cgroup = Cgroup.from_json(handle["cgroup"]) if handle.get("cgroup") else None
        deadline = time.monotonic() + grace
        if cgroup is not None:
            skip = {p for p in cgroup.pids() if self._bwrap and _is_bwrap(p, self._bwrap)}
            cgroup.signal(signal.SIGTERM, skip)
            while time.monotonic() < deadline and cgroup.pids():
                time.sleep(0.02)
            cgroup.kill()
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pump.pid, signal.SIGTERM)
            while time.monotonic() < deadline and _group_alive(pump.pid):
                time.sleep(0.02)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pump.pid, signal.SIGKILL)
        # the pump ends at EOF of the app's output; make sure of it
        for _ in range(100):
            if not pump.alive() or self._exit_code(pump.pid) is not None:
                break
            time.sleep(0.01)
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pump.pid, signal.SIGKILL)
        final = self.status(handle)
        if cgroup is not None:
            cgroup.remove()
        with self._lock:
            popen = self._children.pop(pump.pid, None)
        if popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(1.0)
        return final

    def adopt(self, handle: Handle) -> bool:
        st = self.status(handle)
        if st.state is State.running:
            return True
        if st.state is State.unknown:
            return True  # keep it; the supervisor asks again
        self.stop(handle, 0.5)  # orphaned (never doubled) or gone: clean up
        return False

    def reap(self, scope: str, known: Sequence[Handle]) -> int:
        keep = {
            str(path)
            for h in known
            if h.get("cgroup")
            for path in Cgroup.from_json(h["cgroup"]).dirs
        }
        reaped = 0
        for cg in Cgroup.in_scope(scope):
            if any(str(d) in keep for d in cg.dirs):
                continue
            if cg.pids():
                reaped += 1
            cg.kill()
            cg.remove()
        return reaped

    # -- one-offs -----------------------------------------------------------------------
    def run(
        self,
        spec: ProcessSpec,
        on_output: Callable[[str], None],
        timeout: float,
        cancel: Callable[[], bool] = lambda: False,
    ) -> Status:
        argv, env = self._argv(spec)
        cgroup = self._cgroup(spec)

        def preexec() -> None:
            if cgroup is not None:
                cgroup.add(os.getpid())

        terminal = spec.terminal_input is not None
        master = slave = -1
        if terminal:
            master, slave = pty.openpty()
            if spec.terminal_size is not None:
                rows, cols = spec.terminal_size
                with contextlib.suppress(OSError):
                    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        try:
            proc = subprocess.Popen(
                argv,
                cwd=spec.cwd,
                env=env,
                stdin=slave if terminal else subprocess.DEVNULL,
                stdout=slave if terminal else subprocess.PIPE,
                stderr=slave if terminal else subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
            )
        except OSError as exc:
            if cgroup is not None:
                cgroup.remove()
            if terminal:
                os.close(master)
                os.close(slave)
            raise RuntimeError_(f"could not start {spec.argv()[0]}: {exc.strerror}") from None
        if terminal:
            os.close(slave)  # the process holds it now
        killed: list[str] = []

        def kill(why: str) -> None:
            killed.append(why)
            if cgroup is not None:
                cgroup.kill()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

        stop_watch = threading.Event()

        def watch() -> None:
            deadline = time.monotonic() + timeout
            while not stop_watch.wait(0.1):
                if proc.poll() is not None:
                    # the one-off is over: what it left behind (holding its output
                    # open, so the read never ends) goes with it
                    if cgroup is not None:
                        cgroup.kill()
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    return
                if cancel():
                    kill("canceled")
                    return
                if time.monotonic() > deadline:
                    kill(f"timed out after {timeout:g}s")
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            if terminal:
                assert spec.terminal_input is not None
                _terminal_pump(master, spec.terminal_input, on_output, proc)
            else:
                assert proc.stdout is not None
                for raw in proc.stdout:
                    on_output(raw.decode(errors="replace").rstrip("\n"))
            code = proc.wait()
        finally:
            stop_watch.set()
            watcher.join()
            if terminal:
                os.close(master)
        oom = cgroup.oom_kills() > 0 if cgroup is not None else False
        limit = cgroup.memory_limit() if cgroup is not None else None
        if cgroup is not None:
            cgroup.kill()
            cgroup.remove()
        detail = killed[0] if killed else (f"limit {format_size(limit)}" if oom and limit else "")
        return Status(State.exited, code, oom, detail)


def _terminal_pump(
    master: int, typed: int, on_output: Callable[[str], None], proc: subprocess.Popen[bytes]
) -> None:
    """Copy what is typed (`typed`) into the pseudo-terminal and what it shows out,
    until the process ends and its output is read."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    watching = [master, typed]
    while True:
        try:
            ready, _, _ = select.select(watching, [], [], 0.1)
        except InterruptedError:
            continue
        if master in ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every holder of the terminal has closed it
                chunk = b""
            if not chunk:
                break
            on_output(decoder.decode(chunk))
        if typed in ready:
            data = os.read(typed, 4096)
            if data:
                with contextlib.suppress(OSError):
                    os.write(master, data)
            else:
                watching.remove(typed)  # no more input: what is typed is over
        if not ready and proc.poll() is not None:
            break
    tail = decoder.decode(b"", final=True)
    if tail:
        on_output(tail)
