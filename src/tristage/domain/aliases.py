"""Aliases: which host names point at which deployment. Pure: no I/O.

Hosts of a project `P` (all lowercase DNS labels under `.localhost`):

- `P.localhost`: the production environment's live deployment;
- `ENV.P.localhost`: each environment's live deployment;
- `BRANCH-SLUG.P.localhost`: the latest ready deployment of each branch;
- `ID.P.localhost`: each deployment.

Precedence when labels meet: deployment ids start with a digit and environment
names with a letter, so they never collide; a branch slug equal to an
environment name or a deployment id yields to it.

Public names come on top, from `tristage.toml` (`PublicNames`): an environment's
`domains` serve its live deployment (the first is canonical, the others redirect to it
at the production edge), and its `branch_domain` pattern gives each of its branches and
deployments a public host (`{branch}` replaced by the branch slug or the deployment id).
A configured domain wins over a branch host that would have the same name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .branches import slug
from .hostnames import NO_NAMES, PublicNames, expand

__all__ = ["NO_NAMES", "PublicNames"]

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


def public_url(names: PublicNames) -> str | None:
    """`https://` and the canonical domain, or None without domains."""
    return f"https://{names.canonical}" if names.canonical else None


def release_hosts(
    project: str,
    environment: str,
    production: str | None,
    deployment: str,
    branch: str,
    names: PublicNames = NO_NAMES,
) -> list[str]:
    """Every host a release of `deployment` may be served on: its environment's (when it
    is live), its branch's and its own, public ones first (`TRISTAGE_HOSTS`)."""
    hosts = list(names.domains)
    if pattern := names.branch_domain:
        hosts += [expand(pattern, slug(branch)), expand(pattern, deployment)]
    hosts += environment_hosts(project, environment, production)
    hosts += [branch_host(project, branch), deployment_host(project, deployment)]
    return list(dict.fromkeys(hosts))


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
    public: Mapping[str, PublicNames] | None = None,
) -> dict[str, HostTarget]:
    """Every host of one project and the deployment it serves (None: nothing live yet)."""
    public = public or {}

    def pattern(env: str) -> str | None:
        return public.get(env, NO_NAMES).branch_domain

    table: dict[str, HostTarget] = {}
    for dep in deployments:
        target = HostTarget(project, dep.environment, dep.id)
        table[deployment_host(project, dep.id)] = target
        if p := pattern(dep.environment):
            table[expand(p, dep.id)] = target
    for env in environments:
        target = HostTarget(project, env, live.get(env))
        for host in environment_hosts(project, env, production):
            table[host] = target
        for host in public.get(env, NO_NAMES).domains:
            table[host] = target
    for branch, dep in branch_latest.items():
        target = HostTarget(project, dep.environment, dep.id)
        hosts = [branch_host(project, branch)]
        if p := pattern(dep.environment):
            hosts.append(expand(p, slug(branch)))
        for host in hosts:
            if host not in table:
                table[host] = target
    return table
