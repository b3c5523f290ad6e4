"""Backups of a data store: take, list, verify, prune (retention), restore and drill.

Backups are ZIP snapshots in the environment owner's backup target, optionally
encrypted; the store's catalog caches what the target holds.
"""

from __future__ import annotations

import datetime as dt
import io
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ..domain import retention
from ..domain.config import Tier
from ..domain.snapshot import FileEntry, Manifest, Table
from ..edges import data_files as disk
from ..edges.backup_targets import SUFFIX, TMP_PREFIX, BackupTarget, check_name
from ..edges.data_files import SQLITE_COPY_PREFIX
from ..edges.datastores import PostgresDataStore, SqliteDataStore
from ..edges.datastores.postgres import (
    DUMP_MEMBER,
    database_of,
    drop_database,
    drop_undo,
    dump_schema_text,
    ensure_database,
    exclusive,
    restore_dump,
    schema_text,
    scratch_name,
    swap_back,
    undo_databases,
    with_database,
)
from ..edges.datastores.postgres import PostgresSession as PgSession
from ..edges.datastores.postgres import dump as pg_dump
from ..edges.snapshot_io import (
    Progress,
    SnapshotError,
    Source,
    ZipSink,
    export_tables,
    open_source,
)
from ..errors import NotFound, TristageError, UsageError
from ..paths import private_dirs, private_mkdirs, private_open
from .data_files import DataFiles, Staged
from .data_records import (
    BackupDamaged,
    BackupInfo,
    ConfirmationRequired,
    DataStoreT,
    DrillCheck,
    DrillReport,
    PruneResult,
    RestoreResult,
    UndoCopy,
    WriteFailed,
)
from .data_snapshots import SnapshotService
from .data_stores import DataStores, utcnow

if TYPE_CHECKING:
    from ..api import Tristage


def _backup_id(now: dt.datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


class _HashSink:
    """A sink that keeps only checksums (for comparing a store with a manifest)."""

    @contextmanager
    def member(self, path: str) -> Iterator[IO[bytes]]:
        yield io.BytesIO()  # export_tables hashes the bytes itself; discard them

    def finish(self, manifest: Manifest) -> None:
        pass


SWEEP_AGE = 3600.0  # a partial write this old belongs to a process that died


class BackupService:
    """Backups of an environment's store: take, list, verify, prune, restore, drill."""

    def __init__(self, api: Tristage, stores: DataStores, snapshots: SnapshotService) -> None:
        self.api = api
        self.stores = stores
        self.snapshots = snapshots
        self.files = DataFiles(api, stores)

    def backup(
        self,
        project: str,
        environment: str,
        kind: str = "manual",
        note: str | None = None,
        progress: Progress | None = None,
    ) -> BackupInfo:
        cfg = self.stores.config(project)
        owner = cfg.owner(environment)
        encrypt = cfg.env(owner).backups.encrypt
        if encrypt is None:  # production's backups are encrypted unless told otherwise
            encrypt = cfg.env(owner).tier == Tier.production
        store = self.stores.open_store(project, owner)
        target = self.stores.target(project, owner)
        self.sweep(project, owner)
        now = utcnow()
        bid = _backup_id(now)
        box = self.api.secret_box if encrypt else None
        try:
            with target.create(bid) as f:
                sink = ZipSink(f, box, _context(project, owner, bid))
                try:
                    dump: dict[str, object] | None = None
                    with store.read() as r:
                        tables = r.tables()
                        if isinstance(r, PgSession):
                            # the pg_dump archive alone, streamed into the snapshot
                            files, dump = {}, _dump_into(store.url, r, tables, sink, progress)
                        else:
                            files = export_tables(r, tables, sink, progress)
                    manifest = self.snapshots.manifest(
                        store, tables, files, project, owner, kind, note, encrypt
                    )
                    manifest.created_at = now.isoformat(timespec="seconds")
                    if dump:
                        manifest.extra["dump"] = dump
                    # the data directory's files, beside the tables (edges/data_files.py)
                    manifest.extra["files"] = self.files.archive(project, owner, sink)
                    sink.finish(manifest)
                except BaseException:
                    sink.abort()
                    raise
        except OSError as exc:
            raise WriteFailed(f"backup {bid} to {target.describe()}", exc) from None
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
            details={
                "kind": kind,
                "rows": info.rows,
                "size": size,
                "encrypted": encrypt,
                "files": manifest.extra["files"]["files"],
            },
        )
        return info

    def _catalog(self, info: BackupInfo) -> None:
        self.api.store.execute(
            "INSERT INTO data_backups (project, environment, id, kind, created_at, size, rows,"
            " tables, encrypted, note) VALUES (?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT (project, environment, id) DO UPDATE SET kind=excluded.kind,"
            " created_at=excluded.created_at, size=excluded.size, rows=excluded.rows,"
            " tables=excluded.tables, encrypted=excluded.encrypted, note=excluded.note",
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
        owner = self.stores.owner(project, environment)
        target = self.stores.target(project, owner)
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
        target = self.stores.target(project, owner)
        path = target.local_path(backup_id)
        downloaded = path is None
        if path is None:
            path = self._download(target, project, owner, backup_id)
        try:
            return open_source(path, self.api.secret_box, _context(project, owner, backup_id))
        except SnapshotError as exc:
            raise BackupDamaged(
                f"backup {backup_id} is damaged: {exc.message}", "restore another backup"
            ) from None
        finally:
            if downloaded:
                path.unlink(missing_ok=True)  # the open source keeps reading it

    def sweep(self, project: str, owner: str) -> int:
        """Remove what killed operations left: partial backups of the target, downloaded
        copies of remote backups and SQLite drill copies, older than `SWEEP_AGE` seconds."""
        n = self.stores.target(project, owner).sweep(SWEEP_AGE)
        tmp = self.api.home / "tmp"
        cutoff = time.time() - SWEEP_AGE
        leftovers = [
            *(tmp / "backup-downloads").glob(f"{TMP_PREFIX}*"),
            # a SQLite drill's scratch copy of a drill that was killed
            *tmp.glob(f"drill-{project}-{owner}-*.sqlite3*"),
            # an app database's consistent copy of a backup that was killed
            *tmp.glob(f"{SQLITE_COPY_PREFIX}*"),
        ]
        for p in leftovers:
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    n += 1
            except FileNotFoundError:
                pass
        if n:
            self.api.audit.record(
                "db.sweep", project=project, environment=owner, details={"removed": n}
            )
        return n

    def _download(self, target: BackupTarget, project: str, owner: str, backup_id: str) -> Path:
        """A remote backup copied into a private file that is unlinked as soon as it is
        open: no copy of it stays on this disk (the open file keeps it readable)."""
        if backup_id not in {b.name for b in target.list()}:
            raise NotFound(
                f"no backup {backup_id} of {project}/{owner} in {target.describe()}",
                f"list them with 'tristage db backups {owner}'",
            )
        folder = private_mkdirs(self.api.home / "tmp" / "backup-downloads")
        path = folder / f"{TMP_PREFIX}{backup_id}-{secrets.token_hex(4)}{SUFFIX}"
        with target.open(backup_id) as remote, private_open(path, exclusive=True) as f:
            shutil.copyfileobj(remote, f, 1 << 20)
        return path

    def _discard(self, project: str, owner: str, backup_id: str) -> None:
        self.stores.target(project, owner).delete(backup_id)
        self.api.store.execute(
            "DELETE FROM data_backups WHERE project=? AND environment=? AND id=?",
            (project, owner, backup_id),
        )

    def verify(self, project: str, environment: str, backup_id: str) -> Source:
        """Open a backup and check every file against its manifest; raises if damaged."""
        owner = self.stores.owner(project, environment)
        src = self._open_backup(project, owner, backup_id)
        problems = src.verify() + self.files.problems(src, project, owner)
        if problems:
            src.close()
            raise BackupDamaged(
                f"backup {backup_id} failed verification: {'; '.join(problems[:5])}",
                "nothing was restored; restore another backup",
            )
        return src

    def prune(self, project: str, environment: str, dry_run: bool = False) -> PruneResult:
        cfg = self.stores.config(project)
        owner = cfg.owner(environment)
        keep = cfg.env(owner).backups.keep
        policy = retention.Policy(keep.daily, keep.weekly, keep.monthly)
        items = self.backups(project, owner)  # newest first
        manual = [b for b in items if b.kind == "manual"]
        stamped = [
            retention.Backup(b.id, dt.datetime.fromtimestamp(b.created_at, dt.UTC))
            for b in items
            if b.kind != "manual"
        ]
        sel = retention.select(stamped, policy)
        kept = dict(sel.keep)
        prune = list(sel.prune)
        # manual backups are not the schedule's: kept until deleted by hand, or the
        # newest `keep_manual` of them
        limit = cfg.env(owner).backups.keep_manual
        for i, b in enumerate(manual):
            if limit is None:
                kept[b.id] = (
                    f"manual: kept until deleted by hand (tristage db delete {owner} ID)",
                )
            elif i < limit:
                kept[b.id] = (f"manual {i + 1} of keep_manual = {limit}",)
            else:
                prune.append(b.id)
        if not dry_run and prune:
            target = self.stores.target(project, owner)
            for bid in prune:
                target.delete(bid)
                self.api.store.execute(
                    "DELETE FROM data_backups WHERE project=? AND environment=? AND id=?",
                    (project, owner, bid),
                )
            self.api.audit.record(
                "db.prune",
                project=project,
                environment=owner,
                details={"deleted": prune, "kept": len(kept)},
            )
        return PruneResult(kept, prune, dry_run)

    def delete(self, project: str, environment: str, backup_id: str, yes: bool = False) -> None:
        """Delete one backup by hand (how manual backups go, unless `keep_manual`)."""
        owner = self.stores.owner(project, environment)
        check_name(backup_id)
        if backup_id not in {b.id for b in self.backups(project, owner)}:
            raise NotFound(
                f"no backup {backup_id} of {project}/{owner}",
                f"list them with 'tristage db backups {owner}'",
            )
        if not yes:
            raise ConfirmationRequired(
                f"deleting backup {backup_id} of {owner} cannot be undone", "pass --yes to confirm"
            )
        self._discard(project, owner, backup_id)
        self.api.audit.record(
            "db.backup.delete", project=project, environment=owner, target=backup_id
        )

    # -- restore / drill ---------------------------------------------------------
    def restore(
        self,
        project: str,
        environment: str,
        backup_id: str,
        yes: bool = False,
        progress: Progress | None = None,
    ) -> RestoreResult:
        cfg = self.stores.config(project)
        owner = cfg.owner(environment)
        if cfg.env(owner).tier == Tier.production and not yes:
            raise ConfirmationRequired(
                f"restoring {owner} replaces its live data with backup {backup_id}",
                "pass --yes to confirm",
            )
        self.sweep(project, owner)
        store = self.stores.open_store(project, owner)
        src = self._open_backup(project, owner, backup_id)
        files: Staged | None = None
        try:
            dump = src.dump_entry
            if dump is not None and isinstance(store, PostgresDataStore):
                # the files, unpacked and checked beside the data directory before any change
                files = self.files.stage(project, owner, src, backup_id)
                return self._restore_dump(project, owner, backup_id, store, src, dump, files)
            if src.manifest.dump_only:
                raise UsageError(
                    f"backup {backup_id} is a pg_dump archive; the data store of {owner} is "
                    f"{store.engine}",
                    "restore it into a PostgreSQL store (pg_restore reads it too)",
                )
            missing = [t.name for t in src.manifest.tables if t.name not in src.manifest.files]
            if missing:
                raise BackupDamaged(
                    f"backup {backup_id} failed verification: no file for {', '.join(missing)}",
                    "nothing was restored; restore another backup",
                )
            # the files, unpacked and checked beside the data directory before any change
            files = self.files.stage(project, owner, src, backup_id)
            safety = self.backup(project, owner, kind="safety", note=f"before restore {backup_id}")
            try:
                # one pass: every file is checked against the manifest while it loads,
                # and the transaction commits only after the last check passed
                result = self.snapshots.load(
                    store,
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
            self._restored(project, owner, backup_id, result.rows, safety.id, files=files)
        finally:
            src.close()
            if files is not None:
                files.close()
        return RestoreResult(
            backup_id, safety.id, result.rows, None if files is None else files.files
        )

    def _restore_dump(
        self,
        project: str,
        owner: str,
        backup_id: str,
        store: PostgresDataStore,
        src: Source,
        dump: FileEntry,
        files: Staged | None,
    ) -> RestoreResult:
        """pg_restore the backup's archive into a new database (its sha256 and size are
        checked while it streams in; a mismatch drops that database), which then takes
        the live one's place; the live one is kept, renamed, as the undo copy. No second
        dump is taken: the undo copy is the database as it was. Only when the backup's
        files would replace files the data directory holds is a safety backup taken
        first (the undo copy holds no files)."""
        safety: str | None = None
        if files is not None:
            root, store_names = self.files.root(project, owner)
            if disk.scan(root, store_names):
                note = f"before restore {backup_id}"
                safety = self.backup(project, owner, kind="safety", note=note).id
        keep = self.stores.config(project).env(owner).backups.keep_undo
        undo = scratch_name(database_of(store.url), "undo") if keep else ""
        if undo:  # recorded before the swap: a kill after it leaves the copy listed
            self._record_undo(project, owner, undo, f"restore of {backup_id}")
        try:
            with exclusive(store.url):
                restore_dump(store.url, store.role, src.checked_chunks(dump), True, undo)
        except BaseException as exc:
            if undo:
                self._forget_undo(project, owner, undo)
            if safety:
                self._discard(project, owner, safety)
            if files is not None:
                files.close()
            if isinstance(exc, SnapshotError):
                raise BackupDamaged(
                    f"backup {backup_id} failed verification: {exc.message}",
                    "nothing was restored; restore another backup",
                ) from None
            raise
        rows = src.manifest.row_counts
        try:
            self._restored(project, owner, backup_id, rows, safety, undo or None, files)
        finally:
            if files is not None:
                files.close()
        self.prune_undo(project, owner)
        count = None if files is None else files.files
        return RestoreResult(backup_id, safety, rows, count, undo or None)

    def _restored(
        self,
        project: str,
        owner: str,
        backup_id: str,
        rows: dict[str, int],
        safety: str | None = None,
        undo: str | None = None,
        files: Staged | None = None,
    ) -> None:
        if files is not None:
            files.swap()  # the store is restored: the files follow, all at once
        details: dict[str, object] = {
            "rows": sum(rows.values()),
            "files": files.files if files is not None else None,
        }
        if safety:
            details["safety_backup"] = safety
        if undo:
            details["undo"] = undo
        self.api.audit.record(
            "db.restore", project=project, environment=owner, target=backup_id, details=details
        )

    # -- undo copies of PostgreSQL restores ----------------------------------------
    def _record_undo(self, project: str, owner: str, database: str, note: str) -> None:
        self.api.store.execute(
            "INSERT INTO data_undo (project, environment, database, created_at, note)"
            " VALUES (?,?,?,?,?)",
            (project, owner, database, time.time(), note),
        )

    def _forget_undo(self, project: str, owner: str, database: str) -> None:
        self.api.store.execute(
            "DELETE FROM data_undo WHERE project=? AND environment=? AND database=?",
            (project, owner, database),
        )

    def undo_copies(self, project: str, environment: str) -> list[UndoCopy]:
        """The kept databases of restores, newest first. The server is the truth: a row
        whose database is gone is forgotten, a kept database without a row is listed."""
        owner = self.stores.owner(project, environment)
        store = self.stores.open_store(project, owner)
        if not isinstance(store, PostgresDataStore):
            return []
        present = set(undo_databases(store.url))
        rows = {
            r["database"]: UndoCopy(r["database"], r["created_at"], r["note"])
            for r in self.api.store.query(
                "SELECT * FROM data_undo WHERE project=? AND environment=?", (project, owner)
            )
        }
        for gone in set(rows) - present:
            self._forget_undo(project, owner, gone)
            del rows[gone]
        for name in present - set(rows):
            rows[name] = UndoCopy(name, time.time(), "kept by an interrupted restore")
            self._record_undo(project, owner, name, rows[name].note)
        return sorted(rows.values(), key=lambda u: (u.created_at, u.database), reverse=True)

    def prune_undo(self, project: str, environment: str) -> list[str]:
        """Drop the undo copies past `backups.keep_undo` (newest kept); returns them."""
        owner = self.stores.owner(project, environment)
        keep = self.stores.config(project).env(owner).backups.keep_undo
        copies = self.undo_copies(project, owner)
        dropped = [u.database for u in copies[keep:]]
        if not dropped:
            return []
        url = self.stores.open_store(project, owner).url
        for name in dropped:
            drop_undo(url, name)
            self._forget_undo(project, owner, name)
        self.api.audit.record(
            "db.undo.drop", project=project, environment=owner, details={"dropped": dropped}
        )
        return dropped

    def undo(self, project: str, environment: str, yes: bool = False) -> UndoCopy:
        """Undo the latest PostgreSQL restore: its kept database takes the live one's
        place again; the live one is kept in turn (so this can be undone too)."""
        cfg = self.stores.config(project)
        owner = cfg.owner(environment)
        store = self.stores.open_store(project, owner)
        if not isinstance(store, PostgresDataStore):
            raise UsageError(
                f"the data store of {owner} is {store.engine}: a restore keeps no undo copy",
                f"restore its safety backup instead (tristage db backups {owner})",
            )
        copies = self.undo_copies(project, owner)
        if not copies:
            raise NotFound(
                f"{project}/{owner} has no restore to undo",
                "a PostgreSQL restore keeps the database it replaces (backups.keep_undo)",
            )
        if cfg.env(owner).tier == Tier.production and not yes:
            raise ConfirmationRequired(
                f"undoing the restore of {owner} replaces its live data with "
                f"{copies[0].database} ({copies[0].note})",
                "pass --yes to confirm",
            )
        latest = copies[0]
        kept = scratch_name(database_of(store.url), "undo")
        self._record_undo(project, owner, kept, f"undo of {latest.note}")
        try:
            with exclusive(store.url):
                swap_back(store.url, latest.database, kept)
        except BaseException:
            self._forget_undo(project, owner, kept)
            raise
        self._forget_undo(project, owner, latest.database)
        self.api.audit.record(
            "db.restore.undo",
            project=project,
            environment=owner,
            target=latest.database,
            details={"kept": kept, "was": latest.note},
        )
        return UndoCopy(kept, time.time(), f"undo of {latest.note}")

    def drill(self, project: str, environment: str, backup_id: str | None = None) -> DrillReport:
        """Restore a backup (default: the latest) into a scratch store and compare."""
        started = time.monotonic()
        owner = self.stores.owner(project, environment)
        self.sweep(project, owner)
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
            with self._scratch(project, owner, src, report) as scratch:
                names = [t.name for t in src.manifest.tables]
                if not isinstance(scratch, _Restored):
                    self.snapshots.load(scratch, src, names, "recreate")
                with scratch.read() as r:
                    actual = {t.name: t for t in r.tables()}
                    tables = [actual[n] for n in names if n in actual]
                    if src.manifest.dump_only and isinstance(r, PgSession):
                        # the archive's sha256 was checked as it loaded: compare counts
                        counts = r.counts(tables)
                        expected = src.manifest.row_counts
                        for name in names:
                            n = counts.get(name, -1)
                            want = expected.get(name, -1)
                            report.checks.append(DrillCheck(name, want, n, n == want))
                        names = []
                    else:
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
            archive = self.files.drill_check(src, project, owner)
            if archive is not None:
                want, read, problem = archive
                report.checks.append(DrillCheck("(files)", want, read, problem is None))
                if problem:
                    report.problems.append(problem)
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
    def _scratch(
        self, project: str, owner: str, src: Source, report: DrillReport
    ) -> Iterator[DataStoreT]:
        """A scratch store, dropped afterwards: a PostgreSQL backup with a dump is
        restored into it by pg_restore, and its schema compared with the dump's."""
        url = self.stores.admin_url(project, owner)
        token = secrets.token_hex(4)
        dump = src.dump_entry
        if dump is not None and not url.startswith("sqlite:"):
            role = self.stores.open_store(project, owner)
            with exclusive(url):
                yield from self._drill_dump(url, getattr(role, "role", None), src, dump, report)
            return
        if url.startswith("sqlite:"):
            path = private_dirs(self.api.home, "tmp") / f"drill-{project}-{owner}-{token}.sqlite3"
            try:
                yield SqliteDataStore(path)
            finally:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
        else:
            server = with_database(url, "postgres")
            name = scratch_name(database_of(url), "drill", token)
            with exclusive(url):
                scratch_url = ensure_database(server, name)
                try:
                    yield PostgresDataStore(scratch_url)
                finally:
                    drop_database(server, name)

    def _drill_dump(
        self, url: str, role: str | None, src: Source, dump: FileEntry, report: DrillReport
    ) -> Iterator[DataStoreT]:
        """Restore a backup's dump into a scratch database (dropped after) and compare
        its schema with the dump's."""
        scratch_url = restore_dump(url, role, src.checked_chunks(dump), swap=False)
        try:
            expected = dump_schema_text(src.checked_chunks(dump))
            actual = schema_text(scratch_url)
            report.checks.append(
                DrillCheck(
                    "schema",
                    expected.count("\n") + 1,
                    actual.count("\n") + 1,
                    expected == actual,
                )
            )
            yield _Restored(scratch_url)
        finally:
            drop_database(with_database(url, "postgres"), database_of(scratch_url))


class _Restored(PostgresDataStore):
    """A scratch database already restored from a backup's dump."""


def _dump_into(
    url: str,
    reader: PgSession,
    tables: list[Table],
    sink: ZipSink,
    progress: Progress | None = None,
) -> dict[str, object]:
    """Stream `pg_dump --format=custom` of the reader's snapshot into the backup (sealed
    by the sink when it encrypts) and count each table's rows in that same snapshot;
    returns the manifest's dump entry. An error or a signal while it runs (a full disk,
    Ctrl-C) kills pg_dump, so its session on the database ends at once too."""
    snapshot, major = reader.export_snapshot()
    counts = reader.counts(tables)
    total = sum(counts.values())
    if progress:
        progress("pg_dump", 0, total)
    with sink.member(DUMP_MEMBER, compress=False) as out:  # pg_dump compresses it
        sha, size = pg_dump(url, out, snapshot, major)
    if progress:
        progress("pg_dump", total, total)
    return {
        "path": DUMP_MEMBER,
        "rows": total,
        "sha256": sha,
        "bytes": size,
        "tool": "pg_dump",
        "format": "custom",
        "server_major": major,
        "table_rows": counts,
    }


def _context(project: str, owner: str, backup_id: str) -> bytes:
    return f"tristage-backup|{project}|{owner}|{backup_id}".encode()
