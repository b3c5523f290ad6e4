"""Aliases: which host names point at which deployment. Pure: no I/O.

Hosts of a project `P` (all lowercase DNS labels under `.localhost`):

- `P.localhost`: the production environment's live deployment;
- `ENV.P.localhost`: each environment's live deployment;
- `BRANCH-SLUG.P.localhost`: the latest ready deployment of each branch;
- `ID.P.localhost`: each deployment.

Precedence when labels meet: deployment ids start with a digit and environment
names with a letter, so they never collide; a branch slug equal to an
environment name or a deployment id yields to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .branches import slug

DOMAIN = "localhost"


@dataclass(frozen=True)
class HostTarget:
    project: str
    environment: str
    deployment: str | None


def project_host(project: str) -> str:
    return f"{project}.{DOMAIN}"


def environment_host(project: str, environment: str, production: str | None) -> str:
    if environment == production:
        return project_host(project)
    return f"{environment}.{project}.{DOMAIN}"


def environment_hosts(project: str, environment: str, production: str | None) -> list[str]:
    """Every host serving an environment's live deployment (`ENV.P.localhost`, and
    for production also `P.localhost`)."""
    hosts = [f"{environment}.{project}.{DOMAIN}"]
    if environment == production:
        hosts.append(project_host(project))
    return hosts


def deployment_host(project: str, deployment: str) -> str:
    return f"{deployment}.{project}.{DOMAIN}"


def branch_host(project: str, branch: str) -> str:
    return f"{slug(branch)}.{project}.{DOMAIN}"


def url(host: str, port: int | None) -> str:
    return f"http://{host}" if port in (None, 80) else f"http://{host}:{port}"


@dataclass(frozen=True)
class DeploymentRef:
    id: str
    environment: str
    branch: str


def host_table(
    project: str,
    production: str | None,
    environments: Sequence[str],
    live: Mapping[str, str | None],
    branch_latest: Mapping[str, DeploymentRef],
    deployments: Sequence[DeploymentRef],
) -> dict[str, HostTarget]:
    """Every host of one project and the deployment it serves (None: nothing live yet)."""
    table: dict[str, HostTarget] = {}
    for dep in deployments:
        table[deployment_host(project, dep.id)] = HostTarget(project, dep.environment, dep.id)
    for env in environments:
        target = HostTarget(project, env, live.get(env))
        for host in environment_hosts(project, env, production):
            table[host] = target
    for branch, dep in branch_latest.items():
        host = branch_host(project, branch)
        if host not in table:
            table[host] = HostTarget(project, dep.environment, dep.id)
    return table
