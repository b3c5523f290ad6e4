"""`CaddyEdge`: Caddy started, configured through its admin API and supervised.

```
edge = CaddyEdge(settings_for, allowed=lambda host: table.lookup(host) is not None)
await edge.start(plan)        # spawns caddy (or adopts one left running), loads the config
await edge.apply(plan)        # a new config only when the plan changed (names in tristage.toml)
await edge.stop()
```

Caddy runs as its own process (its own session, so a signal to the control plane's
group does not reach it); its admin API listens on a unix socket in the private edge
directory; its pid is in `caddy.pid`. A control plane that died and came back adopts the
running Caddy and loads a fresh configuration (its token, a new `ask` address) instead
of starting a second one. A Caddy that exits is started again, with a back-off.

The `ask` endpoint (`ask.py`) answers Caddy's question before each certificate: is this a
host the router serves?
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from ...errors import TristageError
from ...paths import private_mkdirs, socket_path
from ..runtime.local import proc_start
from .ask import AskServer
from .config import EdgePlan, EdgeSettings, caddy_config

RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)
START_TIMEOUT = 15.0


class EdgeError(TristageError):
    """The production edge could not be started or configured."""


SettingsFor = Callable[[str, str], EdgeSettings]  # (ask url, token) -> settings


class CaddyEdge:
    def __init__(
        self,
        directory: Path,
        settings_for: SettingsFor,
        allowed: Callable[[str], bool],
        *,
        binary: str = "caddy",
        log: Callable[[str], None] = lambda line: None,
        token: str | None = None,
    ) -> None:
        self.directory = directory
        self.settings_for = settings_for
        self.binary = binary
        self.log = log
        self.ask = AskServer(allowed)
        self.token = token or os.urandom(24).hex()
        self.settings: EdgeSettings | None = None
        self.plan: EdgePlan | None = None
        self.pid: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self._lock = asyncio.Lock()

    # -- paths ---------------------------------------------------------------------
    @property
    def admin_socket(self) -> Path:
        return socket_path(self.directory / "admin.sock")

    @property
    def pidfile(self) -> Path:
        return self.directory / "caddy.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / "caddy.log"

    # -- lifecycle -----------------------------------------------------------------
    async def start(self, plan: EdgePlan) -> None:
        private_mkdirs(self.directory)
        private_mkdirs(self.directory / "data")
        ask_url = await self.ask.start()
        self.settings = self.settings_for(ask_url, self.token)
        self.plan = plan
        adopted = self._running_pid()
        if adopted is not None and await self._admin_alive():
            self.pid = adopted
            await self._load(caddy_config(self.settings, plan))
            self.log(f"edge: adopted the running caddy (pid {adopted})")
        else:
            await self._spawn()
        self._watch = asyncio.ensure_future(self._supervise())

    async def apply(self, plan: EdgePlan) -> None:
        """Load a configuration for `plan` if it differs from the one loaded."""
        async with self._lock:
            if plan == self.plan or self.settings is None:
                return
            await self._load(caddy_config(self.settings, plan))
            self.plan = plan

    async def stop(self) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        pid = self.pid
        if pid is not None and self._alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while self._alive(pid) and time.monotonic() < deadline:
                if self._proc is not None and self._proc.returncode is not None:
                    break
                await asyncio.sleep(0.05)
            if self._alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                await asyncio.wait_for(self._proc.wait(), 5)
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()
        await self.ask.stop()

    def healthy(self) -> bool:
        """Caddy is running (the process this edge started or adopted)."""
        return self.pid is not None and self._alive(self.pid)

    # -- the process ---------------------------------------------------------------
    async def _spawn(self) -> None:
        assert self.settings is not None and self.plan is not None
        config = self.directory / "caddy.json"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(caddy_config(self.settings, self.plan), f)
        with contextlib.suppress(FileNotFoundError):
            self.admin_socket.unlink()
        out = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.directory),
            "XDG_DATA_HOME": str(self.directory / "data"),
            "XDG_CONFIG_HOME": str(self.directory / "data"),
        }
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self.binary, "run", "--config", str(config),
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                start_new_session=True,
            )  # fmt: skip
        except FileNotFoundError:
            raise EdgeError(
                f"the production edge needs caddy, and {self.binary!r} was not found",
                "install it (Debian: apt-get install caddy) or set --caddy to its path",
            ) from None
        finally:
            os.close(out)
        self.pid = self._proc.pid
        self._write_pidfile(self._proc.pid)
        deadline = time.monotonic() + START_TIMEOUT
        while not (await self._admin_alive() and await self._listening()):
            if self._proc.returncode is not None or time.monotonic() > deadline:
                raise EdgeError(
                    f"caddy did not start: {self._log_tail()}",
                    f"see {self.log_file}; ports {self.settings.http_port} and "
                    f"{self.settings.https_port} must be free (and bindable by this user)",
                )
            await asyncio.sleep(0.05)

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping:
            await asyncio.sleep(0.5)
            if self.pid is not None and self._alive(self.pid):
                continue
            if self._stopping:
                return
            delay = RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF) - 1)]
            self.log(f"edge: caddy exited ({self._log_tail()}); starting it again in {delay}s")
            await asyncio.sleep(delay)
            failures += 1
            try:
                async with self._lock:
                    await self._spawn()
                self.log(f"edge: caddy started again (pid {self.pid})")
                failures = 0
            except EdgeError as exc:
                self.log(f"edge: {exc}")

    async def _listening(self) -> bool:
        """Both ports accept connections (Caddy's admin API answers before its apps run)."""
        assert self.settings is not None
        host = self.settings.bind or "127.0.0.1"
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        for port in (self.settings.http_port, self.settings.https_port):
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
            except (OSError, TimeoutError):
                return False
            writer.close()
        return True

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.returncode is None
        return proc_start(pid) is not None and self._pid_matches(pid)

    def _pid_matches(self, pid: int) -> bool:
        try:
            data = json.loads(self.pidfile.read_text())
        except (OSError, ValueError):
            return False
        return bool(data.get("pid") == pid and data.get("start") == proc_start(pid))

    def _running_pid(self) -> int | None:
        try:
            data = json.loads(self.pidfile.read_text())
        except (OSError, ValueError):
            return None
        pid = data.get("pid")
        if isinstance(pid, int) and proc_start(pid) == data.get("start"):
            return pid
        return None

    def _write_pidfile(self, pid: int) -> None:
        tmp = self.pidfile.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": pid, "start": proc_start(pid)}, f)
        tmp.replace(self.pidfile)

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1][-300:] if lines else "no output"

    # -- the admin API ---------------------------------------------------------------
    def _admin(self) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=str(self.admin_socket))
        return httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=30)

    async def _admin_alive(self) -> bool:
        if not self.admin_socket.exists():
            return False
        try:
            async with self._admin() as client:
                r = await client.get("/config/")
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    async def _load(self, config: dict[str, object]) -> None:
        try:
            async with self._admin() as client:
                r = await client.post("/load", json=config)
        except httpx.HTTPError as exc:
            raise EdgeError(
                f"caddy's admin API did not answer: {type(exc).__name__}", f"see {self.log_file}"
            ) from None
        if r.status_code != 200:
            raise EdgeError(
                f"caddy refused the configuration: {r.text[:300]}", f"see {self.log_file}"
            )
