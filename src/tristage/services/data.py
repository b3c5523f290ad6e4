"""A database per environment (contract; the data area fills it in)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..api import Tristage


class DataService:
    def __init__(self, api: Tristage) -> None:
        self.api = api

    def database_url(self, project: str, environment: str) -> str:
        """The DATABASE_URL the app of `environment` receives (store created if needed)."""
        owner = self.api.config_for(project).owner(environment)
        path = self.api.home / "data" / project / f"{owner}.sqlite3"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"

    def snapshot_before_migration(self, project: str, environment: str, deployment: str) -> str:
        """Snapshot the store before a migration; returns the backup id to restore."""
        return ""

    def run_due_backups(self, now: dt.datetime) -> list[str]:
        """Run scheduled backups that are due (missed runs caught up once); returns ids."""
        return []
