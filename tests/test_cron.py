"""Scheduled jobs through a real control plane's live release, driven by an injected
clock: a per-minute entry runs in the release's sandbox with its variables and data
directory, is not started twice while a run is still going, keeps its exit code,
duration and output, and a failing job raises an alert."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import run_cli
from test_deploy_helpers import ControlPlane, deployments, make_project, push, wait_for
from tristage.api import Tristage
from tristage.domain.config import parse_config
from tristage.errors import ConfigError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CRON = """
[environments.production.cron]
"* * * * *" = "echo \\"in $TRISTAGE_DEPLOYMENT\\" > $TRISTAGE_DATA_DIR/cron.txt; sleep 6; echo done"
"*/1 * * * *" = "echo boom; exit 3"
"""


@pytest.fixture
def cp(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ControlPlane]:
    monkeypatch.setenv("TRISTAGE_CRON", "off")  # the test's clock drives the schedule
    plane = ControlPlane(home).start()
    yield plane
    plane.stop()


def runs(api: Tristage) -> dict[int, dict[str, object]]:
    return {int(str(r["id"])): r for r in api.cron.runs("shop", "production", limit=50)}


def test_a_per_minute_job_runs_once_at_a_time_with_its_history_and_alerts(
    repo: Path, home: Path, cp: ControlPlane
) -> None:
    make_project(repo)
    (repo / "tristage.toml").write_text((repo / "tristage.toml").read_text() + CRON)
    from conftest import git

    git(repo, "commit", "-qam", "cron")
    assert push(repo, "main", timeout=120).returncode == 0
    dep = deployments(repo)[0]["id"]
    api = Tristage(home)
    t0 = (time.time() // 60 + 24 * 60) * 60 + 1  # a minute's start tomorrow, plus 1 s
    assert api.cron.tick(t0) == []  # first look: counts from now on
    assert api.cron.tick(t0 + 30) == []  # not due yet
    slow, failing = sorted(api.cron.tick(t0 + 60))
    # the failing one ends with its exit code and raises an alert
    wait_for(lambda: runs(api)[failing]["status"] == "failed", 30, "the failing run")
    assert runs(api)[failing]["exit_code"] == 3 and runs(api)[failing]["last_line"] == "boom"
    wait_for(
        lambda: any(a.kind == "cron_failed" and "exit code 3" in a.message
                    for a in api.monitor.alerts("shop", "production")), 10, "the alert",
    )  # fmt: skip
    # due again while the slow one still runs: skipped, not started twice
    assert runs(api)[slow]["status"] == "running"
    again = api.cron.tick(t0 + 120)
    assert len(again) == 1 and again[0] != failing  # only the failing entry ran again
    skipped = [r for r in runs(api).values() if r["status"] == "skipped"]
    assert len(skipped) == 1 and "still going" in str(skipped[0]["reason"])
    wait_for(lambda: runs(api)[slow]["status"] == "ok", 30, "the slow run to end")
    done = runs(api)[slow]
    assert done["exit_code"] == 0 and done["deployment"] == dep
    assert float(str(done["duration"])) >= 5.5
    assert api.cron.output("shop", slow).splitlines()[-1] == "done"
    # it ran in the live release's sandbox: its variables and data directory
    written = home / "data" / "shop" / "production" / "cron.txt"
    assert written.read_text().strip() == f"in {dep}"
    # the CLI
    ls = json.loads(run_cli("cron", "ls", "--json", cwd=repo).stdout)
    assert {r["command"].split(";")[0][:4] for r in ls} == {"echo"}
    assert all(r["next"] > time.time() for r in ls)
    r = run_cli("cron", "runs", "--env", "production", cwd=repo)
    assert r.returncode == 0 and "skipped" in r.stdout and "failed" in r.stdout, r.stdout
    r = run_cli("cron", "runs", "--log", str(slow), cwd=repo)
    assert r.stdout.strip().endswith("done")
    api.cron.wait()
    api.close()


def test_a_bad_schedule_is_one_clear_error() -> None:
    text = (
        '[project]\nname = "x"\n[environments.production]\ntier = "production"\n'
        '[environments.production.cron]\n"every day" = "true"\n'
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert "environments.production.cron" in str(info.value)
    assert "not a cron expression" in str(info.value)
