from __future__ import annotations

import pytest

from tristage.domain.config import Tier, parse_config
from tristage.domain.presets import render
from tristage.errors import ConfigError


@pytest.mark.parametrize("preset", ["simple", "professional"])
def test_presets_validate(preset: str) -> None:
    cfg = parse_config(render(preset, "myapp"))  # type: ignore[arg-type]
    assert cfg.project.name == "myapp"
    assert cfg.project.preset == preset
    assert {e.tier for e in cfg.environments.values()} == set(Tier)
    assert cfg.production == "production"


def test_simple_preview_shares_development() -> None:
    cfg = parse_config(render("simple", "a"))
    assert cfg.owner("preview") == "development"
    assert cfg.owner("production") == "production"
    pro = parse_config(render("professional", "a"))
    assert pro.owner("preview") == "preview"


def test_three_mistakes_three_messages() -> None:
    text = """
[project]
name = "Bad Name"
[environments.preview]
tier = "staging"
branches = ["test", "bad branch"]
[environments.production]
tier = "production"
branches = ["main"]
"""
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "tristage.toml")
    paths = [p.path for p in exc.value.problems]
    assert paths == [
        "project.name",
        "environments.preview.tier",
        "environments.preview.branches[1]",
    ]
    assert "'development', 'preview' or 'production'" in exc.value.problems[1].message
    assert exc.value.exit_code == 2


def test_unknown_key_and_missing_key() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config('[environments.p]\ntier="production"\ncolour="x"\n')
    paths = {p.path: p.message for p in exc.value.problems}
    assert paths["project"] == "required key is missing"
    assert "unknown key" in paths["environments.p.colour"]


def test_cross_checks() -> None:
    text = """
[project]
name = "a"
[environments.development]
tier = "development"
shares = "nope"
[environments.production]
tier = "production"
[environments.prod2]
tier = "production"
"""
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    msgs = [str(p) for p in exc.value.problems]
    assert any(
        m.startswith("environments.development.shares: no environment named 'nope'") for m in msgs
    )
    assert any("only one environment may have tier 'production'" in m for m in msgs)


def test_invalid_toml_and_cron() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config("[project\n")
    assert "not valid TOML" in exc.value.problems[0].message
    bad_cron = render("professional", "a").replace('"0 2 * * *"', '"every day"')
    with pytest.raises(ConfigError) as exc2:
        parse_config(bad_cron)
    assert exc2.value.problems[0].path == "environments.production.backups.schedule"


def test_settings_inherit_app_defaults() -> None:
    text = render("professional", "a").replace(
        "[environments.preview]\n", '[environments.preview]\nhealth_path = "/ready"\n'
    )
    cfg = parse_config(text)
    assert cfg.settings("preview").health_path == "/ready"
    assert cfg.settings("production").health_path == "/"
    assert cfg.settings("production").health_timeout == 30


def test_replicas_per_environment_over_the_apps() -> None:
    text = render("professional", "a").replace(
        "[app]\n", "[app]\nprocesses = { web = 2, worker = 1 }\n"
    )
    text += "\n[environments.production.processes]\nweb = 3\nclock = 1\n"
    cfg = parse_config(text)
    assert cfg.settings("production").processes == {"web": 3, "worker": 1, "clock": 1}
    assert cfg.settings("preview").processes == {"web": 2, "worker": 1}
    with pytest.raises(ConfigError) as exc:
        parse_config(text.replace("web = 3", "web = 0"))
    assert "environments.production.processes" in exc.value.problems[0].path
