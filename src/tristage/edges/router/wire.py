"""The route table and the counters as JSON, between the control plane and a router
process (`tristage.routerd`), and in the router's `routes.json`.

A route is `{"project", "environment", "deployment", "upstream": [host, port] | null,
"request_timeout": seconds | null, "replicas": [[host, port], ...]}` (`replicas`: the
deployment's other web processes, omitted when there are none); more keys may be added
and are ignored by a router that does not know them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .routes import Route
from .stats import DeploymentStats


def routes_to_json(routes: Mapping[str, Route]) -> dict[str, dict[str, Any]]:
    return {
        host: {
            "project": r.project,
            "environment": r.environment,
            "deployment": r.deployment,
            "upstream": list(r.upstream) if r.upstream is not None else None,
            "request_timeout": r.request_timeout,
            **({"replicas": [list(a) for a in r.replicas]} if r.replicas else {}),
        }
        for host, r in routes.items()
    }


def routes_from_json(data: Mapping[str, Any]) -> dict[str, Route]:
    out: dict[str, Route] = {}
    for host, r in data.items():
        up = r.get("upstream")
        timeout = r.get("request_timeout")
        out[str(host)] = Route(
            str(r["project"]),
            str(r["environment"]),
            str(r["deployment"]) if r.get("deployment") is not None else None,
            (str(up[0]), int(up[1])) if up else None,
            float(timeout) if timeout is not None else None,
            tuple((str(a[0]), int(a[1])) for a in r.get("replicas") or ()),
        )
    return out


def stats_to_json(stats: Mapping[str, DeploymentStats]) -> dict[str, dict[str, Any]]:
    return {dep: dataclasses.asdict(s) for dep, s in stats.items()}


def stats_from_json(data: Mapping[str, Any]) -> dict[str, DeploymentStats]:
    names = {f.name for f in dataclasses.fields(DeploymentStats)}
    return {
        str(dep): DeploymentStats(**{k: v for k, v in s.items() if k in names})
        for dep, s in data.items()
    }
