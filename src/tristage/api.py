"""The Python API: the one entry the CLI, the HTTP API and the dashboard call.

`Tristage` is platform-wide (one platform home, many projects). Services hang off it
as lazily-built attributes (`deploys`, `variables`, `data`, `webhooks`, `tokens`, ...),
each taking the project name explicitly.

The faces import only this module, `tristage.errors` and `tristage.domain`: the
records services return (a `Delivery`, a `BackupInfo`, an `AuditEvent`, a `Switch`,
...) are re-exported here. Those of heavy modules are imported when first asked for,
so that a command does not load every service to start.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .domain import branches
from .domain.config import PipelineConfig
from .domain.deployments import Deployment, Status
from .domain.edge import EdgeOptions
from .domain.preflight import PreflightFinding, PromotionPreflight
from .domain.presets import Preset
from .domain.service_unit import ServiceUnit
from .edges.secrets import SecretBox
from .edges.store import Store, open_store
from .errors import NotFound
from .paths import platform_home, private_mkdirs
from .services.audit import AuditEvent, AuditLog, current_actor
from .services.projects import InitResult, ProjectRef, ProjectService
from .services.tokens import NAME_RE as TOKEN_NAME_RE
from .services.tokens import NewToken, Role, TokenInfo, TokenService, require

if TYPE_CHECKING:
    from .edges.router.stats import DeploymentStats
    from .edges.snapshot_io import Progress
    from .services.cron import CronService
    from .services.data import DataService
    from .services.data_records import BackupInfo
    from .services.deploys import ControlPlaneInfo, DeployService, PushedRef, Switch
    from .services.doctor import Finding
    from .services.git_hosts import Connected, Connection, GitHostService
    from .services.lifecycle import CleanupReport, DestroyReport, LifecycleService
    from .services.localdev import LocalDevService
    from .services.monitor import MonitorService
    from .services.platform_backup import PlatformBackup
    from .services.processes import ProcessService
    from .services.quickstart import Quickstart, Reporter, Summary
    from .services.variables import VariableService
    from .services.webhook_records import Delivery, Endpoint
    from .services.webhooks import WebhookService

# Records re-exported lazily: name -> the module that defines it (see `__getattr__`).
LAZY: dict[str, str] = {
    "BackupInfo": ".services.data_records",
    "Connected": ".services.git_hosts",
    "Connection": ".services.git_hosts",
    "Delivery": ".services.webhook_records",
    "Endpoint": ".services.webhook_records",
    "DeploymentStats": ".edges.router.stats",
    "Progress": ".edges.snapshot_io",
    "Quickstart": ".services.quickstart",
    "Reporter": ".services.quickstart",
    "Summary": ".services.quickstart",
    "Switch": ".services.deploys",
    "CleanupReport": ".services.lifecycle",
    "DestroyReport": ".services.lifecycle",
    "PushedRef": ".services.deploys",
}

__all__ = [
    "TOKEN_NAME_RE",
    "AuditEvent",
    "BackupInfo",
    "CleanupReport",
    "Connected",
    "Connection",
    "Delivery",
    "Deployment",
    "DeploymentStats",
    "DestroyReport",
    "Endpoint",
    "InitResult",
    "NewToken",
    "PreflightFinding",
    "Progress",
    "ProjectRef",
    "PromotionPreflight",
    "PushedRef",
    "Quickstart",
    "Reporter",
    "Role",
    "Status",
    "Summary",
    "Switch",
    "TokenInfo",
    "TokenService",
    "Tristage",
    "require",
]


def __getattr__(name: str) -> Any:
    module = LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __package__), name)
    globals()[name] = value
    return value


class Tristage:
    def __init__(self, home: Path | None = None, actor: str | None = None) -> None:
        self.home = private_mkdirs(home or platform_home()).resolve()
        self.actor = actor or current_actor()

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

    @cached_property
    def access_key(self) -> bytes:
        """The key the access cookies of protected hosts are signed with."""
        from .edges.router.guard import load_access_key

        return load_access_key(self.home)

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()

    # -- services (each module owns its area) ---------------------------
    @cached_property
    def tokens(self) -> TokenService:
        return TokenService(self)

    @cached_property
    def project_service(self) -> ProjectService:
        return ProjectService(self)

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

    def platform_backup(self, out: Path) -> PlatformBackup:
        """An encrypted copy of the platform's own state store (the master key is not in it)."""
        from .services.platform_backup import PlatformBackupService

        return PlatformBackupService(self).backup(out)

    def platform_restore(self, path: Path, yes: bool = False) -> None:
        """Replace the platform's state store by a `platform_backup` (needs `yes`)."""
        from .services.platform_backup import PlatformBackupService

        PlatformBackupService(self).restore(path, yes)

    @cached_property
    def webhooks(self) -> WebhookService:
        from .services.webhooks import WebhookService

        return WebhookService(self)

    @cached_property
    def processes(self) -> ProcessService:
        """`tristage ps` and `tristage scale` (services/processes.py)."""
        from .services.processes import ProcessService

        return ProcessService(self)

    @cached_property
    def cron(self) -> CronService:
        """Scheduled jobs: `tristage cron ls/runs` (services/cron.py)."""
        from .services.cron import CronService

        return CronService(self)

    @cached_property
    def git_hosts(self) -> GitHostService:
        from .services.git_hosts import GitHostService

        return GitHostService(self)

    @cached_property
    def lifecycle(self) -> LifecycleService:
        from .services.lifecycle import LifecycleService

        return LifecycleService(self)

    def branch_deleted(self, project: str, branch: str) -> list[str]:
        """A branch is gone (deleted from the hosted repository or the git host): its
        release stops and its branch host goes; returns what was done."""
        return self.lifecycle.branch_deleted(project, branch)

    def promote_preflight(
        self, project: str, deployment: str, run_dry: bool = True
    ) -> PromotionPreflight:
        """Before `promote` to production: what differs between the deployment's
        environment and production (variable names present in one only, build-variable
        hash, webhook sources, production's rule errors and warnings) and the pending
        migrations (the release command's own dry run when it has one, run in
        production's sandbox; else that a release command will run). `.ok` is False on
        errors: `deploys.promote` refuses it then."""
        from .services.preflight import promote_preflight

        return promote_preflight(self, project, deployment, run_dry)

    def cleanup(self, project: str | None = None, dry_run: bool = False) -> list[CleanupReport]:
        """`tristage gc`: remove old deployments of one project (every project when
        None) under its `[cleanup]` policy, with their artifacts and logs; `dry_run`
        only says what would go. Never a live deployment, one in progress, or one of
        production's rollback targets."""
        names = [project] if project is not None else self.project_service.names()
        return [self.lifecycle.cleanup.run(name, dry_run) for name in names]

    def destroy_project(self, project: str, confirm: str) -> DestroyReport:
        """`tristage destroy`: stop and remove a project with all its data, after a final
        backup of each environment's data (kept; its path is in the report). `confirm`
        must be the project's name."""
        return self.lifecycle.destroy(project, confirm)

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

    def run_control_plane(
        self,
        host: str,
        port: int,
        log: Callable[[str], None] | None = None,
        edge: EdgeOptions | None = None,
    ) -> None:
        """`tristage up`: router, deploy worker, supervisor, scheduler, HTTP API and
        dashboard in the foreground, until SIGINT/SIGTERM stops them and their releases;
        with `edge` of kind `caddy`, the production edge in front of the router."""
        from .up import run_foreground

        run_foreground(self, host, port, log, edge)

    def detach_control_plane(self, up_args: list[str], timeout: float = 60.0) -> tuple[int, Path]:
        """`tristage up --detach`: start it in the background; (pid, log file) once it serves."""
        from .services.daemon import detach

        return detach(self, up_args, timeout)

    def stop_control_plane(self, timeout: float = 30.0) -> ControlPlaneInfo | None:
        """`tristage down`: stop the running control plane (None: none was running)."""
        from .services.daemon import forget_pidfile

        info = self.deploys.stop_controlplane(timeout)
        forget_pidfile(self)
        return info

    def install_service(
        self, up_args: list[str], *, user: bool, path: Path | None = None, low_ports: bool = False
    ) -> ServiceUnit:
        """`tristage service install`: a systemd unit running `tristage up ARGS`."""
        from .services.daemon import install_unit

        return install_unit(self, up_args, user=user, path=path, low_ports=low_ports)

    def run_command(
        self,
        project: str,
        environment: str,
        command: tuple[str, ...],
        output: Callable[[str], None],
        yes: bool = False,
        timeout: float = 3600.0,
        terminal: bool = False,
    ) -> int:
        """`tristage run`: `command` in a fresh process of the deployment `environment`
        serves (its sandbox, variables and data directory), its redacted output to
        `output` as it comes; returns its exit code. Audited; production needs `yes`.
        `terminal`: give it a terminal of its own when stdin is one (prompts, a shell)."""
        from .services.pipeline_steps import run_one_off

        return run_one_off(self, project, environment, command, output, yes, timeout, terminal)

    # -- projects (services/projects.py) ---------------------------------
    def init_project(
        self,
        root: Path,
        preset: Preset = "professional",
        name: str | None = None,
        force: bool = False,
    ) -> InitResult:
        return self.project_service.init(root, preset, name, force)

    def open_project(self, start: Path | None = None) -> ProjectRef:
        """The project of the working copy at `start` (walking up), registered/updated."""
        return self.project_service.open(start or Path.cwd())

    def open_named_project(self, name: str) -> ProjectRef:
        """A registered project by name (`-p/--project`), from its working copy when it
        is still where it was registered, else its last stored configuration."""
        return self.project_service.named(name)

    def projects(self) -> list[ProjectRef]:
        return [self.project(name) for name in self.project_service.names()]

    def project(self, name: str) -> ProjectRef:
        return self.project_service.get(name)

    def config_for(self, project: str) -> PipelineConfig:
        """The project's last validated configuration (as stored by init/open)."""
        return self.project_service.config(project)

    def project_salt(self, project: str) -> bytes:
        return self.project_service.salt(project)

    # -- branches ----------------------------------------------------------
    def resolve_branch(self, config: PipelineConfig, branch: str) -> branches.Match:
        match = branches.resolve(config, branch)
        if match is None:
            raise NotFound(
                f"branch {branch!r} matches no environment",
                "add a pattern to an environment's `branches` in tristage.toml",
            )
        return match
