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
    assert [e.action for e in api.audit.events(action="db.refresh.failed")] == ["db.refresh.failed"]


def test_refresh_is_refused_on_production() -> None:
    with pytest.raises(ConfigError, match="production is never refreshed"):
        parse_config(
            '[project]\nname = "x"\n[environments.production]\ntier = "production"\n'
            'branches = ["main"]\nrefresh = "0 4 * * 1"\n',
            "tristage.toml",
        )


def test_prune_keeps_manual_backups_until_deleted_by_hand_or_keep_manual(
    api: Tristage, repo: Path
) -> None:
    env = Env(api, repo, "sqlite", secrets.token_hex(4))
    env.configure()
    env.seed("production", users=2)
    manual = [api.data.backup("shop", "production").id for _ in range(3)]
    scheduled = [api.data.backup("shop", "production", kind="scheduled").id for _ in range(3)]
    for i, bid in enumerate(manual + scheduled):
        at = dt.datetime(2030, 1, 1 + i * 5, tzinfo=dt.UTC).timestamp()
        api.store.execute("UPDATE data_backups SET created_at=? WHERE id=?", (at, bid))
    result = api.data.prune("shop", "production")
    assert set(manual) <= set(result.keep) and scheduled[0] in result.delete
    assert all("kept until deleted by hand" in result.keep[m][0] for m in manual)
    # by hand: needs --yes, and is audited
    from tristage.services.data import ConfirmationRequired

    with pytest.raises(ConfirmationRequired):
        api.data.delete_backup("shop", "production", manual[0])
    api.data.delete_backup("shop", "production", manual[0], yes=True)
    assert manual[0] not in {b.id for b in api.data.backups("shop", "production")}
    assert api.audit.events(action="db.backup.delete")[0].target == manual[0]
    # keep_manual: the newest N
    cfg = repo / "tristage.toml"
    cfg.write_text(
        cfg.read_text().replace("encrypt = false\n", "encrypt = false\nkeep_manual = 1\n")
    )
    api.open_project(repo)
    result = api.data.prune("shop", "production")
    assert manual[1] in result.delete and result.keep[manual[2]] == ("manual 1 of keep_manual = 1",)
