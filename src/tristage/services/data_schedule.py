"""Scheduled data jobs, each caught up once when missed: backups (`backups.schedule`),
restore drills of the latest backup (`backups.drill`, monthly by default when backups
are scheduled) and sanitized refreshes of an environment from production (`refresh`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import TristageError
from .data_backups import BackupService
from .data_stores import DataStores
from .project_records import project_names

if TYPE_CHECKING:
    from ..api import Tristage


class BackupScheduler:
    """Scheduled backups: run the ones that are due and report their state."""

    def __init__(
        self,
        api: Tristage,
        stores: DataStores,
        backups: BackupService,
        clone: Callable[[str, str, str], Any] | None = None,
    ) -> None:
        self.api = api
        self.stores = stores
        self.backup_service = backups
        self.clone = clone  # (project, source, target) -> CloneReport

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
        self.run_due_jobs(now)
        return done

    def run_due_jobs(self, now: dt.datetime) -> list[tuple[str, str, str, str]]:
        """Run the drills and refreshes that are due; (project, env, job, result) each."""
        out: list[tuple[str, str, str, str]] = []
        for project in project_names(self.api.store):
            try:
                cfg = self.stores.config(project)
            except TristageError:
                continue
            for name, env in cfg.environments.items():
                if env.shares is not None:
                    continue
                drill = env.backups.drill_schedule()
                if drill and self._claim(project, name, "drill", drill, now):
                    out.append((project, name, "drill", self._run(project, name, "drill")))
                refresh = env.refresh if cfg.production and self.clone is not None else None
                if refresh and self._claim(project, name, "refresh", refresh, now):
                    out.append((project, name, "refresh", self._run(project, name, "refresh")))
        return out

    def _claim(self, project: str, env: str, job: str, schedule: str, now: dt.datetime) -> bool:
        """Whether `job` is due (a run of its cron expression since the last one), taken
        by this scheduler; a new or changed schedule starts from now."""
        from croniter import croniter

        local_now = now.astimezone()
        ts = local_now.timestamp()
        state = self.api.store.query_one(
            "SELECT * FROM data_jobs WHERE project=? AND environment=? AND job=?",
            (project, env, job),
        )
        if state is None or state["schedule"] != schedule:
            self.api.store.execute(
                "INSERT INTO data_jobs (project, environment, job, schedule, last_run)"
                " VALUES (?,?,?,?,?) ON CONFLICT (project, environment, job) DO UPDATE SET"
                " schedule=excluded.schedule, last_run=excluded.last_run, last_result=NULL,"
                " last_error=NULL",
                (project, env, job, schedule, ts),
            )
            return False
        due = croniter(schedule, local_now).get_prev(dt.datetime).timestamp()
        if due <= state["last_run"]:
            return False
        return bool(
            self.api.store.execute(
                "UPDATE data_jobs SET last_run=? WHERE project=? AND environment=? AND job=?"
                " AND last_run=?",
                (ts, project, env, job, state["last_run"]),
            )
        )

    def _run(self, project: str, env: str, job: str) -> str:
        try:
            if job == "drill":
                report = self.backup_service.drill(project, env)
                result = "passed" if report.passed else "failed: " + "; ".join(report.problems[:3])
            else:
                assert self.clone is not None
                source = self.stores.config(project).production
                assert source is not None
                clone = self.clone(project, source, env)
                result = f"{sum(clone.rows.values())} rows"
            error = None if result == "passed" or job == "refresh" else result
        except Exception as exc:  # one failing job must not stop the others
            result = "error"
            error = getattr(exc, "message", None) or type(exc).__name__
            self.api.audit.record(
                f"db.{job}.failed",
                project=project,
                environment=env,
                details={"reason": error, "scheduled": True},
            )
        self.api.store.execute(
            "UPDATE data_jobs SET last_result=?, last_error=? WHERE project=? AND"
            " environment=? AND job=?",
            (result, error, project, env, job),
        )
        return result

    def schedule_state(self, project: str) -> list[dict[str, Any]]:
        return self.api.store.query(
            "SELECT * FROM data_backup_schedule WHERE project=? ORDER BY environment", (project,)
        )

    def job_state(self, project: str) -> list[dict[str, Any]]:
        """The drills and refreshes of the project: schedule, last run, result, error."""
        return self.api.store.query(
            "SELECT * FROM data_jobs WHERE project=? ORDER BY environment, job", (project,)
        )
