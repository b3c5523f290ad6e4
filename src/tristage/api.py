"""The Python API: the one entry the CLI, the HTTP API and the dashboard call.

`Tristage` is platform-wide (one platform home, many projects). Services hang off it
as lazily-built attributes (`deploys`, `variables`, `data`, `webhooks`), each
taking the project name explicitly.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from .domain import branches
from .domain.config import FILE_NAME, PipelineConfig, find_config, load_config, parse_config
from .domain.presets import Preset, render
from .edges.secrets import SecretBox
from .edges.store import Store, open_store
from .errors import Conflict, NotFound, UsageError
from .paths import platform_home, private_dir
from .services.audit import AuditLog, current_actor

if TYPE_CHECKING:
    from .services.data import DataService
    from .services.deploys import DeployService
    from .services.doctor import Finding
    from .services.localdev import LocalDevService
    from .services.monitor import MonitorService
    from .services.quickstart import Quickstart, Reporter
    from .services.variables import VariableService
    from .services.webhooks import WebhookService


@dataclass(frozen=True)
class InitResult:
    path: Path
    project: str
    preset: str
    notes: list[str]  # what else init set up (hosted repository, git remote)


@dataclass(frozen=True)
class ProjectRef:
    name: str
    root: Path | None
    config: PipelineConfig


class Tristage:
    def __init__(self, home: Path | None = None, actor: str | None = None) -> None:
        self.home = private_dir(home or platform_home()).resolve()
        self.actor = actor or current_actor()
        self._config_cache: dict[str, tuple[float, PipelineConfig]] = {}

    # -- edges -----------------------------------------------------------
    @cached_property
    def store(self) -> Store:
        return open_store(self.home)

    @cached_property
    def secret_box(self) -> SecretBox:
        return SecretBox.for_home(self.home)

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog(self.store, self.actor)

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()

    # -- services (each module owns its area) ---------------------------
    @cached_property
    def deploys(self) -> DeployService:
        from .services.deploys import DeployService

        return DeployService(self)

    @cached_property
    def variables(self) -> VariableService:
        from .services.variables import VariableService

        return VariableService(self)

    @cached_property
    def data(self) -> DataService:
        from .services.data import DataService

        return DataService(self)

    @cached_property
    def webhooks(self) -> WebhookService:
        from .services.webhooks import WebhookService

        return WebhookService(self)

    @cached_property
    def monitor(self) -> MonitorService:
        from .services.monitor import MonitorService

        return MonitorService(self)

    @cached_property
    def localdev(self) -> LocalDevService:
        from .services.localdev import LocalDevService

        return LocalDevService(self)

    def doctor(self) -> list[Finding]:
        """What this machine has of what tristage needs (sandbox, cgroups, tools)."""
        from .services.doctor import run_checks

        return run_checks()

    def quickstart(
        self,
        directory: Path,
        preset: Preset = "professional",
        port: int | None = None,
        reporter: Reporter | None = None,
    ) -> Quickstart:
        """The guide's whole workflow on the reference app (call `.run()` on the result)."""
        from .services.quickstart import Options, Quickstart

        return Quickstart(self, Options(directory, preset, port), reporter)

    # -- projects --------------------------------------------------------
    def init_project(
        self,
        root: Path,
        preset: Preset = "professional",
        name: str | None = None,
        force: bool = False,
    ) -> InitResult:
        root = root.resolve()
        if not (root / ".git").exists():
            raise UsageError(
                f"{root} is not a git working copy", "run 'git init' first, or cd into your repo"
            )
        path = root / FILE_NAME
        if path.exists() and not force:
            raise Conflict(f"{path} already exists", "pass --force to overwrite it")
        project = name or _default_name(root)
        text = render(preset, project)
        config = parse_config(text, str(path))  # a preset must always validate
        path.write_text(text, encoding="utf-8")
        self._register(config, root, text)
        notes = self.deploys.setup_git(project, root)
        self.audit.record(
            "project.init", project=project, details={"preset": preset, "root": str(root)}
        )
        return InitResult(path=path, project=project, preset=preset, notes=notes)

    def open_project(self, start: Path | None = None) -> ProjectRef:
        """The project of the working copy at `start` (walking up), registered/updated."""
        path = find_config((start or Path.cwd()).resolve())
        if path is None:
            raise NotFound(
                f"no {FILE_NAME} in {start or Path.cwd()} or its parents",
                "run 'tristage init' in your project's git working copy",
            )
        config = load_config(path)
        self._register(config, path.parent, path.read_text(encoding="utf-8"))
        return ProjectRef(config.project.name, path.parent, config)

    def _register(self, config: PipelineConfig, root: Path, text: str) -> None:
        now = time.time()
        name = config.project.name
        with self.store.transaction():
            row = self.store.query_one("SELECT root, config FROM projects WHERE name=?", (name,))
            if row is None:
                self.store.execute(
                    "INSERT INTO projects (name, root, config, key_salt, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (name, str(root), text, secrets.token_bytes(32), now, now),
                )
            elif row["config"] != text or row["root"] != str(root):
                self.store.execute(
                    "UPDATE projects SET root=?, config=?, updated_at=? WHERE name=?",
                    (str(root), text, now, name),
                )
                self._config_cache.pop(name, None)

    def projects(self) -> list[ProjectRef]:
        return [self.project(r["name"]) for r in self.store.query("SELECT name FROM projects")]

    def project(self, name: str) -> ProjectRef:
        row = self.store.query_one("SELECT root FROM projects WHERE name=?", (name,))
        if row is None:
            raise NotFound(f"no project named {name!r}", "run 'tristage init' in its working copy")
        return ProjectRef(name, Path(row["root"]) if row["root"] else None, self.config_for(name))

    def config_for(self, project: str) -> PipelineConfig:
        """The project's last validated configuration (as stored by init/open)."""
        row = self.store.query_one(
            "SELECT config, updated_at FROM projects WHERE name=?", (project,)
        )
        if row is None:
            raise NotFound(f"no project named {project!r}", "run 'tristage init' first")
        cached = self._config_cache.get(project)
        if cached and cached[0] == row["updated_at"]:
            return cached[1]
        config = parse_config(row["config"], f"{project}/{FILE_NAME}")
        self._config_cache[project] = (row["updated_at"], config)
        return config

    def project_salt(self, project: str) -> bytes:
        row = self.store.query_one("SELECT key_salt FROM projects WHERE name=?", (project,))
        if row is None:
            raise NotFound(
                f"no project named {project!r}",
                "run 'tristage init' (or any command) in its working copy to register it",
            )
        return bytes(row["key_salt"])

    # -- branches ----------------------------------------------------------
    def resolve_branch(self, config: PipelineConfig, branch: str) -> branches.Match:
        match = branches.resolve(config, branch)
        if match is None:
            raise NotFound(
                f"branch {branch!r} matches no environment",
                "add a pattern to an environment's `branches` in tristage.toml",
            )
        return match


def _default_name(root: Path) -> str:
    import re

    name = re.sub(r"[^a-z0-9-]+", "-", root.name.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"app-{name}".strip("-")
    return name[:40]


def git(root: Path, *args: str, check: bool = True) -> str:
    """Run git in `root` and return its stdout (stripped)."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    proc = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, env=env, check=False
    )
    if check and proc.returncode != 0:
        raise UsageError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()
