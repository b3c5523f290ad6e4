"""The data store of an environment: its directory, its DATABASE_URL, opening it, its
backup target, the facts rules need about its server.

The data store of an environment is a SQLite file in the environment's own data
directory (`$TRISTAGE_HOME/data/<project>/<environment>/database.sqlite3`) or a
PostgreSQL database on a configured server; an environment that `shares` another
uses the owner's store, directory and backups.

On PostgreSQL each environment database has its own login role, with a generated
password kept sealed in the state store: the role owns the database, PUBLIC may not
connect to it, and the app's DATABASE_URL carries that role, so it opens its own
database and no other. tristage's own sessions (backups, restores, clones, drills)
use the admin URL of `tristage.toml`, writing as the environment's role.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..domain.config import DatabaseConfig, PipelineConfig
from ..domain.rules import DatabaseAuth
from ..domain.snapshot import Table
from ..edges.backup_targets import BackupTarget, LocalDirectoryTarget
from ..edges.datastores import open_datastore
from ..edges.datastores.postgres import (
    drop_role,
    drop_with_copies,
    probe_auth,
    provision,
    server_of,
    with_credentials,
    with_database,
)
from ..edges.datastores.sqlite import move_database, prepare_file
from ..errors import TristageError, UsageError
from ..paths import private_dirs
from .data_records import DataStoreT

if TYPE_CHECKING:
    from ..api import Tristage

SQLITE_FILE = "database.sqlite3"
PROBE_TTL = 60.0  # seconds a server's answer to the password probe is reused
_NAME_MAX = 63  # PostgreSQL identifiers are at most 63 bytes


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def database_name(project: str, owner: str, db: DatabaseConfig) -> str:
    """The PostgreSQL database of an environment: `database.name`, else tristage_<p>_<e>."""
    return db.name or f"tristage_{project}_{owner}".replace("-", "_")


def role_name(database: str) -> str:
    """The login role of a database: its own name if it is a tristage_ one, else
    tristage_<database>; shortened with a digest to fit PostgreSQL's 63 bytes."""
    name = database if database.startswith("tristage_") else f"tristage_{database}"
    if len(name.encode()) <= _NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return name.encode()[: _NAME_MAX - 11].decode(errors="ignore") + "_" + digest


@dataclass(frozen=True)
class PgAccess:
    """How tristage and the app reach an environment's PostgreSQL database."""

    server: str  # the admin URL of tristage.toml (no database)
    database: str
    role: str
    password: str

    @property
    def admin_url(self) -> str:
        return with_database(self.server, self.database)

    @property
    def app_url(self) -> str:
        return with_credentials(self.admin_url, self.role, self.password)


def _server_key(url: str) -> str:
    return server_of(url)


def _context(project: str, owner: str) -> str:
    """What a role's sealed password is bound to (it decrypts for no other row)."""
    return f"tristage/data-role/{project}/{owner}"


class DataStores:
    """Where the data store of an environment lives and how to open it."""

    def __init__(self, api: Tristage) -> None:
        self.api = api
        self._lock = threading.Lock()
        # (server URL, database) -> "ready" (provisioned) or "absent" (did not exist)
        self._provisioned: dict[tuple[str, str], str] = {}
        self._probes: dict[tuple[str, str], tuple[float, DatabaseAuth]] = {}
        self._targets: dict[tuple[str | None, ...], BackupTarget] = {}

    def config(self, project: str) -> PipelineConfig:
        return self.api.config_for(project)

    def owner(self, project: str, environment: str) -> str:
        return self.config(project).owner(environment)

    # -- directories and files ------------------------------------------------
    def data_dir(self, project: str, environment: str) -> Path:
        """The owner environment's private directory (0700): its SQLite file and -wal/-shm,
        and whatever files the app keeps; the one data directory a release may write."""
        owner = self.owner(project, environment)
        return private_dirs(self.api.home, "data", project, owner).resolve()

    def sqlite_path(self, project: str, environment: str) -> Path:
        """The SQLite file of an environment (created 0600; an old-layout file moved in)."""
        cfg = self.config(project)
        owner = cfg.owner(environment)
        db = cfg.env(owner).database
        base = self.data_dir(project, owner)
        legacy_root = self.api.home / "data" / project
        if db.url:
            raw = db.url.removeprefix("sqlite://") if db.url.startswith("sqlite:///") else db.url
            given = Path(raw).expanduser()
            if given.is_absolute():
                return prepare_file(given.resolve())
            path = (base / given).resolve()
            if base not in path.parents:
                raise UsageError(
                    f"environments.{owner}.database.url {db.url!r} leaves {owner}'s data "
                    f"directory {base}",
                    "a relative path must stay inside the environment's data directory "
                    "(a release sees no other); use an absolute path for a file elsewhere",
                )
            private_dirs(base, *path.relative_to(base).parent.parts)
            legacy = legacy_root / given
        else:
            path = base / SQLITE_FILE
            legacy = legacy_root / f"{owner}.sqlite3"
        if move_database(legacy, path):
            self.api.audit.record(
                "db.move",
                project=project,
                environment=owner,
                target=str(path),
                details={"from": str(legacy)},
            )
        return prepare_file(path)

    # -- URLs and stores ----------------------------------------------------------
    def database_url(self, project: str, environment: str) -> str:
        """The DATABASE_URL the app of `environment` receives (store created if needed):
        its SQLite file, or its PostgreSQL database with the environment's own role."""
        access = self.postgres(project, environment)
        if access is None:
            return f"sqlite:///{self.sqlite_path(project, environment)}"
        return access.app_url

    def admin_url(self, project: str, environment: str) -> str:
        """The URL tristage's own sessions use: on PostgreSQL, the admin credentials of
        tristage.toml (never handed to an app)."""
        access = self.postgres(project, environment)
        if access is None:
            return f"sqlite:///{self.sqlite_path(project, environment)}"
        return access.admin_url

    def open_store(self, project: str, environment: str) -> DataStoreT:
        access = self.postgres(project, environment)
        if access is None:
            return open_datastore(f"sqlite:///{self.sqlite_path(project, environment)}")
        return open_datastore(access.admin_url, role=access.role)

    def target(self, project: str, environment: str) -> BackupTarget:
        """The backup target of the owner environment: `backups.target` by URL, else the
        platform home's `backups/` directory; `<project>/<env>` below it either way."""
        owner = self.owner(project, environment)
        b = self.config(project).env(owner).backups
        url = b.target
        if url is None:
            return LocalDirectoryTarget(self.api.home / "backups" / project / owner)
        if url.startswith("file://"):
            return LocalDirectoryTarget(Path(url[len("file://") :]) / project / owner)
        from ..edges.s3_target import S3Target, parse_s3_url, spool_dir

        bucket, prefix, endpoint = parse_s3_url(url)
        key = (url, b.endpoint_url, b.region, project, owner)
        cached = self._targets.get(key)
        if cached is None:
            cached = S3Target(
                bucket,
                "/".join(p for p in (prefix, project, owner) if p),
                spool_dir(self.api.home),
                endpoint or b.endpoint_url,
                b.region,
            )
            self._targets[key] = cached
        return cached

    def tables(self, project: str, environment: str) -> list[Table]:
        with self.open_store(project, environment).read() as r:
            return r.tables()

    # -- PostgreSQL: a role per environment -----------------------------------------
    def postgres(self, project: str, environment: str) -> PgAccess | None:
        """The owner environment's database and role, provisioned once per process
        (and the project's other databases on the same server locked down); None on
        SQLite."""
        cfg = self.config(project)
        access = self._access(project, cfg.owner(environment))
        if access is None:
            return None
        self._provision(access, create=True)
        for name, env in cfg.environments.items():
            db = env.database
            if cfg.owner(name) != name or db.engine != "postgres" or not db.url:
                continue
            key = (db.url, database_name(project, name, db))
            if key[1] == access.database or _server_key(db.url) != _server_key(access.server):
                continue
            with self._lock:
                known = key in self._provisioned
            if not known:
                sibling = self._access(project, name)
                assert sibling is not None
                self._provision(sibling, create=False)
        return access

    def drop_databases(self, project: str) -> list[str]:
        """(destroying the project) Drop its PostgreSQL databases and their login roles;
        returns the databases dropped. SQLite files go with the data directories."""
        cfg = self.config(project)
        dropped: list[str] = []
        for name, env in cfg.environments.items():
            db = env.database
            if cfg.owner(name) != name or db.engine != "postgres" or not db.url:
                continue
            dbname = database_name(project, name, db)
            drop_with_copies(db.url, dbname)  # and the undo copies of its restores
            drop_role(db.url, role_name(dbname))
            with self._lock:
                self._provisioned.pop((db.url, dbname), None)
            dropped.append(dbname)
        return dropped

    def _access(self, project: str, owner: str) -> PgAccess | None:
        db = self.config(project).env(owner).database
        if db.engine != "postgres":
            return None
        if not db.url:
            raise UsageError(
                f"environments.{owner}.database.url is required for engine 'postgres'",
                'e.g. url = "postgresql://postgres@127.0.0.1:5432"',
            )
        name = database_name(project, owner, db)
        role = role_name(name)
        return PgAccess(db.url, name, role, self._password(project, owner, role))

    def _provision(self, access: PgAccess, create: bool) -> None:
        """Provision a database's role unless done in this process; without `create`,
        a database that does not exist is left to its own first use."""
        key = (access.server, access.database)
        with self._lock:
            state = self._provisioned.get(key)
        if state == "ready" or (state == "absent" and not create):
            return
        done = provision(access.server, access.database, access.role, access.password, create)
        with self._lock:
            self._provisioned[key] = "ready" if done else "absent"

    def _password(self, project: str, owner: str, role: str) -> str:
        """The environment role's password: generated once, kept sealed in the state store."""
        context = _context(project, owner)
        sql = "SELECT sealed FROM data_roles WHERE project=? AND environment=?"
        row = self.api.store.query_one(sql, (project, owner))
        if row is None:
            sealed = self.api.secret_box.encrypt_text(secrets.token_urlsafe(32), context)
            with self.api.store.transaction():
                added = self.api.store.execute(
                    "INSERT INTO data_roles (project, environment, sealed, created_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (project, environment) DO NOTHING",
                    (project, owner, sealed, time.time()),
                )
                if added:
                    self.api.audit.record(
                        "db.role", project=project, environment=owner, target=role,
                        details={"password": "generated"},
                    )  # fmt: skip
            row = self.api.store.query_one(sql, (project, owner))
            assert row is not None
        return self.api.secret_box.decrypt_text(bytes(row["sealed"]), context)

    def secret_values(self, project: str) -> list[str]:
        """The role passwords of the project's environments (for redaction)."""
        rows = self.api.store.query(
            "SELECT environment, sealed FROM data_roles WHERE project=?", (project,)
        )
        box = self.api.secret_box
        return [
            box.decrypt_text(bytes(r["sealed"]), _context(project, r["environment"])) for r in rows
        ]

    # -- facts for rules -------------------------------------------------------------
    def auth_facts(self, project: str, environment: str | None = None) -> dict[str, DatabaseAuth]:
        """For each environment owning a PostgreSQL store (of `environment` only, if
        given): whether its server refuses the environment's role with a wrong password.
        An answer is reused for PROBE_TTL seconds."""
        cfg = self.config(project)
        owners = [cfg.owner(environment)] if environment else list(cfg.environments)
        out: dict[str, DatabaseAuth] = {}
        for owner in owners:
            db = cfg.env(owner).database
            if cfg.owner(owner) != owner or db.engine != "postgres" or not db.url:
                continue
            out[owner] = self._probe(project, owner, db)
        return out

    def _probe(self, project: str, owner: str, db: DatabaseConfig) -> DatabaseAuth:
        server = server_of(db.url or "")
        role = role_name(database_name(project, owner, db))
        key = (db.url or "", role)
        with self._lock:
            cached = self._probes.get(key)
        if cached and time.monotonic() - cached[0] < PROBE_TTL:
            return cached[1]
        try:
            access = self.postgres(project, owner)
            assert access is not None
            outcome, detail = probe_auth(access.admin_url, access.role)
        except TristageError as exc:
            outcome, detail = "unreachable", exc.message
        fact = DatabaseAuth(server=server, role=role, outcome=outcome, detail=detail)
        with self._lock:
            self._probes[key] = (time.monotonic(), fact)
        return fact
