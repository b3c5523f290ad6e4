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
from collections.abc import Callable
from pathlib import Path

import httpx

from ...paths import private_mkdirs, socket_path
from ..supervised import EdgeError, SupervisedEdge, write_private
from .ask import AskServer
from .config import EdgePlan, EdgeSettings, caddy_config

SettingsFor = Callable[[str, str], EdgeSettings]  # (ask url, token) -> settings

__all__ = ["CaddyEdge", "EdgeError", "SettingsFor"]


class CaddyEdge(SupervisedEdge):
    name = "caddy"

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
        super().__init__(directory, binary, log)
        self.settings_for = settings_for
        self.ask = AskServer(allowed)
        self.token = token or os.urandom(24).hex()
        self.settings: EdgeSettings | None = None
        self.plan: EdgePlan | None = None
        self._lock = asyncio.Lock()

    # -- paths ---------------------------------------------------------------------
    @property
    def admin_socket(self) -> Path:
        return socket_path(self.directory / "admin.sock")

    # -- lifecycle -----------------------------------------------------------------
    async def start(self, plan: EdgePlan) -> None:
        private_mkdirs(self.directory)
        private_mkdirs(self.directory / "data")
        ask_url = await self.ask.start()
        self.settings = self.settings_for(ask_url, self.token)
        self.plan = plan
        await self._start_process()

    async def apply(self, plan: EdgePlan) -> None:
        """Load a configuration for `plan` if it differs from the one loaded."""
        async with self._lock:
            if plan == self.plan or self.settings is None:
                return
            await self._load(caddy_config(self.settings, plan))
            self.plan = plan

    async def stop(self) -> None:
        await super().stop()
        await self.ask.stop()

    # -- the process ---------------------------------------------------------------
    def _config(self) -> dict[str, object]:
        assert self.settings is not None and self.plan is not None
        return caddy_config(self.settings, self.plan)

    def _command(self) -> list[str]:
        return [self.binary, "run", "--config", str(self.directory / "caddy.json")]

    def _env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.directory),
            "XDG_DATA_HOME": str(self.directory / "data"),
            "XDG_CONFIG_HOME": str(self.directory / "data"),
        }

    def _prepare(self) -> None:
        write_private(self.directory / "caddy.json", json.dumps(self._config()))
        with contextlib.suppress(FileNotFoundError):
            self.admin_socket.unlink()

    def _ports(self) -> tuple[str | None, int, int]:
        assert self.settings is not None
        return self.settings.bind, self.settings.http_port, self.settings.https_port

    async def _answers(self) -> bool:
        return await self._admin_alive()

    async def _adopt(self) -> None:
        await self._load(self._config())

    async def _respawn(self) -> None:
        async with self._lock:
            await self._spawn()

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
