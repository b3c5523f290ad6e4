"""Pure deploy decisions: ids, rollback targets, the warm set, the host table."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tristage.domain import aliases
from tristage.domain.config import NAME_RE
from tristage.domain.deployments import (
    distinct_recent,
    is_deployment_id,
    new_id,
    rollback_target,
    warm_set,
)


def test_ids_are_dns_labels_that_never_look_like_environment_names() -> None:
    for _ in range(500):
        dep = new_id()
        assert is_deployment_id(dep)
        assert not NAME_RE.match(dep)  # environment names start with a letter
        assert dep == dep.lower() and len(dep) <= 63


def test_rollback_target_is_the_previous_distinct_usable_deployment() -> None:
    history = ["a", "b", "c"]
    assert rollback_target(history, "c", {"a", "b", "c"}) == "b"
    assert rollback_target(history, "c", {"a", "c"}) == "a"  # b failed or was removed
    assert rollback_target(["a", "b", "a"], "a", {"a", "b"}) == "b"  # toggles
    assert rollback_target(["a"], "a", {"a"}) is None


def test_warm_set_keeps_n_previous() -> None:
    assert warm_set(["a", "b", "c", "d"], "d", 2, {"a", "b", "c", "d"}) == ["c", "b"]
    assert warm_set(["a", "b", "a"], "a", 2, {"a", "b"}) == ["b"]
    assert warm_set(["a", "b"], "b", 0, {"a", "b"}) == []


@given(st.lists(st.sampled_from("abcdef"), max_size=30), st.integers(0, 5))
def test_warm_set_properties(history: list[str], keep: int) -> None:
    current = history[-1] if history else None
    warm = warm_set(history, current, keep, set("abcdef"))
    assert len(warm) <= keep and current not in warm
    assert len(set(warm)) == len(warm)
    assert warm == [d for d in distinct_recent(history) if d != current][:keep]


def test_host_table_precedence() -> None:
    deps = [
        aliases.DeploymentRef("1abcdefg", "production", "main"),
        aliases.DeploymentRef("2abcdefg", "preview", "preview"),  # a branch named like an env
        aliases.DeploymentRef("3abcdefg", "preview", "feature/Log-in"),
    ]
    table = aliases.host_table(
        "shop",
        "production",
        ["development", "preview", "production"],
        {"production": "1abcdefg", "preview": "3abcdefg"},
        {d.branch: d for d in deps},
        deps,
    )
    assert table["shop.localhost"].deployment == "1abcdefg"
    assert table["production.shop.localhost"].deployment == "1abcdefg"
    assert table["preview.shop.localhost"].deployment == "3abcdefg"  # env wins over branch
    assert table["feature-log-in.shop.localhost"].deployment == "3abcdefg"
    assert table["2abcdefg.shop.localhost"].deployment == "2abcdefg"
    assert table["development.shop.localhost"].deployment is None
    assert aliases.url("shop.localhost", 8080) == "http://shop.localhost:8080"
    assert aliases.url("shop.localhost", 80) == "http://shop.localhost"


def test_webhook_ingest_hosts_are_the_hosts_the_router_serves_the_environment_on() -> None:
    from tristage.domain import webhooks

    table = aliases.host_table("shop", "production", ["preview", "production"], {}, {}, [])
    for env, production in (("preview", False), ("production", True)):
        hosts = webhooks.ingest_hosts("shop", env, production)
        assert hosts == aliases.environment_hosts("shop", env, "production")
        assert all(table[h].environment == env for h in hosts)
    assert aliases.environment_hosts("shop", "production", "production") == [
        "production.shop.localhost",
        "shop.localhost",
    ]
