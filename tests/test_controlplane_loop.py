"""The control plane's event loop, which the embedded router shares, never waits on the
state store: with another process holding the store's write lock, requests through the
router are still answered at once while the control plane has store work to do."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from conftest import git
from test_deploy_helpers import (
    ControlPlane,
    commit,
    deployment_id,
    make_project,
    push,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

LOCK_SECONDS = 2.0


class WriteLock:
    """A second connection to the state store holding its write lock (`BEGIN IMMEDIATE`)."""

    def __init__(self, db: Path, seconds: float) -> None:
        self.db, self.seconds = db, seconds
        self.held = threading.Event()
        self.released_at = 0.0
        self._thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        conn = sqlite3.connect(self.db, isolation_level=None, timeout=10)
        try:
            conn.execute("BEGIN IMMEDIATE")
            self.held.set()
            time.sleep(self.seconds)
            conn.execute("ROLLBACK")
            self.released_at = time.monotonic()
        finally:
            conn.close()

    def __enter__(self) -> WriteLock:
        self._thread.start()
        assert self.held.wait(10), "could not take the store's write lock"
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(self.seconds + 10)


def _release_pid(db: Path, deployment: str) -> int:
    conn = sqlite3.connect(db, timeout=10)
    try:
        row = conn.execute(
            "SELECT json_extract(handle, '$.pid') FROM releases WHERE deployment=?", (deployment,)
        ).fetchone()
    finally:
        conn.close()
    assert row is not None, f"no release of {deployment}"
    return int(row[0])


def test_router_answers_while_the_store_is_write_locked(repo: Path, cp: ControlPlane) -> None:
    project = make_project(repo)
    prod = deployment_id(push(project, "main").stderr)
    git(project, "checkout", "-qb", "test")
    commit(project, {"note.txt": "qa\n"}, "qa change")
    preview = deployment_id(push(project, "test").stderr)
    assert cp.serves("shop.localhost") == prod
    assert cp.serves("preview.shop.localhost") == preview
    db = cp.home / "state.db"
    crashed_pid = _release_pid(db, preview)

    timings: list[tuple[float, float, int]] = []  # (sent at, seconds, status)
    with WriteLock(db, LOCK_SECONDS) as lock:
        locked_at = time.monotonic()
        # the supervisor restarts the preview release and records it in the store
        os.killpg(crashed_pid, signal.SIGKILL)
        while time.monotonic() - locked_at < LOCK_SECONDS - 0.3:
            sent = time.monotonic()
            r = cp.get("shop.localhost")
            timings.append((sent - locked_at, time.monotonic() - sent, r.status_code))
            assert r.json()["deployment"] == prod
            time.sleep(0.02)
    assert lock.released_at > 0
    slow = [t for t in timings if t[1] > 1.0 or t[2] != 200]
    assert len(timings) > 5 and not slow, (
        f"{len(slow)} of {len(timings)} requests were slow or failed while the store was "
        f"locked: {slow[:3]}\n{cp.output()}"
    )
    # once the lock is gone the control plane catches up: preview runs again, re-recorded
    wait_for(lambda: _release_pid(db, preview) != crashed_pid, 15, "the preview restart")
    wait_for(lambda: cp.serves("preview.shop.localhost") == preview, 15, "preview serving")
    assert cp.serves("shop.localhost") == prod
