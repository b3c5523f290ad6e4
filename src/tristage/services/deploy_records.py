"""The deploys area's tables (deployments, aliases, releases) as the other areas read them."""

from __future__ import annotations

from ..edges.store import Row, Store


def deployment_owner(store: Store, deployment: str) -> tuple[str, str] | None:
    """(project, environment) of a deployment; None when there is no such deployment."""
    row = store.query_one("SELECT project, environment FROM deployments WHERE id=?", (deployment,))
    return None if row is None else (row["project"], row["environment"])


def routed_releases(store: Store, project: str) -> list[Row]:
    """Each environment the router serves: `environment`, `routed` (the deployment) and
    its release's (`web.1`'s) `port` and `status` (both None when none is recorded)."""
    return store.query(
        "SELECT a.environment, a.routed, r.port, r.status FROM aliases a"
        " LEFT JOIN releases r ON r.deployment = a.routed AND r.process = 'web.1'"
        " WHERE a.project=? AND a.routed IS NOT NULL",
        (project,),
    )
