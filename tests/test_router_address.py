"""Where URLs point when no control plane runs: `$TRISTAGE_PORT`, else 8080."""

from __future__ import annotations

from pathlib import Path

import pytest

from tristage.api import Tristage
from tristage.errors import UsageError


def test_urls_use_tristage_port_and_a_bad_value_says_how_to_fix_it(
    api: Tristage, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.init_project(repo, "professional")
    name = api.open_project(repo).name
    monkeypatch.delenv("TRISTAGE_PORT", raising=False)
    assert api.deploys.router_address() == ("127.0.0.1", 8080)
    assert api.deploys.environment_url(name, "preview") == f"http://preview.{name}.localhost:8080"
    monkeypatch.setenv("TRISTAGE_PORT", "80")
    assert api.deploys.environment_url(name, "production") == f"http://{name}.localhost"
    monkeypatch.setenv("TRISTAGE_PORT", "9123")
    assert api.deploys.router_address() == ("127.0.0.1", 9123)
    monkeypatch.setenv("TRISTAGE_PORT", "eighty")
    with pytest.raises(UsageError) as err:
        api.deploys.router_address()
    assert "TRISTAGE_PORT" in err.value.message and err.value.hint
