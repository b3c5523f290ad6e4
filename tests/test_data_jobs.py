"""Scheduled safety: monthly restore drills of production's latest backup and a
scheduled sanitized refresh of preview from production, through the scheduler that
`tristage up` calls (caught up once when missed)."""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path

import pytest

from test_data import SANITIZE, Env, config_text
from tristage.api import Tristage
from tristage.domain.config import parse_config
from tristage.errors import ConfigError


def test_drills_monthly_and_refreshes_preview_weekly(api: Tristage, repo: Path) -> None:
    env = Env(api, repo, "sqlite", secrets.token_hex(4))
    text = config_text("sqlite", env.token, SANITIZE).replace(
        '[environments.preview]\ntier = "preview"\n',
        '[environments.preview]\ntier = "preview"\nrefresh = "0 4 * * 1"\n',
    )
    (repo / "tristage.toml").write_text(text)
    api.open_project(repo)
    env.seed("production", users=6)
    tz = dt.datetime.now().astimezone().tzinfo
    start = dt.datetime(2030, 1, 30, 12, 0, tzinfo=tz)  # a Wednesday
    assert api.data.run_due_backups(start) == []  # baselines for every job
    assert {(j["environment"], j["job"]) for j in api.data.job_state("shop")} == {
        ("production", "drill"),
        ("preview", "refresh"),
    }
    api.data.backup("shop", "production")
    # Feb 1st 04:00 is a drill (monthly by default once backups are scheduled); the
    # Monday after, Feb 4th 04:00, a refresh of preview
    api.data.run_due_backups(dt.datetime(2030, 2, 1, 5, 0, tzinfo=tz))
    jobs = {j["job"]: j for j in api.data.job_state("shop")}
    assert jobs["drill"]["last_result"] == "passed" and jobs["refresh"]["last_result"] is None
    assert env.dump("preview") == {}
    api.data.run_due_backups(dt.datetime(2030, 2, 4, 5, 0, tzinfo=tz))
    jobs = {j["job"]: j for j in api.data.job_state("shop")}
    assert jobs["refresh"]["last_result"] == "18 rows" and jobs["refresh"]["last_error"] is None
    emails = [r[1] for r in env.dump("preview")["users"]]
    assert len(emails) == 6 and all(e.endswith("@example.invalid") for e in emails)
    # nothing more is due the same day; a refresh that fails is recorded, not raised
    api.data.run_due_backups(dt.datetime(2030, 2, 4, 6, 0, tzinfo=tz))
    env.configure({})  # every column unruled now: the refresh is refused
    (repo / "tristage.toml").write_text(
        config_text("sqlite", env.token, {}).replace(
            '[environments.preview]\ntier = "preview"\n',
            '[environments.preview]\ntier = "preview"\nrefresh = "0 4 * * 1"\n',
        )
    )
    api.open_project(repo)
    api.data.run_due_backups(dt.datetime(2030, 2, 11, 5, 0, tzinfo=tz))
    jobs = {j["job"]: j for j in api.data.job_state("shop")}
    assert jobs["refresh"]["last_result"] == "error" and "refused" in jobs["refresh"]["last_error"]
    assert [e.action for e in api.audit.events(action="db.refresh.failed")] == [
        "db.refresh.failed"
    ]


def test_refresh_is_refused_on_production() -> None:
    with pytest.raises(ConfigError, match="production is never refreshed"):
        parse_config(
            '[project]\nname = "x"\n[environments.production]\ntier = "production"\n'
            'branches = ["main"]\nrefresh = "0 4 * * 1"\n',
            "tristage.toml",
        )
