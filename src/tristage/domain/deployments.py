"""Deployments: identifiers, statuses, and the pure decisions over their history.

A deployment id is a DNS label that starts with a digit. Environment names must
start with a letter, so `ID.PROJECT.localhost` can never be mistaken for
`ENV.PROJECT.localhost`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 8


class Status(StrEnum):
    queued = "queued"
    building = "building"
    starting = "starting"
    ready = "ready"
    error = "error"
    canceled = "canceled"
    crashed = "crashed"


ACTIVE = frozenset({Status.queued, Status.building, Status.starting})
TERMINAL = frozenset({Status.ready, Status.error, Status.canceled, Status.crashed})


def new_id() -> str:
    """`4k9x2m0q`: a digit, then base36; 36**7 * 10 ids."""
    first = secrets.choice("0123456789")
    return first + "".join(secrets.choice(_ALPHABET) for _ in range(ID_LENGTH - 1))


def is_deployment_id(label: str) -> bool:
    return len(label) == ID_LENGTH and label[0].isdigit() and all(c in _ALPHABET for c in label)


@dataclass(frozen=True)
class Deployment:
    id: str
    project: str
    environment: str
    branch: str
    commit: str
    message: str
    trigger: str
    source: str | None
    status: Status
    reason: str | None
    build_hash: str | None
    artifact: str | None
    web: str | None
    snapshot: str | None
    created_at: float
    updated_at: float
    ready_at: float | None
    layers: tuple[str, ...] = ()  # read-only directories the artifact needs (its dependencies)
    # Whether it takes over its environment's own host when ready (False: a branch a
    # glob caught, served at its branch host only; see `domain.branches.moves_host`).
    takes_host: bool = True
    # While a push is being decided: git's quarantine directory holding its objects.
    objects: str | None = None
    runtime: str | None = None  # "python 3.12.1 + node 20.11.0": what it was built with

    @classmethod
    def from_row(cls, row: dict[str, object]) -> Deployment:
        def opt(key: str) -> str | None:
            v = row.get(key)
            return None if v is None else str(v)

        ready = row.get("ready_at")
        return cls(
            id=str(row["id"]),
            project=str(row["project"]),
            environment=str(row["environment"]),
            branch=str(row["branch"]),
            commit=str(row["commit_sha"]),
            message=str(row["message"] or ""),
            trigger=str(row["trigger"]),
            source=opt("source"),
            status=Status(str(row["status"])),
            reason=opt("reason"),
            build_hash=opt("build_hash"),
            artifact=opt("artifact"),
            web=opt("web"),
            snapshot=opt("snapshot"),
            created_at=float(row["created_at"]),  # type: ignore[arg-type]
            updated_at=float(row["updated_at"]),  # type: ignore[arg-type]
            ready_at=None if ready is None else float(ready),  # type: ignore[arg-type]
            layers=_layers(row.get("layers")),
            takes_host=bool(row.get("takes_host", 1)),
            objects=opt("objects_dir"),
            runtime=opt("runtime"),
        )


def _layers(raw: object) -> tuple[str, ...]:
    if not raw:
        return ()
    value = json.loads(str(raw))
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def distinct_recent(history: Sequence[str]) -> list[str]:
    """Deployments of an alias history (oldest first), most recent first, each once."""
    seen: set[str] = set()
    out: list[str] = []
    for dep in reversed(history):
        if dep not in seen:
            seen.add(dep)
            out.append(dep)
    return out


def rollback_target(history: Sequence[str], current: str | None, usable: set[str]) -> str | None:
    """The production deployment served before `current` that can still run."""
    for dep in distinct_recent(history):
        if dep != current and dep in usable:
            return dep
    return None


def warm_set(history: Sequence[str], current: str | None, keep: int, usable: set[str]) -> list[str]:
    """The `keep` most recent previous production deployments kept running for rollback."""
    out: list[str] = []
    for dep in distinct_recent(history):
        if len(out) >= keep:
            break
        if dep != current and dep in usable:
            out.append(dep)
    return out
