"""The deploy pipeline: claim queued deployments, build, migrate, start, health-check.

Builds run in a worker thread (one at a time by default) through the runtime's
sandbox; only a release that passed its health check makes its deployment
`ready` and its environment's alias move to it.
"""

from __future__ import annotations

import asyncio
import functools
import time

from ..domain.deployments import Deployment, Status
from ..edges.builders import BuildContext, BuildLog
from ..errors import TristageError
from . import pipeline_steps as steps
from .deploys import READY_MARK
from .plane_core import PlaneCore
from .releases import StartFailed


class DeployPipeline(PlaneCore):
    """The deploy half of the control plane (mixed into `ControlPlane`)."""

    async def claim_queued(self) -> None:
        for dep in await self._db(self._claim_rows, 8 - len(self.pipelines)):
            self.pipelines[dep.id] = self._spawn_task(self._pipeline(dep), f"deploy-{dep.id}")

    def _claim_rows(self, slots: int) -> list[Deployment]:
        """(store thread) Move up to `slots` queued deployments to `building`, oldest first."""
        store = self.api.store
        claimed: list[Deployment] = []
        while len(claimed) < slots:
            if (
                store.query_one("SELECT 1 FROM deployments WHERE status=? LIMIT 1", ("queued",))
                is None
            ):
                break  # the common case on a nudge: no write transaction
            with store.transaction():
                row = store.query_one(
                    "SELECT * FROM deployments WHERE status=? ORDER BY seq LIMIT 1",
                    (Status.queued.value,),
                )
                if row is None:
                    break
                store.execute(
                    "UPDATE deployments SET status=?, updated_at=? WHERE id=?",
                    (Status.building.value, time.time(), row["id"]),
                )
            claimed.append(Deployment.from_row({**row, "status": Status.building.value}))
        return claimed

    # -- the deploy pipeline -------------------------------------------------------
    async def _pipeline(self, dep: Deployment) -> None:
        log = BuildLog(
            self.svc.log_path(dep.project, dep.id, build=True),
            await self._db(self.api.variables.redactor, dep.project),
        )
        self.log(
            f"{dep.id} {dep.project}/{dep.environment} {dep.branch}@{dep.commit[:7]}: building"
        )
        track = functools.partial(self._track, dep.id)
        try:
            runtime = await self.choose_runtime(dep, log)
            async with self.build_slots:
                artifact, web, build_hash, layers, langs = await asyncio.to_thread(
                    steps.build_artifact, self.api, dep, log, self._settings_for, track, runtime
                )
            dep = await self._db(
                steps.mark_built, self.api, dep.id, artifact, web, build_hash, layers, langs
            )
            await asyncio.to_thread(
                steps.run_migration, self.api, dep, log, self._settings_for, track, runtime
            )
            log.line("> starting the release")
            started = time.monotonic()
            rel = await self.start_release(dep)
            log.line(f"  healthy in {time.monotonic() - started:.2f}s on port {rel.port}")
        except asyncio.CancelledError:
            reason = self.cancel_reasons.pop(dep.id, None)
            log.line(reason or "canceled: the control plane stopped")
            if reason is not None:  # not the control plane stopping (it marks them itself)
                await asyncio.shield(self.set_status(dep.id, Status.canceled, reason))
            raise
        except (TristageError, OSError) as exc:
            reason = str(exc)
            if isinstance(exc, StartFailed):
                reason = await self._with_output(dep, exc, log)
            log.line(f"error: {reason}")
            await self.set_status(dep.id, Status.error, reason)
            self.log(f"{dep.id} error: {reason}")
            return
        finally:
            self.pipelines.pop(dep.id, None)
            self.contexts.pop(dep.id, None)
        rel.dep = await self._db(steps.mark_ready, self.api, dep)
        await self.reconcile()
        url = await self._db(self.svc.home_url, rel.dep)
        log.line(f"{READY_MARK}{url}")  # routed: a push's follower ends on this line
        log.close()
        self.log(f"{dep.id} ready: {url}")

    async def _with_output(self, dep: Deployment, exc: StartFailed, log: BuildLog) -> str:
        """A failed start's reason with the app's last line; its last lines in the log."""
        tail = await asyncio.to_thread(steps.release_log_tail, self.api, dep)
        if not tail:
            return str(exc)
        log.line("  the app's last output:")
        for line in tail:
            log.line(f"  | {line}")
        last = steps.last_app_line(tail)
        if last is None:
            return str(exc)
        return str(StartFailed(f"{exc.message}; the app's last line: {last}", exc.hint))

    async def cancel_deployment(self, dep_id: str, reason: str) -> bool:
        """Cancel a deployment that has not settled: a queued one is marked `canceled`;
        a running pipeline is stopped (its build step killed, a starting release
        stopped) and marked. False when it had already settled."""
        for _ in range(500):
            task = self.pipelines.get(dep_id)
            if task is not None and not task.done():
                self.cancel_reasons[dep_id] = reason
                ctx = self.contexts.get(dep_id)
                if ctx is not None:
                    ctx.cancel()
                task.cancel()
                return True
            status = await self._db(self._cancel_queued, dep_id, reason)
            if status is None or status not in (Status.building, Status.starting):
                return status is Status.canceled
            await asyncio.sleep(0.01)  # just claimed: its pipeline is about to exist
        return False

    def _cancel_queued(self, dep_id: str, reason: str) -> Status | None:
        """(store thread) Mark a queued deployment canceled; its status (`canceled` only
        when this did it), None when it does not exist."""
        store = self.api.store
        if store.execute(
            "UPDATE deployments SET status=?, reason=?, updated_at=? WHERE id=? AND status=?",
            (Status.canceled.value, reason, time.time(), dep_id, Status.queued.value),
        ):
            return Status.canceled
        row = store.query_one("SELECT status FROM deployments WHERE id=?", (dep_id,))
        if row is None:
            return None
        status = Status(row["status"])
        return None if status is Status.canceled else status

    def _track(self, dep_id: str, ctx: BuildContext) -> None:
        """Remember a deployment's running build step so shutdown can cancel it."""
        self.contexts[dep_id] = ctx
