"""Scheduled jobs: each `[environments.X.cron]` entry runs, when due, in a fresh process
of the environment's live release (its sandbox, variables and data directory: the path
of `tristage run`), with its exit code, duration and output (redacted) kept as a run.

A run still going when the entry is due again is not started twice: the due time is
recorded as `skipped`. Missed runs (the control plane was down) are caught up once. A
failing run raises a `cron_failed` alert. The clock is injected (`tick(now)`), so
schedules are testable without waiting for them.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..domain.monitor import Kind
from ..errors import NotFound, TristageError
from .project_records import project_names

if TYPE_CHECKING:
    from ..api import Tristage

OUTPUT_CAP = 32 * 1024  # bytes of a run's output kept (its end)
TIMEOUT = 3600.0  # a run longer than this is stopped (exit code 124)
Alert = Callable[[str, str, str, str], None]  # project, environment, deployment, message


def next_due(schedule: str, after: float) -> float:
    """The first time `schedule` (local time) fires after `after`."""
    from croniter import croniter

    start = dt.datetime.fromtimestamp(after).astimezone()
    return float(croniter(schedule, start).get_next(float))


class CronService:
    def __init__(self, api: Tristage) -> None:
        self.api = api
        self._threads: dict[int, threading.Thread] = {}
        self.alert: Alert | None = None  # the control plane's monitor, when it runs

    # -- reading ------------------------------------------------------------------
    def jobs(self, project: str, environment: str | None = None) -> list[dict[str, Any]]:
        """Each scheduled entry: environment, schedule, command, next due time and its
        last run (status, exit code)."""
        cfg = self.api.config_for(project)
        envs = [environment] if environment else list(cfg.environments)
        now = time.time()
        out = []
        for env in envs:
            for schedule, command in cfg.env(env).cron.items():
                last = self.api.store.query_one(
                    "SELECT * FROM cron_runs WHERE project=? AND environment=? AND schedule=?"
                    " AND command=? AND status != 'skipped' ORDER BY id DESC LIMIT 1",
                    (project, env, schedule, command),
                )
                out.append({
                    "environment": env, "schedule": schedule, "command": command,
                    "next": next_due(schedule, now),
                    "last_status": last["status"] if last else None,
                    "last_exit_code": last["exit_code"] if last else None,
                    "last_at": last["started_at"] if last else None,
                })  # fmt: skip
        return out

    def runs(
        self, project: str, environment: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """The latest runs, newest first, with their duration and last output line."""
        cfg = self.api.config_for(project)
        if environment is not None:
            cfg.env(environment)
        rows = self.api.store.query(
            "SELECT * FROM cron_runs WHERE project=? AND (? IS NULL OR environment=?)"
            " ORDER BY id DESC LIMIT ?",
            (project, environment, environment, limit),
        )
        out = []
        for r in rows:
            lines = [x for x in (r["output"] or "").splitlines() if x.strip()]
            started, ended = r["started_at"], r["ended_at"]
            out.append({
                "id": r["id"], "environment": r["environment"], "schedule": r["schedule"],
                "command": r["command"], "deployment": r["deployment"], "due": r["due_at"],
                "started": started, "status": r["status"], "exit_code": r["exit_code"],
                "duration": ended - started if started is not None and ended is not None
                else None,
                "reason": r["reason"], "last_line": lines[-1][:200] if lines else None,
            })  # fmt: skip
        return out

    def output(self, project: str, run_id: int) -> str:
        """The (redacted) output of one run."""
        row = self.api.store.query_one(
            "SELECT output FROM cron_runs WHERE project=? AND id=?", (project, run_id)
        )
        if row is None:
            raise NotFound(f"{project} has no cron run {run_id}", "see 'tristage cron runs'")
        return str(row["output"])

    # -- running ------------------------------------------------------------------
    def recover(self) -> int:
        """After a control plane stopped: runs it left `running` are `interrupted`."""
        return self.api.store.execute(
            "UPDATE cron_runs SET status='interrupted', ended_at=?, reason=?"
            " WHERE status='running'",
            (time.time(), "the control plane stopped while it ran"),
        )

    def tick(self, now: float | None = None) -> list[int]:
        """Start every entry due since it was last looked at (once, however many times
        it was due meanwhile), in the background; the new runs' ids. An entry seen for
        the first time starts counting from `now`."""
        now = time.time() if now is None else now
        started: list[int] = []
        for project in project_names(self.api.store):
            try:
                cfg = self.api.config_for(project)
            except TristageError:
                continue
            for env, ecfg in cfg.environments.items():
                for schedule, command in ecfg.cron.items():
                    run = self._due(project, env, schedule, command, now)
                    if run is not None:
                        started.append(run)
        return started

    def wait(self, timeout: float = 60.0) -> None:
        """Wait for the runs started by this service to end (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))

    def _due(self, project: str, env: str, schedule: str, command: str, now: float) -> int | None:
        store = self.api.store
        key = (project, env, schedule, command)
        with store.transaction():
            state = store.query_one(
                "SELECT checked_at FROM cron_state WHERE project=? AND environment=?"
                " AND schedule=? AND command=?",
                key,
            )
            if state is None:
                store.execute(
                    "INSERT INTO cron_state (project, environment, schedule, command,"
                    " checked_at) VALUES (?,?,?,?,?)",
                    (*key, now),
                )
                return None
            due = next_due(schedule, state["checked_at"])
            if due > now:
                return None
            store.execute(
                "UPDATE cron_state SET checked_at=? WHERE project=? AND environment=?"
                " AND schedule=? AND command=?",
                (now, *key),
            )
            running = store.query_one(
                "SELECT id FROM cron_runs WHERE project=? AND environment=? AND schedule=?"
                " AND command=? AND status='running'",
                key,
            )
            live = self.api.deploys.live(project, env)
            skip = (
                f"run {running['id']} is still going" if running
                else None if live else f"{env} has no live deployment"
            )  # fmt: skip
            run_id = store.insert(
                "INSERT INTO cron_runs (project, environment, schedule, command, deployment,"
                " due_at, started_at, ended_at, status, reason) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (*key, live, due, None if skip else time.time(), time.time() if skip else None,
                 "skipped" if skip else "running", skip),
            )  # fmt: skip
        if skip:
            return None
        thread = threading.Thread(
            target=self._run, args=(run_id, project, env, command), name=f"cron-{run_id}",
            daemon=True,
        )  # fmt: skip
        self._threads[run_id] = thread
        thread.start()
        return run_id

    def _run(self, run_id: int, project: str, env: str, command: str) -> None:
        from .pipeline_steps import run_one_off

        chunks: list[str] = []
        size = 0

        def output(text: str) -> None:
            nonlocal size
            chunks.append(text)
            size += len(text)
            while size > OUTPUT_CAP and len(chunks) > 1:
                size -= len(chunks.pop(0))

        started = time.monotonic()
        reason = None
        try:
            code = run_one_off(
                self.api, project, env, ("/bin/sh", "-c", command), output, yes=True,
                timeout=TIMEOUT,
            )  # fmt: skip
        except (TristageError, OSError) as exc:
            code, reason = 1, str(exc)
        text = "".join(chunks)[-OUTPUT_CAP:]
        status = "ok" if code == 0 else "failed"
        ended = time.time()
        self.api.store.execute(
            "UPDATE cron_runs SET ended_at=?, status=?, exit_code=?, reason=?, output=? WHERE id=?",
            (ended, status, code, reason, text, run_id),
        )
        self._threads.pop(run_id, None)
        if status == "failed":
            row = self.api.store.query_one("SELECT deployment FROM cron_runs WHERE id=?",
                                           (run_id,))  # fmt: skip
            took = time.monotonic() - started
            lines = [x for x in text.splitlines() if x.strip()]
            last = f"; last line: {lines[-1][:200]}" if lines else ""
            message = (
                f"{project}/{env}: cron job {command!r} failed with exit code {code} after "
                f"{took:.1f}s (run {run_id}){last}"
            )
            self._alert(project, env, (row or {}).get("deployment") or "", message, run_id)

    def _alert(self, project: str, env: str, dep: str, message: str, run_id: int) -> None:
        if self.alert is not None:
            self.alert(project, env, dep, message)
            return
        cfg = self.api.config_for(project)
        monitor = self.api.monitor.monitor(dict, lambda line: None)
        monitor.raise_alert(cfg, project, env, dep, Kind.cron_failed, "error", message,
                            {"cron_run": run_id})  # fmt: skip
