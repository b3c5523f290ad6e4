"""Which deployments to keep under the cleanup policy, and why. Pure.

A deployment is never removed while it is live in an environment (routed or about to
be), while it is still in progress (queued, building, starting), or while production
could roll back to it (the previous `keep_production` deployments production served).
A deployment whose artifact a kept one reuses (a promote without a rebuild) is kept
with it. Then:

- every deployment of a deleted branch goes;
- of the deployments that take their environment's host (its exact branches, and
  promotes), the newest `keep_per_environment` of each environment are kept;
- of branch deployments (a branch a glob caught: `feature/x`, the catch-all), the
  newest `keep_per_branch` of each branch younger than `branch_max_age_days` are kept;
- everything else goes.

Selecting again over the kept deployments keeps them all (the selection is stable).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from .deployments import distinct_recent

DAY = 86400.0


@dataclass(frozen=True)
class CleanupPolicy:
    keep_per_environment: int = 10
    keep_per_branch: int = 3
    keep_production: int = 5
    branch_max_age_days: float = 14.0


@dataclass(frozen=True)
class DeploymentFacts:
    id: str
    seq: int
    environment: str
    branch: str
    status: str
    created_at: float
    takes_host: bool  # False: a branch a glob caught (served at its branch host only)
    source: str | None = None  # the deployment whose artifact it reuses


@dataclass(frozen=True)
class CleanupPlan:
    keep: dict[str, tuple[str, ...]]  # id -> reasons
    remove: tuple[str, ...]  # ids, newest first


IN_PROGRESS = frozenset({"queued", "building", "starting"})


def select(
    deployments: Sequence[DeploymentFacts],
    policy: CleanupPolicy,
    *,
    now: float,
    live: Collection[str] = (),
    production: str | None = None,
    production_history: Sequence[str] = (),
    deleted_branches: Collection[str] = (),
) -> CleanupPlan:
    """The deployments of one project to keep (with reasons) and to remove.

    `live`: the deployments environments serve or are switching to; `production_history`:
    the deployments production served, oldest first (its alias history)."""
    ordered = sorted(deployments, key=lambda d: d.seq, reverse=True)
    by_id = {d.id: d for d in ordered}
    reasons: dict[str, list[str]] = {}

    def keep(dep_id: str, why: str) -> None:
        reasons.setdefault(dep_id, []).append(why)

    for d in ordered:
        if d.id in live:
            keep(d.id, f"live in {d.environment}")
        if d.status in IN_PROGRESS:
            keep(d.id, "in progress")
    if production is not None:
        current = next((d for d in reversed(production_history) if d in live), None)
        usable = {d.id for d in ordered if d.environment == production and d.status == "ready"}
        previous = [d for d in distinct_recent(production_history) if d != current and d in usable]
        for i, dep_id in enumerate(previous[: policy.keep_production], 1):
            keep(dep_id, f"production rollback target {i}")
    max_age = policy.branch_max_age_days * DAY
    per_branch: dict[tuple[str, str], int] = {}
    per_env: dict[str, int] = {}
    for d in ordered:
        if d.branch in deleted_branches:
            continue  # only the protections above keep it
        if d.takes_host:
            if per_env.get(d.environment, 0) < policy.keep_per_environment:
                per_env[d.environment] = per_env.get(d.environment, 0) + 1
                keep(d.id, f"newest {policy.keep_per_environment} of {d.environment}")
            continue
        if now - d.created_at > max_age:
            continue  # expired
        key = (d.environment, d.branch)
        if per_branch.get(key, 0) < policy.keep_per_branch:
            per_branch[key] = per_branch.get(key, 0) + 1
            keep(d.id, f"newest {policy.keep_per_branch} of branch {d.branch}")
    # a kept deployment's reused artifact belongs to its source: keep the source too
    pending = list(reasons)
    while pending:
        dep = by_id.get(pending.pop())
        if dep is not None and dep.source and dep.source in by_id:
            if dep.source not in reasons:
                pending.append(dep.source)
            if f"artifact of {dep.id}" not in reasons.get(dep.source, []):
                keep(dep.source, f"artifact of {dep.id}")
    kept = {d.id: tuple(reasons[d.id]) for d in ordered if d.id in reasons}
    return CleanupPlan(kept, tuple(d.id for d in ordered if d.id not in reasons))


def expired_branches(
    deployments: Sequence[DeploymentFacts],
    policy: CleanupPolicy,
    *,
    now: float,
    deleted_branches: Collection[str] = (),
) -> list[str]:
    """Branches a glob caught whose newest deployment is older than the maximum age:
    retired like deleted ones (their release stops, their branch host goes)."""
    newest: dict[str, DeploymentFacts] = {}
    for d in deployments:
        if d.branch not in newest or d.seq > newest[d.branch].seq:
            newest[d.branch] = d
    max_age = policy.branch_max_age_days * DAY
    return sorted(
        b
        for b, d in newest.items()
        if b not in deleted_branches and not d.takes_host and now - d.created_at > max_age
    )
