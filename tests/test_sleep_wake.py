"""Idle branch previews sleep and wake on their next request (a real control plane, a
real router process, real HTTP); production and the environments' own hosts never sleep."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from conftest import git, run_cli
from test_deploy_helpers import ControlPlane, deployment_id, make_project, push, wait_for
from tristage.domain.config import parse_config
from tristage.errors import ConfigError

pytestmark = [pytest.mark.timeout(180)]


def test_an_idle_branch_preview_sleeps_and_the_next_request_wakes_it(
    repo: Path, cp: ControlPlane
) -> None:
    project = make_project(repo)
    toml = (project / "tristage.toml").read_text()
    toml = toml.replace("[environments.preview]\n", '[environments.preview]\nsleep_after = "2s"\n')
    (project / "tristage.toml").write_text(toml)
    git(project, "commit", "-qam", "previews sleep")
    assert run_cli("deployments", cwd=project).returncode == 0  # registers the new config
    prod = deployment_id(push(project, "main").stderr)
    git(project, "checkout", "-qb", "try-this")
    branch = deployment_id(push(project, "try-this").stderr)  # a branch host ("*")
    git(project, "checkout", "-qb", "test")
    qa = deployment_id(push(project, "test").stderr)  # preview's own host (pushed last)
    host = "try-this.shop.localhost"
    assert cp.serves(host) == branch
    assert cp.serves("preview.shop.localhost") == qa
    wait_for(lambda: f"{branch} sleeps" in cp.output(), 30, "the branch preview to sleep")
    wait_for(lambda: f"{branch} stopped" in cp.output(), 30, "its release to stop")
    started = time.monotonic()
    with httpx.Client(timeout=60, trust_env=False) as c:
        r = c.get(f"http://127.0.0.1:{cp.port}/", headers={"Host": host})
    woke = time.monotonic() - started
    print(f"woke in {woke * 1000:.0f} ms")
    assert r.status_code == 200 and r.json()["deployment"] == branch
    assert f"{branch} wakes" in cp.output()
    assert woke < 30
    # production and the preview environment's own host stay up all along
    out = cp.output()
    assert f"{prod} sleeps" not in out and f"{qa} sleeps" not in out
    assert cp.serves("shop.localhost") == prod
    assert cp.serves("preview.shop.localhost") == qa


def test_sleep_after_is_refused_on_production_and_must_be_a_duration() -> None:
    base = '[project]\nname = "shop"\n[environments.production]\ntier = "production"\n'
    with pytest.raises(ConfigError, match="production never sleeps"):
        parse_config(base + 'sleep_after = "30m"\n')
    preview = '[environments.preview]\ntier = "preview"\nbranches = ["*"]\n'
    with pytest.raises(ConfigError, match="not a duration"):
        parse_config(base + preview + 'sleep_after = "soon"\n')
    cfg = parse_config(base + preview + 'sleep_after = "30m"\n')
    assert cfg.environments["preview"].sleep_after == "30m"
