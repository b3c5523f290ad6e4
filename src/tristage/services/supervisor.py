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
    next_check = time.monotonic() + tuning.replica_check
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
            if rel.crash_loop and time.time() - rel.crashes[-1] >= tuning.crash_window:
                await _recovered(cp, rel, tuning.crash_window)
            if rel.process.is_web and time.monotonic() >= next_check:
                await _check(cp, rel, tuning.replica_failures)
                next_check = time.monotonic() + tuning.replica_check
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
        looping = len(rel.crashes) >= tuning.crash_limit
        reason = (
            f"crash loop: the {rel.process.type} process ended {len(rel.crashes)} times "
            f"within {tuning.crash_window:g}s (last: {how})"
        )
        # a crash-looping web process takes its deployment down (`crashed`); any other
        # type is marked `crashed` itself (the web processes keep serving) and retried
        # at the longest backoff until it runs a whole crash window
        if looping and rel.process.is_web:
            # a reconcile that read the store before the status changes must not bring
            # it back up between the two steps
            cp.failed_starts[rel.dep.id] = time.monotonic()
            await cp.set_status(rel.dep.id, DeployStatus.crashed, reason)
            cp.releases.pop(rel.key, None)
            await cp.forget_release(rel.dep.id, rel.process)
            cp.log(f"{rel.key} crashed: {reason}")
            await cp.report_crash_loop(rel, reason)
            await cp.reconcile()
            return
        backoff = tuning.restart_backoff[min(len(rel.crashes) - 1, len(tuning.restart_backoff) - 1)]
        if looping:
            backoff = tuning.restart_backoff[-1]
            rel.status = "crashed"
            if not rel.crash_loop:
                rel.crash_loop = True
                cp.log(f"{rel.key} crashed: {reason}")
                rel.crash_alert = await cp.report_crash_loop(rel, reason)
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


async def _recovered(cp: PlaneCore, rel: Release, window: float) -> None:
    """A crash-looping process ran a whole crash window: healthy again, alert resolved."""
    rel.crash_loop = False
    rel.status = "healthy"
    why = f"{rel.process} ran {window:g}s without ending"
    cp.log(f"{rel.key} recovered: {why}")
    await cp.save_release(rel)
    await cp.resolve_crash_loop(rel, why)


async def _check(cp: PlaneCore, rel: Release, failures: int) -> None:
    """One health check of a running web process: `unhealthy` (out of the rotation)
    after `failures` failures in a row, `healthy` (back in) once it answers again."""
    if rel.status not in ("healthy", "unhealthy"):
        return
    ok, why = await cp.check_once(rel)
    if cp.releases.get(rel.key) is not rel or rel.status not in ("healthy", "unhealthy"):
        return  # it was restarted, drained or stopped meanwhile
    if ok:
        rel.failed_checks = 0
        if rel.status == "unhealthy":
            rel.status = "healthy"
            cp.log(f"{rel.key} answers its health check again: back in the rotation")
            await cp.save_release(rel)
            cp.reroute()
        return
    rel.failed_checks += 1
    if rel.failed_checks >= failures and rel.status == "healthy":
        rel.status = "unhealthy"
        cp.log(f"{rel.key} failed its health check {rel.failed_checks} times in a row "
               f"({why}): out of the rotation until it answers again")  # fmt: skip
        await cp.save_release(rel)
        cp.reroute()
