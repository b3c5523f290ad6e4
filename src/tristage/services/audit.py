"""The audit log: who changed what, when, on which environment."""

from __future__ import annotations

import getpass
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from ..edges.store import Store


def current_actor() -> str:
    """The token name when acting through the HTTP API, else the OS user."""
    explicit = os.environ.get("TRISTAGE_ACTOR")
    if explicit:
        return explicit
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


@dataclass(frozen=True)
class AuditEvent:
    id: int
    at: float
    actor: str
    action: str
    project: str | None
    environment: str | None
    target: str | None
    details: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class AuditLog:
    def __init__(self, store: Store, actor: str) -> None:
        self.store = store
        self.actor = actor

    def record(
        self,
        action: str,
        *,
        project: str | None = None,
        environment: str | None = None,
        target: str | None = None,
        details: dict[str, Any] | None = None,
        actor: str | None = None,
    ) -> int:
        return self.store.insert(
            "INSERT INTO audit_events (at, actor, action, project, environment, target, details)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                time.time(),
                actor or self.actor,
                action,
                project,
                environment,
                target,
                json.dumps(details or {}, sort_keys=True, default=str),
            ),
        )

    def events(
        self,
        *,
        project: str | None = None,
        environment: str | None = None,
        action: str | None = None,
        limit: int = 100,
        actor: str | None = None,
        before: int | None = None,
    ) -> list[AuditEvent]:
        """Newest first; `action` may hold `*` wildcards; `before` pages (ids below it)."""
        clauses: list[str] = []
        params: list[Any] = []
        if before is not None:
            clauses.append("id < ?")
            params.append(before)
        for col, val in (("project", project), ("environment", environment), ("actor", actor)):
            if val is not None:
                clauses.append(f"{col} = ?")
                params.append(val)
        if action is not None:
            clauses.append("action LIKE ?")
            params.append(action.replace("*", "%"))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.store.query(
            f"SELECT * FROM audit_events {where} ORDER BY id DESC LIMIT ?", (*params, limit)
        )
        return [
            AuditEvent(
                id=r["id"],
                at=r["at"],
                actor=r["actor"],
                action=r["action"],
                project=r["project"],
                environment=r["environment"],
                target=r["target"],
                details=json.loads(r["details"]),
            )
            for r in rows
        ]
