"""`tristage dev`: run the app from the working copy with a development environment's
resolved variables and data store, never with production's.

`plan` gathers the environment (`domain.localdev.compose`) and refuses it when it
would reach production (`domain.localdev.refusals`); `run` starts the command in its
own process group, hands it the terminal when there is one, forwards SIGINT,
SIGTERM, SIGHUP and SIGQUIT to it, and returns its exit code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING

from ..domain import localdev
from ..domain.config import PipelineConfig, Tier, procfile_web
from ..domain.rules.isolation import Target, config_target, url_target
from ..edges import git
from ..errors import NotFound, TristageError, UsageError
from .localdev_env import app_environment

if TYPE_CHECKING:
    from ..api import Tristage

DEFAULT_PORT = 3000
# the shell's own environment markers that would point the app at another interpreter
_FOREIGN = frozenset({"VIRTUAL_ENV", "PYTHONHOME", "CONDA_PREFIX"})
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class ProductionRefused(TristageError):
    """A local run would reach production's data or secrets."""


@dataclass(frozen=True)
class DevPlan:
    project: str
    environment: str
    root: Path
    command: list[str] | str  # a string runs through the shell (Procfile / web command)
    env: dict[str, str]
    port: int
    variables: int  # how many resolved variables the environment gives
    using: tuple[str, ...] = ()  # the app's environment: which virtualenv, node_modules

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def describe_database(self) -> str:
        """What DATABASE_URL points at, without credentials."""
        target = url_target(self.env.get("DATABASE_URL", ""))
        return " ".join(t for t in target if t)


class LocalDevService:
    def __init__(self, api: Tristage) -> None:
        self.api = api

    def plan(
        self,
        project: str,
        root: Path,
        environment: str | None = None,
        port: int | None = None,
        command: list[str] | None = None,
        shell_env: Mapping[str, str] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> DevPlan:
        """What `run` starts: the command, its environment (development's variables and
        data store, the app's own virtualenv / node_modules, made or installed now when
        the last build's do not fit this working copy: `progress` hears about it)."""
        cfg = self.api.config_for(project)
        env = environment or _development(cfg)
        if cfg.env(env).tier == Tier.production:
            raise UsageError(
                f"'tristage dev' never runs with {env}: it is the production environment",
                "use the development environment (the default), or a preview one with --env",
            )
        shell = dict(os.environ if shell_env is None else shell_env)
        port = port or int(shell.get("PORT") or DEFAULT_PORT)
        branch = commit = None
        with contextlib.suppress(TristageError):
            branch = git.current_branch(root)
            commit = git.rev_parse(root, "HEAD")
        resolved = self.api.variables.runtime_env(project, env, branch)
        database_url = (
            "" if resolved.get("DATABASE_URL") else self.api.data.database_url(project, env)
        )
        shown = list(command) if command else _web_command(cfg, env, root)
        web = shown if isinstance(shown, str) else " ".join(shown)
        app = app_environment(self.api, cfg, env, root, web, progress or (lambda _line: None))
        full = localdev.compose(
            {k: v for k, v in shell.items() if k not in _FOREIGN}, resolved,
            database_url=database_url, port=port, environment=env,
            branch=branch, commit=commit, path_prefix=app.path_prefix,
        )  # fmt: skip
        full.update(app.env)
        prod = cfg.production
        if prod is not None:
            found = localdev.refusals(
                full,
                prod,
                self._production_stores(cfg, prod),
                self._production_secrets(project, prod),
            )
            if found:
                lines = "\n".join(f"  {r}" for r in found)
                raise ProductionRefused(
                    f"refusing to run {project} locally: it would reach production\n{lines}",
                    "never point local development at production",
                )
        return DevPlan(
            project=project, environment=env, root=root,
            command=shown, env=full, port=port, variables=len(resolved), using=app.using,
        )  # fmt: skip

    def _production_stores(self, cfg: PipelineConfig, prod: str) -> dict[Target, str]:
        project = cfg.project.name
        out: dict[Target, str] = {}
        db = cfg.env(cfg.owner(prod)).database
        if db.engine == "sqlite":
            out[url_target(self.api.data.database_url(project, prod))] = f"{prod}'s SQLite file"
        else:
            # production's server is not contacted: its database is known from the config
            target = config_target(project, prod, db)
            if target is None:
                server = url_target(db.url or "postgresql://127.0.0.1:5432")
                name = f"tristage_{project}_{prod}".replace("-", "_")
                target = ("postgres", server[1], server[2], name)
            out[target] = f"environments.{prod}.database"
        var = self.api.variables.runtime_env(project, prod, None).get("DATABASE_URL")
        if var:
            out[url_target(var)] = f"{prod}'s DATABASE_URL"
        return out

    def _production_secrets(self, project: str, prod: str) -> dict[str, str]:
        return {e.name: e.value for e in self.api.variables.entries(project, prod) if e.secret}

    def run(
        self,
        plan: DevPlan,
        on_start: Callable[[int], None] | None = None,
        on_hint: Callable[[str], None] | None = None,
    ) -> int:
        """Run the plan in the foreground; returns the exit code (128+N for signal N).

        The app's stderr passes through as it comes; a module it could not import
        (`ModuleNotFoundError`, Node's `Cannot find module`) gets a hint after it ended
        (to `on_hint`, else stderr) naming the environment it ran with."""
        shell = isinstance(plan.command, str)
        try:
            proc = subprocess.Popen(
                plan.command, shell=shell, cwd=plan.root, env=plan.env, process_group=0,
                stderr=subprocess.PIPE,
            )  # fmt: skip
        except OSError as exc:
            raise UsageError(f"cannot start {plan.command!r}: {exc.strerror or exc}") from None
        missing: list[tuple[str, str]] = []
        assert proc.stderr is not None
        tee = threading.Thread(target=_tee, args=(proc.stderr, missing), daemon=True)
        tee.start()
        pgid = proc.pid
        tty = _terminal()
        if tty is not None:
            _foreground(tty, pgid)

        def forward(sig: int, _frame: FrameType | None) -> None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)

        previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
        try:
            if on_start is not None:
                on_start(proc.pid)
            rc = proc.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if tty is not None:
                _foreground(tty, os.getpgrp())
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)  # whatever the command left behind
            tee.join(2)
        if missing and rc != 0:
            hint = localdev.missing_hint(*missing[0], plan.using)
            (on_hint or _to_stderr)(hint)
        return rc if rc >= 0 else 128 - rc


def _tee(stream: IO[bytes], missing: list[tuple[str, str]]) -> None:
    """Copy the app's stderr to ours as it comes (a prompt without a newline too),
    noting the first module it could not import."""
    out = sys.stderr.buffer
    fd = stream.fileno()
    line = b""
    while chunk := os.read(fd, 65536):
        with contextlib.suppress(OSError, ValueError):
            out.write(chunk)
            out.flush()
        *done, line = (line + chunk).split(b"\n")
        line = line[-4096:]  # a line never ending is not kept whole
        for text in done:
            found = localdev.missing_module(text.decode(errors="replace"))
            if found is not None and not missing:
                missing.append(found)
    if line and not missing:
        found = localdev.missing_module(line.decode(errors="replace"))
        if found is not None:
            missing.append(found)
    stream.close()


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _development(cfg: PipelineConfig) -> str:
    for name, env in cfg.environments.items():
        if env.tier == Tier.development:
            return name
    raise NotFound(
        "this project has no development environment",
        'declare one with tier = "development" in tristage.toml, or pass --env',
    )


def _web_command(cfg: PipelineConfig, env: str, root: Path) -> str:
    web = cfg.settings(env).web or procfile_web(root)
    if not web:
        raise UsageError(
            f"no web command for {env}: tristage.toml has no 'web' and there is no Procfile "
            "'web:' line",
            "add one, or give the command: tristage dev -- npm run dev",
        )
    return web


def _terminal() -> int | None:
    """The controlling terminal's fd when we are its foreground process group."""
    try:
        fd = sys.stdin.fileno()
        if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
            return fd
    except (OSError, ValueError):
        pass
    return None


def _foreground(fd: int, pgid: int) -> None:
    """Make `pgid` the terminal's foreground group (Ctrl-C goes to it)."""
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        with contextlib.suppress(OSError):
            os.tcsetpgrp(fd, pgid)
    finally:
        signal.signal(signal.SIGTTOU, old)
