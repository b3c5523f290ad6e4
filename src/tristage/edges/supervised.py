"""`SupervisedEdge`: a production edge that runs as its own process (HAProxy, Caddy),
started or adopted, watched and started again with a back-off.

```
class MyEdge(SupervisedEdge):
    name = "myproxy"                  # myproxy.pid, myproxy.log, its messages
    def _command(self): ...           # the command line
    def _prepare(self): ...           # its configuration written before each start
    async def _answers(self): ...     # its own API answers (the readiness probe)
    async def _adopt(self): ...       # a running one brought to the current state
    def _ports(self): ...             # (bind, http port, https port)
```

The process gets its own session (a signal to the control plane's group does not reach
it), its output goes to `NAME.log` and its pid (with its start time, so a reused pid is
never taken for it) to `NAME.pid`, both 0600 in the private edge directory. `start`
adopts a process that pidfile names and whose API answers instead of starting another;
one that does not answer is told to stop and a new one is started. The process is ready
once its API answers and both ports accept connections. One that exits is started again
after 0.5 s, then 1, 2, 5 and 10 s while starting it fails.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import TristageError
from ..paths import private_open
from .runtime.local import proc_start

RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class EdgeError(TristageError):
    """The production edge could not be started or configured."""


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text` at once (a 0600 file written aside, then renamed)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with private_open(tmp) as f:
        f.write(text.encode())
    tmp.replace(path)


class SupervisedEdge(abc.ABC):
    name: str  # the program: names its pidfile, its log and the messages
    stop_signal = signal.SIGTERM  # asks it to stop (SIGKILL after STOP_TIMEOUT)
    log_mark = ""  # the log lines that tell why it stopped (all of them when empty)
    restart_errors: tuple[type[Exception], ...] = (EdgeError,)  # a failed restart

    def __init__(self, directory: Path, binary: str, log: Callable[[str], None]) -> None:
        self.directory = directory
        self.binary = binary
        self.log = log
        self.pid: int | None = None
        self.on_restart: Callable[[], None] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    # -- what each edge has of its own ------------------------------------------------
    @abc.abstractmethod
    def _command(self) -> list[str]:
        """The command line that starts it."""

    @abc.abstractmethod
    def _prepare(self) -> None:
        """Before each start: its configuration written, what a previous run left gone."""

    @abc.abstractmethod
    async def _answers(self) -> bool:
        """Its own API answers."""

    @abc.abstractmethod
    async def _adopt(self) -> None:
        """A running process taken over: brought to the current state."""

    @abc.abstractmethod
    def _ports(self) -> tuple[str | None, int, int]:
        """(bind address or None for loopback, http port, https port)."""

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}

    def _adoptable(self) -> bool:
        """Whether the running process was started with the current settings."""
        return True

    def _spawned(self) -> None:
        """Just started, its pidfile written (not ready yet)."""
        return None

    async def _started(self) -> None:
        """Started and ready."""
        return None

    async def _respawn(self) -> None:
        """The supervisor's start after an exit."""
        await self._spawn()

    # -- paths ---------------------------------------------------------------------
    @property
    def pidfile(self) -> Path:
        return self.directory / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / f"{self.name}.log"

    # -- lifecycle -----------------------------------------------------------------
    async def _start_process(self) -> None:
        """Adopt the running process or start one; then watch it."""
        adopted = self._running_pid()
        if adopted is not None and not self._adoptable():
            # started with other ports, binds or binary: replaced, not adopted
            self.log(f"edge: the running {self.name} (pid {adopted}) has other settings: replaced")
            await self._stop_pid(adopted)
            adopted = None
        if adopted is not None and await self._answers():
            self.pid = adopted
            await self._adopt()
            self.log(f"edge: adopted the running {self.name} (pid {adopted})")
        else:
            if adopted is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(adopted, signal.SIGTERM)
            await self._spawn()
        self._watch = asyncio.ensure_future(self._supervise())

    async def stop(self) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self.pid is not None:
            await self._stop_pid(self.pid)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self._proc.wait, 5)
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()

    async def _stop_pid(self, pid: int) -> None:
        if not self._alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, self.stop_signal)
        deadline = time.monotonic() + STOP_TIMEOUT
        while self._alive(pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def healthy(self) -> bool:
        """The process this edge started or adopted is running."""
        return self.pid is not None and self._alive(self.pid)

    # -- the process ---------------------------------------------------------------
    async def _spawn(self) -> None:
        self._prepare()
        out = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self._proc = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                env=self._env(), start_new_session=True, cwd=self.directory,
            )  # fmt: skip
        except FileNotFoundError:
            raise EdgeError(
                f"the production edge needs {self.name}, and {self.binary!r} was not found",
                f"install it (Debian: apt-get install {self.name}) or set --{self.name} to "
                "its path",
            ) from None
        finally:
            os.close(out)
        self.pid = self._proc.pid
        self._write_pidfile(self._proc.pid)
        self._spawned()
        deadline = time.monotonic() + START_TIMEOUT
        while not (await self._answers() and await self._listening()):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()
                _, http_port, https_port = self._ports()
                raise EdgeError(
                    f"{self.name} did not start: {self._log_tail()}",
                    f"see {self.log_file}; ports {http_port} and {https_port} must be free "
                    "(and bindable by this user)",
                )
            await asyncio.sleep(0.05)
        await self._started()

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping:
            await asyncio.sleep(0.5)
            if self.pid is not None and self._alive(self.pid):
                continue
            if self._stopping:
                return
            delay = RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF) - 1)]
            self.log(
                f"edge: {self.name} exited ({self._log_tail()}); starting it again in {delay}s"
            )
            await asyncio.sleep(delay)
            failures += 1
            try:
                await self._respawn()
                self.log(f"edge: {self.name} started again (pid {self.pid})")
                failures = 0
                if self.on_restart is not None:
                    self.on_restart()
            except self.restart_errors as exc:
                self.log(f"edge: {exc}")

    async def _listening(self) -> bool:
        """Both ports accept connections (its API may answer before it listens)."""
        bind, http_port, https_port = self._ports()
        host = bind or "127.0.0.1"
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        for port in (http_port, https_port):
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
            except (OSError, TimeoutError):
                return False
            writer.close()
        return True

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        return self._running_pid() == pid

    def _running_pid(self) -> int | None:
        """The pid the pidfile names, if that process (same start time) still runs."""
        try:
            data = json.loads(self.pidfile.read_text())
        except (OSError, ValueError):
            return None
        pid = data.get("pid")
        if not isinstance(pid, int):
            return None
        start = proc_start(pid)
        return pid if start is not None and start == data.get("start") else None

    def _write_pidfile(self, pid: int) -> None:
        write_private(self.pidfile, json.dumps({"pid": pid, "start": proc_start(pid)}))

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        marked = [line for line in lines if self.log_mark in line] or lines
        return marked[-1][-300:] if marked else "no output"
