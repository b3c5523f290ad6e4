"""A database per environment: export/import, backups with retention, restore, drill, clone.

The data store of an environment is a SQLite file under the platform home or a
PostgreSQL database on a configured server; an environment that `shares` another
uses the owner's store (and the owner's backups). Every change writes an audit event.

`DataService` (`api.data`) is the one entry point; the work is done by small services:
`data_stores` (DATABASE_URL, opening stores), `data_snapshots` (export/import),
`data_backups` (backup, verify, prune, restore, drill), `data_clone` (sanitized clone)
and `data_schedule` (scheduled backups). Records and errors are in `data_records`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..domain.snapshot import Table
from ..edges.backup_targets import BackupTarget
from ..edges.snapshot_io import Progress, Source
from .data_backups import BackupService
from .data_clone import CloneService
from .data_records import (
    BACKUP_KINDS,
    BackupDamaged,
    BackupInfo,
    CloneReport,
    ConfirmationRequired,
    DataStoreT,
    DrillCheck,
    DrillReport,
    ExportResult,
    ImportMode,
    LoadResult,
    PruneResult,
    RestoreResult,
    SanitizeRefused,
    UndoCopy,
)
from .data_schedule import BackupScheduler
from .data_snapshots import SnapshotService, file_sha256
from .data_stores import DataStores

if TYPE_CHECKING:
    from ..api import Tristage

__all__ = [
    "BACKUP_KINDS",
    "BackupDamaged",
    "BackupInfo",
    "CloneReport",
    "ConfirmationRequired",
    "DataService",
    "DataStoreT",
    "DrillCheck",
    "DrillReport",
    "ExportResult",
    "ImportMode",
    "LoadResult",
    "PruneResult",
    "RestoreResult",
    "SanitizeRefused",
    "UndoCopy",
    "file_sha256",
]


class DataService:
    """The data of a project's environments (`api.data`)."""

    def __init__(self, api: Tristage) -> None:
        self.api = api
        self.stores = DataStores(api)
        self.snapshots = SnapshotService(api, self.stores)
        self.backup_service = BackupService(api, self.stores, self.snapshots)
        self.cloner = CloneService(api, self.stores, self.backup_service)
        self.scheduler = BackupScheduler(
            api,
            self.stores,
            self.backup_service,
            lambda project, source, target: self.clone(project, source, target, yes=True),
        )

    # -- stores -----------------------------------------------------------
    def owner(self, project: str, environment: str) -> str:
        return self.stores.owner(project, environment)

    def database_url(self, project: str, environment: str) -> str:
        """The DATABASE_URL the app of `environment` receives (store created if needed)."""
        return self.stores.database_url(project, environment)

    def data_dir(self, project: str, environment: str) -> Path:
        """The environment's private data directory (0700), the one a release may write
        (a swap of its files that a killed restore or clone left is finished or undone
        first)."""
        return self.backup_service.files.recovered(project, self.owner(project, environment))

    def open_store(self, project: str, environment: str) -> DataStoreT:
        return self.stores.open_store(project, environment)

    def target(self, project: str, environment: str) -> BackupTarget:
        return self.stores.target(project, environment)

    def tables(self, project: str, environment: str) -> list[Table]:
        return self.stores.tables(project, environment)

    # -- export / import ----------------------------------------------------
    def export(
        self,
        project: str,
        environment: str,
        out: Path | None = None,
        fmt: Literal["dir", "zip", "convex"] = "dir",
        tables: Sequence[str] = (),
        progress: Progress | None = None,
    ) -> ExportResult:
        with self._audited("db.export", project, environment):
            return self.snapshots.export(project, environment, out, fmt, tables, progress)

    def import_snapshot(
        self,
        project: str,
        environment: str,
        path: Path,
        tables: Sequence[str] = (),
        mode: ImportMode = None,
        progress: Progress | None = None,
        not_production: bool = False,
    ) -> LoadResult:
        """Load a snapshot in one transaction, checked against its manifest. A Convex ZIP
        into a non-production environment is sanitized with `[sanitize]` (it may hold
        production data) unless `not_production`."""
        return self.snapshots.import_snapshot(
            project, environment, path, tables, mode, progress, not_production
        )

    # -- backups --------------------------------------------------------------
    def backup(
        self,
        project: str,
        environment: str,
        kind: str = "manual",
        note: str | None = None,
        progress: Progress | None = None,
    ) -> BackupInfo:
        with self._audited("db.backup", project, environment):
            return self.backup_service.backup(project, environment, kind, note, progress)

    @contextmanager
    def _audited(self, action: str, project: str, environment: str) -> Iterator[None]:
        """Record `<action>.failed` (the kind of error, no value) when the block fails."""
        try:
            yield
        except BaseException as exc:
            self.api.audit.record(
                f"{action}.failed",
                project=project,
                environment=environment,
                details={"error": type(exc).__name__},
            )
            raise

    def backups(self, project: str, environment: str) -> list[BackupInfo]:
        """Published backups, newest first (the target is the truth; the catalog a cache)."""
        return self.backup_service.backups(project, environment)

    def verify(self, project: str, environment: str, backup_id: str) -> Source:
        """Open a backup and check every file against its manifest; raises if damaged."""
        return self.backup_service.verify(project, environment, backup_id)

    def prune(self, project: str, environment: str, dry_run: bool = False) -> PruneResult:
        """Apply retention to scheduled, pre-migration and safety backups; manual ones
        are kept until deleted by hand, or the newest `keep_manual`."""
        result = self.backup_service.prune(project, environment, dry_run)
        if not dry_run:
            self.backup_service.prune_undo(project, environment)
        return result

    def delete_backup(
        self, project: str, environment: str, backup_id: str, yes: bool = False
    ) -> None:
        """Delete one backup (needs `yes`); audited."""
        self.backup_service.delete(project, environment, backup_id, yes)

    # -- restore / drill ---------------------------------------------------------
    def restore(
        self,
        project: str,
        environment: str,
        backup_id: str,
        yes: bool = False,
        progress: Progress | None = None,
    ) -> RestoreResult:
        with self._audited("db.restore", project, environment):
            return self.backup_service.restore(project, environment, backup_id, yes, progress)

    def undo_restore(self, project: str, environment: str, yes: bool = False) -> UndoCopy:
        """Undo the latest PostgreSQL restore (its replaced database is put back; the
        live one is kept in its place, so the undo can be undone); returns that copy."""
        with self._audited("db.restore.undo", project, environment):
            return self.backup_service.undo(project, environment, yes)

    def undo_copies(self, project: str, environment: str) -> list[UndoCopy]:
        """The databases restores replaced and kept for `undo_restore`, newest first."""
        return self.backup_service.undo_copies(project, environment)

    def drill(self, project: str, environment: str, backup_id: str | None = None) -> DrillReport:
        """Restore a backup (default: the latest) into a scratch store and compare."""
        with self._audited("db.drill", project, environment):
            return self.backup_service.drill(project, environment, backup_id)

    # -- clone -----------------------------------------------------------------
    def clone(
        self,
        project: str,
        source_env: str,
        target_env: str,
        yes: bool = False,
        progress: Progress | None = None,
    ) -> CloneReport:
        with self._audited("db.clone", project, target_env):
            return self.cloner.clone(project, source_env, target_env, yes, progress)

    # -- deploys and the scheduler -------------------------------------------------
    def snapshot_before_migration(self, project: str, environment: str, deployment: str) -> str:
        """Snapshot the store before a migration; returns the backup id to restore."""
        return self.backup(project, environment, kind="pre-migration", note=deployment).id

    def run_due_backups(self, now: dt.datetime) -> list[str]:
        """Run scheduled backups that are due (missed runs caught up once); returns ids."""
        return self.scheduler.run_due_backups(now)

    def schedule_state(self, project: str) -> list[dict[str, Any]]:
        return self.scheduler.schedule_state(project)

    def job_state(self, project: str) -> list[dict[str, Any]]:
        """Scheduled drills and refreshes: schedule, last run, result, error."""
        return self.scheduler.job_state(project)
