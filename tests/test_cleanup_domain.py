"""Which deployments the cleanup keeps (domain/cleanup.py): property tests."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tristage.domain.cleanup import (
    DAY,
    CleanupPolicy,
    DeploymentFacts,
    expired_branches,
    select,
)

NOW = 1_000_000_000.0
ENVS = ["development", "preview", "production"]
BRANCHES = ["dev", "test", "main", "feature/a", "feature/b", "other"]


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[DeploymentFacts], set[str], list[str]]:
    n = draw(st.integers(0, 40))
    deps: list[DeploymentFacts] = []
    for i in range(n):
        env = draw(st.sampled_from(ENVS))
        branch = draw(st.sampled_from(BRANCHES))
        source = draw(st.sampled_from([None, *[d.id for d in deps]])) if deps else None
        deps.append(
            DeploymentFacts(
                id=f"{i:08d}",
                seq=i,
                environment=env,
                branch=branch,
                status=draw(st.sampled_from(["ready", "ready", "error", "building", "crashed"])),
                created_at=NOW - draw(st.floats(0, 60)) * DAY,
                takes_host=draw(st.booleans()),
                source=source,
            )
        )
    live = set(draw(st.lists(st.sampled_from([d.id for d in deps]), max_size=3))) if deps else set()
    prod = [d.id for d in deps if d.environment == "production"]
    history = draw(st.lists(st.sampled_from(prod), max_size=10)) if prod else []
    return deps, live, history


policies = st.builds(
    CleanupPolicy,
    keep_per_environment=st.integers(1, 6),
    keep_per_branch=st.integers(1, 4),
    keep_production=st.integers(1, 4),
    branch_max_age_days=st.floats(1, 30),
)


@given(histories(), policies, st.sets(st.sampled_from(BRANCHES), max_size=2))
def test_never_removes_what_must_stay(
    h: tuple[list[DeploymentFacts], set[str], list[str]],
    policy: CleanupPolicy,
    deleted: set[str],
) -> None:
    deps, live, history = h
    plan = select(
        deps,
        policy,
        now=NOW,
        live=live,
        production="production",
        production_history=history,
        deleted_branches=deleted,
    )
    by_id = {d.id: d for d in deps}
    assert set(plan.keep) | set(plan.remove) == set(by_id)
    assert not set(plan.keep) & set(plan.remove)
    removed = set(plan.remove)
    # the live deployment of every environment, and deployments in progress
    assert not removed & live
    assert not removed & {d.id for d in deps if d.status in ("queued", "building", "starting")}
    # production's previous `keep_production` rollback targets
    current = next((d for d in reversed(history) if d in live), None)
    seen: list[str] = []
    for dep in reversed(history):
        if dep not in seen and dep != current and by_id[dep].status == "ready":
            seen.append(dep)
    assert not removed & set(seen[: policy.keep_production])
    # a kept deployment's reused artifact stays with it
    for dep_id in plan.keep:
        source = by_id[dep_id].source
        assert source is None or source not in removed
    # stable: selecting again over what was kept keeps it all
    kept = [d for d in deps if d.id in plan.keep]
    again = select(
        kept,
        policy,
        now=NOW,
        live=live,
        production="production",
        production_history=history,
        deleted_branches=deleted,
    )
    assert again.remove == ()


def test_counts_and_ages() -> None:
    def dep(i: int, env: str, branch: str, days: float, takes_host: bool = True) -> DeploymentFacts:
        return DeploymentFacts(f"{i:08d}", i, env, branch, "ready", NOW - days * DAY, takes_host)

    deps = [dep(i, "development", "dev", 1) for i in range(5)]
    deps += [dep(6 + i, "development", "feature/new", 2, False) for i in range(4)]
    deps += [dep(10, "development", "feature/old", 20, False)]
    deps += [dep(11, "development", "feature/new", 2, False)]
    policy = CleanupPolicy(keep_per_environment=3, keep_per_branch=2, branch_max_age_days=14)
    plan = select(deps, policy, now=NOW, live={"00000000"})
    # dev: the newest 3 and the live one; feature/new: the newest 2; feature/old: expired
    assert set(plan.remove) == {"00000001", "00000006", "00000007", "00000008", "00000010"}
    assert "live in development" in plan.keep["00000000"]
    assert expired_branches(deps, policy, now=NOW) == ["feature/old"]
    # a deleted branch's deployments all go
    plan = select(deps, policy, now=NOW, deleted_branches={"feature/new"})
    assert "00000011" in plan.remove
