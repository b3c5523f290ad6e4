"""The data store of an environment: its DATABASE_URL, opening it, its backup target.

The data store of an environment is a SQLite file under the platform home or a
PostgreSQL database on a configured server; an environment that `shares` another
uses the owner's store (and the owner's backups).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

from ..domain.config import PipelineConfig
from ..domain.snapshot import Table
from ..edges.backup_targets import BackupTarget, LocalDirectoryTarget
from ..edges.datastores import open_datastore
from ..edges.datastores.postgres import ensure_database, with_database
from ..errors import UsageError
from .data_records import DataStoreT

if TYPE_CHECKING:
    from ..api import Tristage


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class DataStores:
    """Where the data store of an environment lives and how to open it."""

    def __init__(self, api: Tristage) -> None:
        self.api = api
        self._ensured: set[str] = set()

    def config(self, project: str) -> PipelineConfig:
        return self.api.config_for(project)

    def owner(self, project: str, environment: str) -> str:
        return self.config(project).owner(environment)

    def database_url(self, project: str, environment: str) -> str:
        """The DATABASE_URL the app of `environment` receives (store created if needed)."""
        cfg = self.config(project)
        owner = cfg.owner(environment)
        db = cfg.env(owner).database
        if db.engine == "sqlite":
            if db.url:
                raw = db.url
                if raw.startswith("sqlite:///"):
                    raw = raw.removeprefix("sqlite://")
                path = Path(raw).expanduser()
                if not path.is_absolute():
                    path = self.api.home / "data" / project / path
            else:
                path = self.api.home / "data" / project / f"{owner}.sqlite3"
            path = path.resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)
            return f"sqlite:///{path}"
        if not db.url:
            raise UsageError(
                f"environments.{owner}.database.url is required for engine 'postgres'",
                'e.g. url = "postgresql://postgres@127.0.0.1:5432"',
            )
        name = db.name or f"tristage_{project}_{owner}".replace("-", "_")
        url = with_database(db.url, name)
        if url not in self._ensured:
            ensure_database(db.url, name)
            self._ensured.add(url)
        return url

    def data_dir(self, project: str, environment: str) -> Path:
        """The directory a release of `environment` may write (its SQLite store's)."""
        url = self.database_url(project, environment)
        if url.startswith("sqlite:///"):
            return Path(url.removeprefix("sqlite://")).parent
        path = self.api.home / "data" / project / self.owner(project, environment)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def open_store(self, project: str, environment: str) -> DataStoreT:
        return open_datastore(self.database_url(project, environment))

    def target(self, project: str, environment: str) -> BackupTarget:
        owner = self.owner(project, environment)
        return LocalDirectoryTarget(self.api.home / "backups" / project / owner)

    def tables(self, project: str, environment: str) -> list[Table]:
        with self.open_store(project, environment).read() as r:
            return r.tables()
