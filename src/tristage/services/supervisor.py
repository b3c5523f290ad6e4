"""The supervisor: one task per running release that restarts it when it ends.

A release that exits (or whose log pump died, leaving the app orphaned) is
stopped for good first (its cgroup emptied, so it is never doubled), then
restarted on the same port with backoff; too many exits within the crash window
mark the deployment `crashed`. A release killed by the kernel for memory is
reported as such: in its log, the deployment's reason and an alert. When the
machine cannot tell whether a release runs (out of file descriptors), the
supervisor waits and asks again instead of taking it for an exit.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from ..domain.deployments import Status as DeployStatus
from ..edges.runtime import State, Status
from ..errors import TristageError
from .releases import Release

if TYPE_CHECKING:
    from .plane_core import PlaneCore

POLL = 0.2
UNKNOWN_BACKOFF = 1.0


def _state(rel: Release) -> Status:
    try:
        return rel.state()
    except OSError as exc:
        return Status(State.unknown, detail=f"cannot tell: {exc.strerror}")


async def supervise(cp: PlaneCore, rel: Release) -> None:
    tuning = cp.tuning
    unknown_since: float | None = None
    while not cp.stopping:
        await asyncio.sleep(POLL)
        current = cp.releases.get(rel.key)
        if current is None or current.status == "stopped":
            return
        rel = current
        if rel.status == "draining":
            # a drain may end with the release wanted again (healthy once more): keep
            # watching it; a drain that stops it removes it from `releases` first
            continue
        st = _state(rel)
        if st.state is State.running and rel.status != "restarting":
            unknown_since = None
            continue
        if st.state is State.unknown:
            if unknown_since is None:
                unknown_since = time.monotonic()
                cp.log(f"{rel.dep.id}: {st.detail}; checking again")
            await asyncio.sleep(UNKNOWN_BACKOFF)
            continue
        if st.state is State.orphaned:
            cp.log(f"{rel.key}: {st.detail}; stopping the app so it is not doubled")
        if st.state is State.running:  # still `restarting`: never left running unchecked
            cp.log(f"{rel.key}: its restart was not health-checked; stopping it to retry")
        if rel.status != "restarting":
            rel.status = "restarting"
            cp.reroute()  # the router stops sending it requests at once
        try:
            final = await asyncio.to_thread(rel.runtime.stop, rel.handle, 0.5)
        except OSError as exc:
            cp.log(f"{rel.key}: could not clean up ({exc}); retrying")
            await asyncio.sleep(UNKNOWN_BACKOFF)
            continue
        # how it ended: the out-of-memory kill whichever look saw it, else the exit code
        ended = next((x for x in (st, final) if x.oom_killed), None) or (
            st if st.exit_code is not None else final
        )
        how = ended.describe()
        if ended.oom_killed:
            await cp.report_oom(rel, how)
        await cp._db(cp.records.record_exit, rel.dep.id, how, rel.process)
        now = time.time()
        rel.crashes = [t for t in rel.crashes if now - t < tuning.crash_window] + [now]
        # a crash-looping web process takes its deployment down (`crashed`); any other
        # type is retried at the longest backoff for as long as its release runs
        if len(rel.crashes) >= tuning.crash_limit and rel.process.is_web:
            reason = (
                f"crash loop: the web process ended {len(rel.crashes)} times within "
                f"{tuning.crash_window:g}s (last: {how})"
            )
            # a reconcile that read the store before the status changes must not bring
            # it back up between the two steps
            cp.failed_starts[rel.dep.id] = time.monotonic()
            await cp.set_status(rel.dep.id, DeployStatus.crashed, reason)
            cp.releases.pop(rel.key, None)
            await cp.forget_release(rel.dep.id, rel.process)
            cp.log(f"{rel.key} crashed: {reason}")
            await cp.reconcile()
            return
        backoff = tuning.restart_backoff[min(len(rel.crashes) - 1, len(tuning.restart_backoff) - 1)]
        cp.log(f"{rel.key} {how}; restarting in {backoff:g}s")
        await cp.save_release(rel)
        await asyncio.sleep(backoff)
        if cp.stopping or cp.releases.get(rel.key) is not rel:
            return
        try:
            ok, why = await cp.restart_in_place(rel)
        except (OSError, TristageError) as exc:  # e.g. out of file descriptors: try again
            cp.log(f"{rel.key} restart failed: {exc}; trying again")
            continue
        if ok:
            cp.log(f"{rel.key} restarted")
        else:
            cp.log(f"{rel.key} restart failed: {why}")
