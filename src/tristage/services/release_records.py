"""The `releases` table: the running instances of deployments, each with its runtime handle."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..domain.processes import WEB_1, ProcessName
from ..edges.runtime import Handle
from ..edges.store.base import Store


@dataclass(frozen=True)
class ReleaseRow:
    deployment: str
    handle: Handle
    port: int
    status: str
    restarts: int
    started_at: float
    process: ProcessName = WEB_1


def _row(r: dict[str, Any]) -> ReleaseRow:
    try:
        handle = json.loads(r["handle"])
    except (TypeError, ValueError):
        handle = {}
    return ReleaseRow(
        r["deployment"], handle if isinstance(handle, dict) else {}, int(r["port"]),
        r["status"], int(r["restarts"]), float(r["started_at"]),
        ProcessName.parse(r.get("process") or "web.1"),
    )  # fmt: skip


class ReleaseRecords:
    def __init__(self, store: Store) -> None:
        self.store = store

    def save(self, row: tuple[Any, ...]) -> None:
        """(deployment, process, handle JSON, port, status, restarts, started_at)"""
        self.store.execute(
            "INSERT INTO releases (deployment, process, handle, port, status, restarts,"
            " started_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT (deployment, process) DO UPDATE"
            " SET handle=excluded.handle, port=excluded.port, status=excluded.status,"
            " restarts=excluded.restarts",
            row,
        )

    def forget(self, deployment: str, process: ProcessName | None = WEB_1) -> None:
        """Forget one process of a deployment (`None`: all of them)."""
        if process is None:
            self.store.execute("DELETE FROM releases WHERE deployment=?", (deployment,))
        else:
            self.store.execute(
                "DELETE FROM releases WHERE deployment=? AND process=?", (deployment, str(process))
            )

    def clear(self) -> None:
        self.store.execute("DELETE FROM releases")

    def all(self) -> list[ReleaseRow]:
        return [_row(r) for r in self.store.query("SELECT * FROM releases")]

    def record_exit(self, deployment: str, how: str, process: ProcessName = WEB_1) -> None:
        """How the process last ended (kept across its restarts, for `tristage status`)."""
        self.store.execute(
            "UPDATE releases SET last_exit=? WHERE deployment=? AND process=?",
            (how, deployment, str(process)),
        )

    def get(self, deployment: str, process: ProcessName = WEB_1) -> ReleaseRow | None:
        r = self.store.query_one(
            "SELECT * FROM releases WHERE deployment=? AND process=?", (deployment, str(process))
        )
        return _row(r) if r else None
