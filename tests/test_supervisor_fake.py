"""The control plane's supervisor, reconciler and crash-loop logic against `FakeRuntime`.

A real control plane runs in process (its router, store thread and reconcile loop)
on a real project and home; its releases run in the fake runtime, so a crash, an
out-of-memory kill, a lost supervisor or a machine out of file descriptors is one
call away and each check takes milliseconds instead of process starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import git
from tristage.api import Tristage
from tristage.edges.runtime import Handle, ProcessSpec, State, Status
from tristage.edges.runtime.fake import FakeRuntime
from tristage.services import supervisor
from tristage.services.controlplane import ControlPlane
from tristage.services.releases import Release, Tuning
from tristage.services.runtimes import Runtimes

pytestmark = pytest.mark.timeout(60)

APPS = Path(__file__).parent / "apps"
TUNING = Tuning(restart_backoff=(0.01,), crash_limit=3, crash_window=5, tick=0.05)


EMFILE = OSError(errno.EMFILE, os.strerror(errno.EMFILE))


class Fake(FakeRuntime):
    """The fake runtime, counting how many copies of a deployment ever ran at once, and
    able to make `status` fail as it does when the machine is out of file descriptors."""

    def __init__(self) -> None:
        super().__init__()
        self.most_copies: dict[str, int] = {}
        self.status_error: OSError | None = None
        self.status_calls = 0
        self.fail_after_start = 0  # that many status calls after the next start fail
        self._failing = 0

    def copies(self, name: str) -> int:
        return sum(1 for s in self.running() if s.name == name)

    def start(self, spec: ProcessSpec) -> Handle:
        handle = super().start(spec)
        n = self.copies(spec.name)
        self.most_copies[spec.name] = max(self.most_copies.get(spec.name, 0), n)
        self._failing, self.fail_after_start = self.fail_after_start, 0
        return handle

    def status(self, handle: Handle) -> Status:
        self.status_calls += 1
        if self.status_error is not None:
            raise self.status_error
        if self._failing > 0:
            self._failing -= 1
            raise EMFILE
        return super().status(handle)


@dataclass
class Plane:
    api: Tristage
    cp: ControlPlane
    fake: Fake
    repo: Path
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "\n".join(self.lines)

    async def until(self, check: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.output()}")
            await asyncio.sleep(0.005)

    async def deploy(self, branch: str = "main", change: str | None = None) -> str:
        """Deploy `branch` (after committing `change` to it) and wait until it is ready."""
        if change is not None:
            await asyncio.to_thread(commit_change, self.repo, branch, change)
        dep, _ = await asyncio.to_thread(self.api.deploys.deploy, "shop", self.repo, branch)
        await self.until(lambda: self.healthy(dep.id), f"{dep.id} to be ready", 20)
        return dep.id

    async def served(self, environment: str) -> str:
        """What the router answers for `environment`'s host."""
        host = await asyncio.to_thread(self.api.deploys.environment_host, "shop", environment)
        async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
            r = await client.get(f"http://127.0.0.1:{self.cp.port}/", headers={"Host": host})
            return r.text

    async def serving(self, environment: str, dep: str, timeout: float = 10.0) -> None:
        """Wait until `environment`'s host answers from `dep` (a ready deployment is switched
        to a moment after its health check passes)."""
        deadline = time.monotonic() + timeout
        while (got := await self.served(environment)) != f"fake {dep}":
            if time.monotonic() > deadline:
                what = f"{environment} serves {got[:80]!r}, not {dep}"
                raise AssertionError(f"{what}\n{self.output()}")
            await asyncio.sleep(0.01)

    def status(self, dep_id: str) -> tuple[str, str | None]:
        row = self.api.store.query_one(
            "SELECT status, reason FROM deployments WHERE id=?", (dep_id,)
        )
        assert row is not None
        return row["status"], row["reason"]

    def healthy(self, dep_id: str) -> Release | None:
        rel = self.cp.releases.get(dep_id)
        if rel is None or rel.status != "healthy" or self.status(dep_id)[0] != "ready":
            return None
        return rel

    def restarted(self, dep_id: str, old: Handle) -> Release | None:
        rel = self.healthy(dep_id)
        return rel if rel is not None and rel.handle != old else None

    async def crash(self, dep_id: str, code: int = 1, oom: bool = False) -> Handle:
        """Make the running release of `dep_id` end; its handle."""
        old: Handle = self.cp.releases[dep_id].handle
        self.fake.crash(old, code, oom)
        return old

    async def crash_and_restart(self, dep_id: str, code: int = 1, oom: bool = False) -> Release:
        """Make the release end and wait for its healthy successor."""
        old = await self.crash(dep_id, code, oom)
        rel: Release = await self.until(lambda: self.restarted(dep_id, old), "the restart")
        return rel

    async def answer(self, port: int) -> str:
        async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
            return (await client.get(f"http://127.0.0.1:{port}/")).text


def make_project(repo: Path, api: Tristage) -> None:
    for item in (APPS / "hello").iterdir():
        if item.is_file():
            shutil.copy(item, repo / item.name)
    api.init_project(repo, name="shop")
    toml = repo / "tristage.toml"
    toml.write_text(toml.read_text().replace("[app]\n", "[app]\ndrain_seconds = 0.05\n"))
    api.open_project(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first")


def commit_change(repo: Path, branch: str, text: str) -> None:
    if git(repo, "branch", "--list", branch) == "":
        git(repo, "checkout", "-qb", branch)
    else:
        git(repo, "checkout", "-q", branch)
    (repo / "note.txt").write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", text)


@contextlib.asynccontextmanager
async def plane(home: Path, repo: Path) -> AsyncIterator[Plane]:
    api = Tristage(home, actor="tester")
    await asyncio.to_thread(make_project, repo, api)
    fake = Fake()
    runtimes = Runtimes(forced="fake")
    runtimes.add(fake)
    lines: list[str] = []
    cp = ControlPlane(api, "127.0.0.1", 0, tuning=TUNING, log=lines.append, runtimes=runtimes)
    stop = asyncio.Event()
    up = asyncio.Event()
    task = asyncio.create_task(cp.run(stop, on_ready=lambda _port: up.set()))
    p = Plane(api, cp, fake, repo, lines)
    try:
        await asyncio.wait_for(up.wait(), 15)
        yield p
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        api.close()


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """The supervisor's polling, in milliseconds (its logic is what is tested)."""
    monkeypatch.setattr(supervisor, "POLL", 0.005)
    monkeypatch.setattr(supervisor, "UNKNOWN_BACKOFF", 0.02)


# -- the tests ----------------------------------------------------------------------------------
def test_a_crash_restarts_the_release_on_the_same_port(home: Path, repo: Path) -> None:
    async def main() -> None:
        async with plane(home, repo) as p:
            dep = await p.deploy()
            first = p.cp.releases[dep]
            port, handle = first.port, first.handle
            assert await p.answer(port) == f"fake {dep}"
            began = time.monotonic()
            p.fake.crash(handle, code=3)
            rel = await p.until(lambda: p.restarted(dep, handle), "the restart")
            took = time.monotonic() - began
            assert rel.port == port
            assert await p.answer(port) == f"fake {dep}"
            assert p.fake.status(handle).exit_code == 3
            assert p.fake.copies(dep) == 1 and p.fake.most_copies[dep] == 1
            assert p.status(dep) == ("ready", None)
            assert "exited with exit code 3; restarting" in p.output()
            assert took < 2.0, f"the restart took {took:.2f}s"
            # the release's record holds the new handle
            row = await asyncio.to_thread(p.api.deploys.release, dep)
            assert row is not None and row["port"] == port

    run(main())


def test_a_crash_loop_marks_the_deployment_crashed(home: Path, repo: Path) -> None:
    async def main() -> None:
        async with plane(home, repo) as p:
            dep = await p.deploy()
            for _ in range(TUNING.crash_limit - 1):
                await p.crash_and_restart(dep, code=7)
                assert p.status(dep) == ("ready", None)
            await p.crash(dep, code=7)
            # the status is stored first, then the release is dropped from memory: the
            # store can say `crashed` a moment before the supervisor has taken it out
            await p.until(
                lambda: p.status(dep)[0] == "crashed" and dep not in p.cp.releases,
                "the crash loop",
            )
            _, reason = p.status(dep)
            assert reason is not None
            assert "crash loop" in reason and f"{TUNING.crash_limit} times" in reason, reason
            assert "exited with exit code 7" in reason, reason
            assert dep not in p.cp.releases
            assert p.fake.copies(dep) == 0
            await asyncio.sleep(TUNING.tick * 5)  # the reconciler does not bring it back
            assert p.fake.copies(dep) == 0 and p.status(dep)[0] == "crashed"
            assert len([s for s in p.fake.started if s.name == dep]) == TUNING.crash_limit
            assert await asyncio.to_thread(p.api.deploys.release, dep) is None
            audit = p.api.store.query(
                "SELECT details FROM audit_events WHERE action=? AND target=?",
                ("deploy.crashed", dep),
            )
            assert len(audit) == 1 and "crash loop" in audit[0]["details"]
            # and an alert through the monitor's path, as for any process type
            found = p.api.store.query("SELECT * FROM alerts WHERE kind='crash_loop'")
            assert len(found) == 1 and found[0]["deployment"] == dep
            assert "web.1 crash loop" in found[0]["message"], found[0]["message"]

    run(main())


def test_crashes_spread_beyond_the_window_are_not_a_loop(home: Path, repo: Path) -> None:
    async def main() -> None:
        async with plane(home, repo) as p:
            dep = await p.deploy()
            rel = p.cp.releases[dep]
            for _ in range(TUNING.crash_limit + 1):
                # the earlier crashes happened long ago, outside the window
                rel.crashes = [time.time() - TUNING.crash_window - 1] * len(rel.crashes)
                rel = await p.crash_and_restart(dep)
            assert len(rel.crashes) == 1  # only the last one is within the window
            assert p.status(dep) == ("ready", None)

    run(main())


def test_out_of_memory_is_reported_in_the_reason_and_alerts(home: Path, repo: Path) -> None:
    async def main() -> None:
        async with plane(home, repo) as p:
            dep = await p.deploy()
            await p.crash_and_restart(dep, oom=True)
            alerts = await asyncio.to_thread(p.api.monitor.alerts, "shop")
            oom = [a for a in alerts if a.kind == "out_of_memory"]
            assert len(oom) == 1 and oom[0].deployment == dep, alerts
            assert "out of memory" in oom[0].message
            assert "killed: out of memory; restarting" in p.output()
            for _ in range(TUNING.crash_limit - 2):
                await p.crash_and_restart(dep, oom=True)
            await p.crash(dep, oom=True)
            await p.until(lambda: p.status(dep)[0] == "crashed", "the crash loop")
            reason = p.status(dep)[1] or ""
            assert "crash loop" in reason and "out of memory" in reason, reason

    run(main())


def test_unknown_status_is_not_an_exit(home: Path, repo: Path) -> None:
    async def main() -> None:
        async with plane(home, repo) as p:
            dep = await p.deploy()
            rel = p.cp.releases[dep]
            handle, started = rel.handle, len(p.fake.started)
            p.fake.status_error = EMFILE
            calls = p.fake.status_calls
            await p.until(lambda: p.fake.status_calls >= calls + 5, "the supervisor to ask again")
            p.fake.status_error = None
            assert p.cp.releases[dep] is rel and rel.handle == handle
            assert len(p.fake.started) == started, "no restart while the status was unknown"
            assert p.fake.copies(dep) == 1 and p.fake.most_copies[dep] == 1
            assert p.fake.status(handle).state is State.running
            assert "Too many open files; checking again" in p.output()
            assert rel.task is not None and not rel.task.done(), "supervision must go on"
            # a real crash afterwards is restarted
            p.fake.crash(handle)
            new = await p.until(lambda: p.restarted(dep, handle), "the restart")
            assert new.port == rel.port and p.fake.copies(dep) == 1
            assert p.status(dep) == ("ready", None)

    run(main())


def test_out_of_file_descriptors_during_a_restart_is_retried(home: Path, repo: Path) -> None:
    """The machine runs out of file descriptors while a restarted release is being
    health-checked: the restart is retried until one is known healthy; never two copies,
    never a release left running unchecked."""

    async def main() -> None:
        async with plane(home, repo) as p:
            dep = await p.deploy()
            rel = p.cp.releases[dep]
            handle, port = rel.handle, rel.port
            p.fake.fail_after_start = 3
            p.fake.crash(handle)
            new = await p.until(lambda: p.restarted(dep, handle), "a healthy restart")
            assert new.port == port and await p.answer(port) == f"fake {dep}"
            assert p.fake.copies(dep) == 1 and p.fake.most_copies[dep] == 1
            # the injected EMFILEs are met by the restart's check or the supervisor's next look
            await p.until(lambda: "Too many open files" in p.output(), "the EMFILE to be seen")
            assert p.status(dep) == ("ready", None)
            row = await asyncio.to_thread(p.api.deploys.release, dep)
            assert row is not None and row["status"] == "healthy", row

    run(main())


def test_out_of_file_descriptors_during_a_deploys_health_check(home: Path, repo: Path) -> None:
    """The machine runs out of file descriptors while a new release is health-checked:
    the check asks again, the deployment becomes ready with one supervised copy."""

    async def main() -> None:
        async with plane(home, repo) as p:
            p.fake.fail_after_start = 2
            dep, _ = await asyncio.to_thread(p.api.deploys.deploy, "shop", p.repo, "main")
            await p.until(lambda: p.status(dep.id)[0] in ("ready", "error"), "the deploy")
            leaked = p.fake.copies(dep.id) if dep.id not in p.cp.releases else 0
            assert leaked == 0, "a release runs that nothing supervises"
            assert p.status(dep.id) == ("ready", None)
            rel = await p.until(lambda: p.healthy(dep.id), "the release to be healthy")
            assert rel.task is not None and not rel.task.done()
            assert p.fake.copies(dep.id) == 1 and p.fake.most_copies[dep.id] == 1

    run(main())


def test_an_orphan_is_stopped_before_the_restart(home: Path, repo: Path) -> None:
    async def main() -> None:
        async with plane(home, repo) as p:
            dep = await p.deploy()
            rel = p.cp.releases[dep]
            handle, port = rel.handle, rel.port
            p.fake.orphan(handle)
            new = await p.until(lambda: p.restarted(dep, handle), "the restart")
            assert p.fake.status(handle).state is State.exited  # the orphan was stopped
            assert new.port == port and await p.answer(port) == f"fake {dep}"
            assert p.fake.copies(dep) == 1
            assert p.fake.most_copies[dep] == 1, "two copies ran at once"
            assert "stopping the app so it is not doubled" in p.output()

    run(main())


# -- the reconciler -------------------------------------------------------------------------------
def test_a_newer_deployment_takes_over_and_the_superseded_one_is_stopped(
    home: Path, repo: Path
) -> None:
    async def main() -> None:
        async with plane(home, repo) as p:
            first = await p.deploy("dev", change="one")
            await p.serving("development", first)
            second = await p.deploy("dev", change="two")
            await p.until(lambda: p.fake.copies(first) == 0, f"{first} to be stopped")
            await p.serving("development", second)
            assert first not in p.cp.releases and p.fake.copies(second) == 1
            assert await asyncio.to_thread(p.api.deploys.release, first) is None
            assert p.status(first) == ("ready", None)  # superseded, not failed
            assert f"{first} stopped (drained)" in p.output()

    run(main())


def test_production_keeps_previous_releases_warm_and_rolls_back_without_a_start(
    home: Path, repo: Path
) -> None:
    async def main() -> None:
        async with plane(home, repo) as p:
            deps = [await p.deploy("main", change=f"v{n}") for n in range(4)]
            oldest, *warm = deps
            await p.until(lambda: p.fake.copies(oldest) == 0, "the oldest to be stopped")
            assert [p.fake.copies(d) for d in warm] == [1, 1, 1]  # live + keep_warm = 2
            await p.serving("production", deps[-1])
            started = len(p.fake.started)
            switch = await asyncio.to_thread(p.api.deploys.rollback, "shop", None, 5.0)
            assert switch.routed and switch.deployment.id == deps[-2]
            await p.serving("production", deps[-2])
            assert len(p.fake.started) == started, "an instant rollback starts nothing"

    run(main())


def test_a_crash_looping_worker_is_crashed_alerts_once_and_recovers(home: Path, repo: Path) -> None:
    async def main() -> None:
        async with plane(home, repo) as p:
            await asyncio.to_thread(
                (repo / "Procfile").write_text, "web: python app.py\nworker: python w.py\n"
            )
            dep = await p.deploy("main", "a worker")
            key = f"{dep}/worker.1"
            await p.until(lambda: key in p.cp.releases, "the worker to start")

            def alerts() -> list[dict[str, Any]]:
                return p.api.store.query("SELECT * FROM alerts WHERE kind='crash_loop'")

            for _ in range(TUNING.crash_limit):
                old = p.cp.releases[key].handle
                p.fake.crash(old, code=4)
                await p.until(lambda old=old: (r := p.cp.releases.get(key)) is not None
                              and r.handle != old, "the worker's restart")  # fmt: skip
            rel = p.cp.releases[key]
            assert rel.status == "crashed" and rel.crash_loop, rel.status
            # the web process serves on, the deployment stays ready
            assert p.healthy(dep) is not None and p.status(dep)[0] == "ready"
            await p.serving("production", dep)
            found = await asyncio.to_thread(alerts)
            assert len(found) == 1 and found[0]["resolved_at"] is None
            assert "worker.1 crash loop" in found[0]["message"], found[0]["message"]
            # once it has run a whole crash window without ending: healthy, alert resolved
            rel.crashes = [time.time() - TUNING.crash_window - 1] * len(rel.crashes)
            await p.until(lambda: rel.status == "healthy", "the worker to recover")
            await p.until(lambda: alerts()[0]["resolved_at"], "the alert to be resolved")
            found = await asyncio.to_thread(alerts)
            assert len(found) == 1 and not rel.crash_loop
            assert "ran" in found[0]["resolution"]

    run(main())
