"""Scheduled backups: the cron schedule of each environment, caught up once when missed."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from ..errors import TristageError
from .data_backups import BackupService
from .data_stores import DataStores
from .project_records import project_names

if TYPE_CHECKING:
    from ..api import Tristage


class BackupScheduler:
    """Scheduled backups: run the ones that are due and report their state."""

    def __init__(self, api: Tristage, stores: DataStores, backups: BackupService) -> None:
        self.api = api
        self.stores = stores
        self.backup_service = backups

    def run_due_backups(self, now: dt.datetime) -> list[str]:
        """Run scheduled backups that are due (missed runs caught up once); returns ids."""
        from croniter import croniter

        local_now = now.astimezone()  # naive = local time
        done: list[str] = []
        for project in project_names(self.api.store):
            try:
                cfg = self.stores.config(project)
            except TristageError:
                continue
            for name, env in cfg.environments.items():
                schedule = env.backups.schedule
                if env.shares is not None or not schedule:
                    continue
                state = self.api.store.query_one(
                    "SELECT * FROM data_backup_schedule WHERE project=? AND environment=?",
                    (project, name),
                )
                ts = local_now.timestamp()
                if state is None or state["schedule"] != schedule:
                    self.api.store.execute(
                        "INSERT INTO data_backup_schedule (project, environment, schedule,"
                        " last_run) VALUES (?,?,?,?) ON CONFLICT (project, environment)"
                        " DO UPDATE SET schedule=excluded.schedule, last_run=excluded.last_run,"
                        " last_backup=NULL, last_error=NULL",
                        (project, name, schedule, ts),
                    )
                    continue
                due = croniter(schedule, local_now).get_prev(dt.datetime).timestamp()
                if due <= state["last_run"]:
                    continue
                claimed = self.api.store.execute(
                    "UPDATE data_backup_schedule SET last_run=? WHERE project=? AND"
                    " environment=? AND last_run=?",
                    (ts, project, name, state["last_run"]),
                )
                if not claimed:
                    continue  # another scheduler took it
                try:
                    info = self.backup_service.backup(project, name, kind="scheduled")
                    self.backup_service.prune(project, name)
                    done.append(info.id)
                    self.api.store.execute(
                        "UPDATE data_backup_schedule SET last_backup=?, last_error=NULL"
                        " WHERE project=? AND environment=?",
                        (info.id, project, name),
                    )
                except Exception as exc:  # one failing store must not stop the others
                    reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                    self.api.store.execute(
                        "UPDATE data_backup_schedule SET last_error=? WHERE project=? AND"
                        " environment=?",
                        (reason, project, name),
                    )
                    self.api.audit.record(
                        "db.backup.failed",
                        project=project,
                        environment=name,
                        details={"reason": reason},
                    )
        return done

    def schedule_state(self, project: str) -> list[dict[str, Any]]:
        return self.api.store.query(
            "SELECT * FROM data_backup_schedule WHERE project=? ORDER BY environment", (project,)
        )
