"""A database per environment: export/import, backups with retention, restore, drill, clone.

The data store of an environment is a SQLite file under the platform home or a
PostgreSQL database on a configured server; an environment that `shares` another
uses the owner's store (and the owner's backups). Every change writes an audit event.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TypeVar

from .. import __version__
from ..domain import retention, sanitize
from ..domain.config import PipelineConfig, Tier
from ..domain.snapshot import FileEntry, Manifest, Table, load_order
from ..edges.backup_targets import BackupTarget, LocalDirectoryTarget, check_name
from ..edges.datastores import (
    PostgresDataStore,
    SqliteDataStore,
    open_datastore,
    pg_text,
)
from ..edges.datastores.base import Reader, SourcedRow, Writer
from ..edges.datastores.postgres import PostgresSession as PgSession
from ..edges.datastores.postgres import database_of, drop_database, ensure_database, with_database
from ..edges.datastores.sqlite import SqliteSession
from ..edges.snapshot_io import (
    DirSink,
    Progress,
    SnapshotError,
    Source,
    ZipSink,
    export_tables,
    open_source,
    remove_tree,
)
from ..errors import Conflict, NotFound, TristageError, UsageError

if TYPE_CHECKING:
    from ..api import Tristage

DataStoreT = SqliteDataStore | PostgresDataStore
T = TypeVar("T")
ImportMode = Literal["replace", "append"] | None
BACKUP_KINDS = ("manual", "scheduled", "pre-migration", "safety")


class ConfirmationRequired(UsageError):
    pass


class SanitizeRefused(TristageError):
    def __init__(self, problems: Sequence[sanitize.Problem]) -> None:
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(
            f"clone refused: {len(problems)} column(s) without a sanitization rule\n{lines}",
            "add the rules to [sanitize] in tristage.toml; nothing was copied",
        )
        self.problems = list(problems)


class BackupDamaged(TristageError):
    pass


@dataclass(frozen=True)
class BackupInfo:
    id: str
    project: str
    environment: str
    kind: str
    created_at: float
    size: int
    rows: int
    tables: int
    encrypted: bool
    note: str | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    manifest: Manifest


@dataclass(frozen=True)
class LoadResult:
    rows: dict[str, int]
    created: list[str]


@dataclass(frozen=True)
class PruneResult:
    keep: dict[str, tuple[str, ...]]
    delete: list[str]
    dry_run: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "keep": {k: list(v) for k, v in self.keep.items()},
            "delete": self.delete,
            "dry_run": self.dry_run,
        }


@dataclass(frozen=True)
class RestoreResult:
    backup: str
    safety_backup: str | None
    rows: dict[str, int]


@dataclass(frozen=True)
class DrillCheck:
    table: str
    expected_rows: int
    actual_rows: int
    checksum_ok: bool

    @property
    def ok(self) -> bool:
        return self.checksum_ok and self.expected_rows == self.actual_rows


@dataclass
class DrillReport:
    project: str
    environment: str
    backup: str
    passed: bool
    checks: list[DrillCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["checks"] = [{**asdict(c), "ok": c.ok} for c in self.checks]
        return d


@dataclass(frozen=True)
class CloneReport:
    source: str
    target: str
    sanitized: bool
    rows: dict[str, int]
    transformed: dict[str, list[str]]
    safety_backup: str | None
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _backup_id(now: dt.datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


class _HashSink:
    """A sink that keeps only checksums (for comparing a store with a manifest)."""

    @contextmanager
    def member(self, path: str) -> Iterator[IO[bytes]]:
        yield io.BytesIO()  # export_tables hashes the bytes itself; discard them

    def finish(self, manifest: Manifest) -> None:
        pass


class DataService:
    def __init__(self, api: Tristage) -> None:
        self.api = api
        self._ensured: set[str] = set()
        self._faker: Any = None

    # -- stores -----------------------------------------------------------
    def _config(self, project: str) -> PipelineConfig:
        return self.api.config_for(project)

    def owner(self, project: str, environment: str) -> str:
        return self._config(project).owner(environment)

    def database_url(self, project: str, environment: str) -> str:
        """The DATABASE_URL the app of `environment` receives (store created if needed)."""
        cfg = self._config(project)
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

    def open_store(self, project: str, environment: str) -> DataStoreT:
        return open_datastore(self.database_url(project, environment))

    def target(self, project: str, environment: str) -> BackupTarget:
        owner = self.owner(project, environment)
        return LocalDirectoryTarget(self.api.home / "backups" / project / owner)

    def tables(self, project: str, environment: str) -> list[Table]:
        with self.open_store(project, environment).read() as r:
            return r.tables()

    # -- export / import ----------------------------------------------------
    def export(
        self,
        project: str,
        environment: str,
        out: Path | None = None,
        fmt: Literal["dir", "zip"] = "dir",
        tables: Sequence[str] = (),
        progress: Progress | None = None,
    ) -> ExportResult:
        store = self.open_store(project, environment)
        stamp = _utcnow().strftime("%Y%m%dT%H%M%SZ")
        if out is None:
            out = Path.cwd() / f"{project}-{environment}-{stamp}{'.zip' if fmt == 'zip' else ''}"
        out = out.resolve()
        if out.exists():
            raise Conflict(f"{out} already exists", "choose another path with -o")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
        try:
            with store.read() as r:
                chosen = _select(r.tables(), tables, environment)
                if fmt == "zip":
                    with open(tmp, "xb") as f:
                        sink: DirSink | ZipSink = ZipSink(f)
                        files = export_tables(r, chosen, sink, progress)
                        manifest = self._manifest(store, chosen, files, project, environment)
                        sink.finish(manifest)
                        f.flush()
                        os.fsync(f.fileno())
                else:
                    sink = DirSink(tmp)
                    files = export_tables(r, chosen, sink, progress)
                    manifest = self._manifest(store, chosen, files, project, environment)
                    sink.finish(manifest)
            tmp.rename(out)
        except BaseException:
            if tmp.is_dir():
                remove_tree(tmp)
            else:
                tmp.unlink(missing_ok=True)
            raise
        self.api.audit.record(
            "db.export",
            project=project,
            environment=environment,
            target=str(out),
            details={"tables": len(chosen), "rows": manifest.total_rows, "format": fmt},
        )
        return ExportResult(out, manifest)

    def _manifest(
        self,
        store: DataStoreT,
        tables: Sequence[Table],
        files: dict[str, FileEntry],
        project: str,
        environment: str,
        kind: str = "export",
        note: str | None = None,
        encrypted: bool = False,
    ) -> Manifest:
        return Manifest(
            engine=store.engine,
            tables=list(tables),
            files=files,
            project=project,
            environment=environment,
            created_at=_utcnow().isoformat(timespec="seconds"),
            tool_version=__version__,
            kind=kind,
            note=note,
            encrypted=encrypted,
            extra={"tier": self._config(project).env(environment).tier.value},
        )

    def import_snapshot(
        self,
        project: str,
        environment: str,
        path: Path,
        tables: Sequence[str] = (),
        mode: ImportMode = None,
        progress: Progress | None = None,
    ) -> LoadResult:
        cfg = self._config(project)
        source = open_source(path)
        try:
            m = source.manifest
            tier = cfg.env(environment).tier
            if m.extra.get("tier") == Tier.production.value and tier != Tier.production:
                raise UsageError(
                    f"{path.name} holds unsanitized production data; {environment} is not "
                    "production",
                    f"use 'tristage db clone {m.environment or 'production'} {environment}', "
                    "which sanitizes",
                )
            names = [t.name for t in _select(m.tables, tables, path.name)]
            result = self._load(
                self.open_store(project, environment), source, names, mode, progress
            )
        finally:
            source.close()
        self.api.audit.record(
            "db.import",
            project=project,
            environment=environment,
            target=path.name,
            details={
                "rows": sum(result.rows.values()),
                "tables": len(result.rows),
                "mode": mode or "empty",
            },
        )
        return result

    def _load(
        self,
        store: DataStoreT,
        source: Source,
        names: Sequence[str],
        mode: ImportMode | Literal["recreate"],
        progress: Progress | None = None,
        drop_others: bool = False,
        check: bool = False,
    ) -> LoadResult:
        """Load tables of `source` in one transaction; with `check`, each file is
        verified against the manifest while it is read (a mismatch rolls back)."""
        m = source.manifest
        wanted = [t for t in m.tables if t.name in set(names)]
        ordered = load_order(wanted)

        def counted(t: Table, items: Iterator[T]) -> Iterator[T]:
            return _counted(items, t.name, m.files[t.name].rows, progress)

        def load_table(w: Writer, t: Table, target: Table, cols: list[str]) -> int:
            if isinstance(w, PgSession) and m.engine != "convex":
                records = source.records(t.name, target, cols, check)
                return w.copy_records(
                    target, cols, counted(t, records), lambda n: source.ref(t.name, n)
                )
            if isinstance(w, SqliteSession) and m.engine != "convex":
                records = source.records(t.name, target, cols, check)
                return w.insert_records(
                    target, cols, counted(t, records), lambda n: source.ref(t.name, n)
                )
            return w.insert(target, cols, counted(t, source.rows(t.name, target, cols, check)))

        def fill(w: Writer) -> LoadResult:
            existing = {t.name: t for t in w.tables()}
            if mode == "recreate":
                drop = [t.name for t in reversed(ordered) if t.name in existing]
                if drop_others:
                    drop += [n for n in existing if n not in set(names)]
                w.drop(drop)
                existing = {n: t for n, t in existing.items() if n not in set(drop)}
            elif mode is None:
                busy = [t.name for t in ordered if t.name in existing and w.count(t.name)]
                if busy:
                    raise UsageError(
                        f"{', '.join(busy)} already hold rows",
                        "pass --replace-all to replace them or --append to add to them",
                    )
            created: list[Table] = []
            for t in ordered:
                if t.name not in existing:
                    # a verified backup comes from a store that enforced its keys
                    w.create(t, m.engine, defer_keys=check)
                    created.append(t)
            if mode == "replace":
                w.clear([existing[t.name] for t in ordered if t.name in existing])
            counts: dict[str, int] = {}
            loaded: list[Table] = []
            for t in ordered:
                target = existing.get(t.name, t)
                cols = t.column_names
                missing = [c for c in cols if target.column(c) is None]
                if missing:
                    raise UsageError(
                        f"table {t.name} of the database has no column(s) {', '.join(missing)} "
                        f"found in {source.label}",
                        "migrate the database first, or import into an empty environment",
                    )
                counts[t.name] = load_table(w, t, target, cols)
                loaded.append(target)
            w.finish(created, loaded, m.engine)
            return LoadResult(counts, [t.name for t in created])

        with store.write() as w:
            return fill(w)

    # -- backups --------------------------------------------------------------
    def backup(
        self,
        project: str,
        environment: str,
        kind: str = "manual",
        note: str | None = None,
        progress: Progress | None = None,
    ) -> BackupInfo:
        cfg = self._config(project)
        owner = cfg.owner(environment)
        encrypt = cfg.env(owner).backups.encrypt
        store = self.open_store(project, owner)
        target = self.target(project, owner)
        now = _utcnow()
        bid = _backup_id(now)
        box = self.api.secret_box if encrypt else None
        with target.create(bid) as f:
            sink = ZipSink(f, box, _context(project, owner, bid))
            with store.read() as r:
                tables = r.tables()
                files = export_tables(r, tables, sink, progress)
            manifest = self._manifest(store, tables, files, project, owner, kind, note, encrypt)
            manifest.created_at = now.isoformat(timespec="seconds")
            sink.finish(manifest)
        size = next((b.size for b in target.list() if b.name == bid), 0)
        info = BackupInfo(
            bid,
            project,
            owner,
            kind,
            now.timestamp(),
            size,
            manifest.total_rows,
            len(tables),
            encrypt,
            note,
        )
        self._catalog(info)
        self.api.audit.record(
            "db.backup",
            project=project,
            environment=owner,
            target=bid,
            details={"kind": kind, "rows": info.rows, "size": size, "encrypted": encrypt},
        )
        return info

    def _catalog(self, info: BackupInfo) -> None:
        self.api.store.execute(
            "INSERT OR REPLACE INTO data_backups (project, environment, id, kind, created_at,"
            " size, rows, tables, encrypted, note) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                info.project,
                info.environment,
                info.id,
                info.kind,
                info.created_at,
                info.size,
                info.rows,
                info.tables,
                int(info.encrypted),
                info.note,
            ),
        )

    def backups(self, project: str, environment: str) -> list[BackupInfo]:
        """Published backups, newest first (the target is the truth; the catalog a cache)."""
        owner = self.owner(project, environment)
        target = self.target(project, owner)
        stored = {b.name: b for b in target.list()}
        rows = {
            r["id"]: r
            for r in self.api.store.query(
                "SELECT * FROM data_backups WHERE project=? AND environment=?", (project, owner)
            )
        }
        for gone in set(rows) - set(stored):
            self.api.store.execute(
                "DELETE FROM data_backups WHERE project=? AND environment=? AND id=?",
                (project, owner, gone),
            )
        out: list[BackupInfo] = []
        for name, sb in stored.items():
            r = rows.get(name)
            if r is None:
                info = self._describe_stored(project, owner, target, name, sb.size)
                if info is None:
                    continue
                self._catalog(info)
            else:
                info = BackupInfo(
                    r["id"],
                    project,
                    owner,
                    r["kind"],
                    r["created_at"],
                    r["size"],
                    r["rows"],
                    r["tables"],
                    bool(r["encrypted"]),
                    r["note"],
                )
            out.append(info)
        return sorted(out, key=lambda b: (b.created_at, b.id), reverse=True)

    def _describe_stored(
        self, project: str, owner: str, target: BackupTarget, name: str, size: int
    ) -> BackupInfo | None:
        try:
            src = self._open_backup(project, owner, name)
        except TristageError:
            return None
        try:
            m = src.manifest
            at = dt.datetime.fromisoformat(m.created_at).timestamp() if m.created_at else 0.0
            return BackupInfo(
                name,
                project,
                owner,
                m.kind,
                at,
                size,
                m.total_rows,
                len(m.tables),
                m.encrypted,
                m.note,
            )
        finally:
            src.close()

    def _open_backup(self, project: str, owner: str, backup_id: str) -> Source:
        check_name(backup_id)
        target = self.target(project, owner)
        path = target.local_path(backup_id)
        if path is None:
            raise NotFound(
                f"no backup {backup_id} of {project}/{owner}",
                f"list them with 'tristage db backups {owner}'",
            )
        try:
            return open_source(path, self.api.secret_box, _context(project, owner, backup_id))
        except SnapshotError as exc:
            raise BackupDamaged(
                f"backup {backup_id} is damaged: {exc.message}", "restore another backup"
            ) from None

    def _discard(self, project: str, owner: str, backup_id: str) -> None:
        self.target(project, owner).delete(backup_id)
        self.api.store.execute(
            "DELETE FROM data_backups WHERE project=? AND environment=? AND id=?",
            (project, owner, backup_id),
        )

    def verify(self, project: str, environment: str, backup_id: str) -> Source:
        """Open a backup and check every file against its manifest; raises if damaged."""
        owner = self.owner(project, environment)
        src = self._open_backup(project, owner, backup_id)
        problems = src.verify()
        if problems:
            src.close()
            raise BackupDamaged(
                f"backup {backup_id} failed verification: {'; '.join(problems[:5])}",
                "nothing was restored; restore another backup",
            )
        return src

    def prune(self, project: str, environment: str, dry_run: bool = False) -> PruneResult:
        cfg = self._config(project)
        owner = cfg.owner(environment)
        keep = cfg.env(owner).backups.keep
        policy = retention.Policy(keep.daily, keep.weekly, keep.monthly)
        items = self.backups(project, owner)
        stamped = [
            retention.Backup(b.id, dt.datetime.fromtimestamp(b.created_at, dt.UTC)) for b in items
        ]
        sel = retention.select(stamped, policy)
        if not dry_run and sel.prune:
            target = self.target(project, owner)
            for bid in sel.prune:
                target.delete(bid)
                self.api.store.execute(
                    "DELETE FROM data_backups WHERE project=? AND environment=? AND id=?",
                    (project, owner, bid),
                )
            self.api.audit.record(
                "db.prune",
                project=project,
                environment=owner,
                details={"deleted": list(sel.prune), "kept": len(sel.keep)},
            )
        return PruneResult(sel.keep, list(sel.prune), dry_run)

    # -- restore / drill ---------------------------------------------------------
    def restore(
        self,
        project: str,
        environment: str,
        backup_id: str,
        yes: bool = False,
        progress: Progress | None = None,
    ) -> RestoreResult:
        cfg = self._config(project)
        owner = cfg.owner(environment)
        if cfg.env(owner).tier == Tier.production and not yes:
            raise ConfirmationRequired(
                f"restoring {owner} replaces its live data with backup {backup_id}",
                "pass --yes to confirm",
            )
        src = self._open_backup(project, owner, backup_id)
        try:
            missing = [t.name for t in src.manifest.tables if t.name not in src.manifest.files]
            if missing:
                raise BackupDamaged(
                    f"backup {backup_id} failed verification: no file for {', '.join(missing)}",
                    "nothing was restored; restore another backup",
                )
            safety = self.backup(project, owner, kind="safety", note=f"before restore {backup_id}")
            try:
                # one pass: every file is checked against the manifest while it loads,
                # and the transaction commits only after the last check passed
                result = self._load(
                    self.open_store(project, owner),
                    src,
                    [t.name for t in src.manifest.tables],
                    "recreate",
                    progress,
                    drop_others=True,
                    check=True,
                )
            except BaseException as exc:
                self._discard(project, owner, safety.id)  # nothing changed
                if isinstance(exc, Exception):
                    problems = src.verify()
                    if problems:
                        raise BackupDamaged(
                            f"backup {backup_id} failed verification: {'; '.join(problems[:5])}",
                            "nothing was restored; restore another backup",
                        ) from None
                raise
        finally:
            src.close()
        self.api.audit.record(
            "db.restore",
            project=project,
            environment=owner,
            target=backup_id,
            details={"safety_backup": safety.id, "rows": sum(result.rows.values())},
        )
        return RestoreResult(backup_id, safety.id, result.rows)

    def drill(self, project: str, environment: str, backup_id: str | None = None) -> DrillReport:
        """Restore a backup (default: the latest) into a scratch store and compare."""
        started = time.monotonic()
        owner = self.owner(project, environment)
        if backup_id is None:
            items = self.backups(project, owner)
            if not items:
                raise NotFound(
                    f"{project}/{owner} has no backup to drill",
                    f"take one with 'tristage db backup {owner}'",
                )
            backup_id = items[0].id
        report = DrillReport(project, owner, backup_id, passed=False)
        try:
            src = self.verify(project, owner, backup_id)
        except BackupDamaged as exc:
            report.problems.append(exc.message)
            return self._drilled(report, started)
        try:
            with self._scratch(project, owner) as scratch:
                names = [t.name for t in src.manifest.tables]
                self._load(scratch, src, names, "recreate")
                with scratch.read() as r:
                    actual = {t.name: t for t in r.tables()}
                    tables = [actual[n] for n in names if n in actual]
                    files = export_tables(r, tables, _HashSink())
                for name in names:
                    exp = src.manifest.files[name]
                    got = files.get(name)
                    report.checks.append(
                        DrillCheck(
                            name,
                            exp.rows,
                            got.rows if got else -1,
                            bool(got and got.sha256 == exp.sha256),
                        )
                    )
        except TristageError as exc:
            report.problems.append(exc.message)
        finally:
            src.close()
        report.passed = not report.problems and all(c.ok for c in report.checks)
        return self._drilled(report, started)

    def _drilled(self, report: DrillReport, started: float) -> DrillReport:
        report.seconds = round(time.monotonic() - started, 3)
        self.api.audit.record(
            "db.drill",
            project=report.project,
            environment=report.environment,
            target=report.backup,
            details={"passed": report.passed, "tables": len(report.checks)},
        )
        return report

    @contextmanager
    def _scratch(self, project: str, owner: str) -> Iterator[DataStoreT]:
        url = self.database_url(project, owner)
        token = secrets.token_hex(4)
        if url.startswith("sqlite:"):
            path = self.api.home / "tmp" / f"drill-{project}-{owner}-{token}.sqlite3"
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                yield SqliteDataStore(path)
            finally:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
        else:
            server = with_database(url, "postgres")
            name = f"{database_of(url)}_drill_{token}"[:63]
            scratch_url = ensure_database(server, name)
            try:
                yield PostgresDataStore(scratch_url)
            finally:
                drop_database(server, name)

    # -- clone -----------------------------------------------------------------
    def clone(
        self,
        project: str,
        source_env: str,
        target_env: str,
        yes: bool = False,
        progress: Progress | None = None,
    ) -> CloneReport:
        started = time.monotonic()
        cfg = self._config(project)
        src_owner, dst_owner = cfg.owner(source_env), cfg.owner(target_env)
        if cfg.env(dst_owner).tier == Tier.production:
            raise UsageError(
                f"cannot clone into {target_env}: it is production",
                "production data only changes through deploys, imports and restores",
            )
        if src_owner == dst_owner:
            raise UsageError(f"{source_env} and {target_env} share one data store")
        must_sanitize = cfg.env(src_owner).tier == Tier.production
        src, dst = self.open_store(project, src_owner), self.open_store(project, dst_owner)
        with src.read() as r:
            tables = r.tables()
            plan = sanitize.plan(tables, cfg.sanitize, self._faker_has) if must_sanitize else None
            if plan is not None and not plan.ok:
                self.api.audit.record(
                    "db.clone.refused",
                    project=project,
                    environment=dst_owner,
                    target=src_owner,
                    details={"columns": [f"{p.table}.{p.column}" for p in plan.problems]},
                )
                raise SanitizeRefused(plan.problems)
            with dst.read() as dr:
                busy = [t.name for t in dr.tables() if dr.count(t.name)]
            if busy and not yes:
                raise ConfirmationRequired(
                    f"cloning replaces the data of {dst_owner} ({', '.join(busy[:5])} hold rows)",
                    "pass --yes to confirm (a safety backup is taken first)",
                )
            safety = (
                self.backup(project, dst_owner, kind="safety", note=f"before clone {src_owner}")
                if busy
                else None
            )
            transformer = sanitize.Transformer(self.api.project_salt(project), self._fake)
            counts = self._copy(r, dst, tables, src.engine, plan, transformer, progress)
        transformed = plan.transformed() if plan else {}
        report = CloneReport(
            src_owner,
            dst_owner,
            plan is not None,
            counts,
            {t: c for t, c in transformed.items() if c},
            safety.id if safety else None,
            round(time.monotonic() - started, 3),
        )
        self.api.audit.record(
            "db.clone",
            project=project,
            environment=dst_owner,
            target=src_owner,
            details={
                "sanitized": report.sanitized,
                "rows": sum(counts.values()),
                "transformed": report.transformed,
            },
        )
        return report

    def _copy(
        self,
        r: Reader,
        dst: DataStoreT,
        tables: list[Table],
        engine: str,
        plan: sanitize.Plan | None,
        transformer: sanitize.Transformer,
        progress: Progress | None,
    ) -> dict[str, int]:
        ordered = load_order(tables)
        with dst.write() as w:
            existing = {t.name for t in w.tables()}
            w.drop([t.name for t in reversed(ordered) if t.name in existing])
            counts: dict[str, int] = {}
            for t in ordered:
                # the source enforced the keys: build them after the rows are in
                w.create(t, engine, defer_keys=True)
                rules = plan.columns.get(t.name, []) if plan is not None else []
                total = r.count(t.name) if progress else 0
                if isinstance(r, SqliteSession) and isinstance(w, SqliteSession):
                    functions = {
                        c.column: transformer.rule_function(c.rule)
                        for c in rules
                        if c.rule != "keep"
                    }
                    counts[t.name] = w.copy_from(r.path, t, functions)
                    if progress:
                        progress(t.name, counts[t.name], total)
                    continue
                if isinstance(r, PgSession) and isinstance(w, PgSession):
                    counts[t.name] = w.copy_text(
                        t, _copy_rows(t, r, rules, transformer, progress, total), t.name
                    )
                    continue
                fn: Callable[[Sequence[Any]], Sequence[Any]] | None = None
                if any(c.rule != "keep" for c in rules):
                    fn = transformer.row_function(t.column_names, rules)
                counts[t.name] = w.insert(t, t.column_names, _sourced(t, r, fn, progress, total))
            w.finish(ordered, ordered, engine)
        return counts

    def _faker_has(self, provider: str) -> bool:
        return callable(getattr(self._get_faker(), provider, None))

    def _get_faker(self) -> Any:
        if self._faker is None:
            from faker import Faker

            self._faker = Faker()
        return self._faker

    def _fake(self, seed: int, provider: str) -> Any:
        fake = self._get_faker()
        fake.seed_instance(seed)
        return getattr(fake, provider)()

    # -- deploys and the scheduler -------------------------------------------------
    def snapshot_before_migration(self, project: str, environment: str, deployment: str) -> str:
        """Snapshot the store before a migration; returns the backup id to restore."""
        return self.backup(project, environment, kind="pre-migration", note=deployment).id

    def run_due_backups(self, now: dt.datetime) -> list[str]:
        """Run scheduled backups that are due (missed runs caught up once); returns ids."""
        from croniter import croniter

        local_now = now.astimezone()  # naive = local time
        done: list[str] = []
        for row in self.api.store.query("SELECT name FROM projects ORDER BY name"):
            project = row["name"]
            try:
                cfg = self._config(project)
            except TristageError:
                continue
            for name, env in cfg.environments.items():
                schedule = env.backups.schedule
                if env.shares is not None or not schedule:
                    continue
                state = self.api.store.query_one(
                    "SELECT * FROM data_backup_schedule WHERE project=? AND environment=?",
                    (project, name),
                )
                ts = local_now.timestamp()
                if state is None or state["schedule"] != schedule:
                    self.api.store.execute(
                        "INSERT OR REPLACE INTO data_backup_schedule"
                        " (project, environment, schedule, last_run) VALUES (?,?,?,?)",
                        (project, name, schedule, ts),
                    )
                    continue
                due = croniter(schedule, local_now).get_prev(dt.datetime).timestamp()
                if due <= state["last_run"]:
                    continue
                claimed = self.api.store.execute(
                    "UPDATE data_backup_schedule SET last_run=? WHERE project=? AND"
                    " environment=? AND last_run=?",
                    (ts, project, name, state["last_run"]),
                )
                if not claimed:
                    continue  # another scheduler took it
                try:
                    info = self.backup(project, name, kind="scheduled")
                    self.prune(project, name)
                    done.append(info.id)
                    self.api.store.execute(
                        "UPDATE data_backup_schedule SET last_backup=?, last_error=NULL"
                        " WHERE project=? AND environment=?",
                        (info.id, project, name),
                    )
                except Exception as exc:  # one failing store must not stop the others
                    reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                    self.api.store.execute(
                        "UPDATE data_backup_schedule SET last_error=? WHERE project=? AND"
                        " environment=?",
                        (reason, project, name),
                    )
                    self.api.audit.record(
                        "db.backup.failed",
                        project=project,
                        environment=name,
                        details={"reason": reason},
                    )
        return done

    def schedule_state(self, project: str) -> list[dict[str, Any]]:
        return self.api.store.query(
            "SELECT * FROM data_backup_schedule WHERE project=? ORDER BY environment", (project,)
        )


def _context(project: str, owner: str, backup_id: str) -> bytes:
    return f"tristage-backup|{project}|{owner}|{backup_id}".encode()


def _select(tables: Sequence[Table], names: Sequence[str], where: str) -> list[Table]:
    if not names:
        return list(tables)
    by_name = {t.name: t for t in tables}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise NotFound(
            f"no table {', '.join(repr(n) for n in unknown)} in {where}",
            f"tables: {', '.join(by_name) or '(none)'}",
        )
    return [by_name[n] for n in dict.fromkeys(names)]


def _sourced(
    t: Table,
    r: Reader,
    fn: Callable[[Sequence[Any]], Sequence[Any]] | None,
    progress: Progress | None,
    total: int,
) -> Iterator[SourcedRow]:
    label = f"{t.name} row "
    rows = ((label + str(n), fn(row) if fn else row) for n, row in enumerate(r.rows(t), 1))
    yield from _counted(rows, t.name, total, progress)


def _copy_rows(
    t: Table,
    r: PgSession,
    rules: Sequence[sanitize.ColumnRule],
    transformer: sanitize.Transformer,
    progress: Progress | None,
    total: int,
) -> Iterator[bytes]:
    """COPY text rows of `t`, with the fields of changed columns rewritten."""
    by_col = {c.column: c.rule for c in rules}
    changed = [
        (i, by_col[c]) for i, c in enumerate(t.column_names) if by_col.get(c, "keep") != "keep"
    ]
    rows: Iterator[bytes] = r.copy_rows(t)
    if changed:
        loaders = r.text_loaders(t)
        fields = [(i, loaders[i], transformer.rule_function(rule)) for i, rule in changed]
        rows = map(pg_text.row_function(len(t.columns), fields), rows)
    yield from _counted(rows, t.name, total, progress)


def _counted(items: Iterable[T], table: str, total: int, progress: Progress | None) -> Iterator[T]:
    """`items` as they are, reporting `progress(table, n, total)` every 5,000 and at the end."""
    if not progress:
        return iter(items)
    return _reporting(items, table, total, progress)


def _reporting(items: Iterable[T], table: str, total: int, progress: Progress) -> Iterator[T]:
    n = 0
    for item in items:
        n += 1
        if n % 5000 == 0:
            progress(table, n, total)
        yield item
    progress(table, n, total)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
