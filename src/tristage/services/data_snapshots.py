"""Snapshots of a data store: export to a directory or ZIP, import in one transaction."""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .. import __version__
from ..domain import sanitize
from ..domain.config import Tier
from ..domain.snapshot import FileEntry, JsonValue, Manifest, Table, load_order
from ..edges.convex_export import write_convex_zip
from ..edges.datastores.base import SourcedRow, Writer
from ..edges.datastores.postgres import PostgresSession as PgSession
from ..edges.datastores.sqlite import SqliteSession
from ..edges.snapshot_io import (
    DirSink,
    Progress,
    Source,
    ZipSink,
    convex_storage_files,
    export_tables,
    extract_convex_storage,
    open_source,
    remove_tree,
)
from ..errors import Conflict, NotFound, UsageError
from ..paths import private_mkdirs, private_open
from .data_records import (
    DataStoreT,
    ExportResult,
    ImportMode,
    LoadResult,
    SanitizeRefused,
    T,
    WriteFailed,
)
from .data_stores import DataStores, utcnow

CONVEX_STORAGE_DIR = "convex-storage"  # a Convex ZIP's `_storage` files, in the data dir
# table -> the function that sanitizes its rows (None: as they are)
Transform = Callable[[Table], Callable[[Sequence[Any]], Sequence[Any]] | None]

if TYPE_CHECKING:
    from ..api import Tristage


class SnapshotService:
    """Export a store to a snapshot and load a snapshot into a store."""

    def __init__(self, api: Tristage, stores: DataStores) -> None:
        self.api = api
        self.stores = stores

    def export(
        self,
        project: str,
        environment: str,
        out: Path | None = None,
        fmt: Literal["dir", "zip", "convex"] = "dir",
        tables: Sequence[str] = (),
        progress: Progress | None = None,
    ) -> ExportResult:
        store = self.stores.open_store(project, environment)
        stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
        if out is None:
            suffix = ".zip" if fmt in ("zip", "convex") else ""
            out = Path.cwd() / f"{project}-{environment}-{stamp}{suffix}"
        out = out.resolve()
        if out.exists():
            raise Conflict(f"{out} already exists", "choose another path with -o")
        private_mkdirs(out.parent)
        tmp = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
        try:
            with store.read() as r:
                chosen = select_tables(r.tables(), tables, environment)
                if fmt == "convex":
                    with private_open(tmp, exclusive=True) as f:
                        counts = write_convex_zip(r, chosen, f)
                        f.flush()
                        os.fsync(f.fileno())
                    manifest = Manifest(
                        engine="convex",
                        tables=list(chosen),
                        files={
                            t.name: FileEntry(f"{n}/documents.jsonl", rows, "", 0)
                            for t, (n, rows) in zip(chosen, counts.items(), strict=True)
                        },
                        project=project,
                        environment=environment,
                        kind="export",
                    )
                elif fmt == "zip":
                    with private_open(tmp, exclusive=True) as f:
                        zsink = ZipSink(f)
                        sink: DirSink | ZipSink = zsink
                        try:
                            files = export_tables(r, chosen, sink, progress)
                            manifest = self.manifest(store, chosen, files, project, environment)
                            sink.finish(manifest)
                            f.flush()
                            os.fsync(f.fileno())
                        except BaseException:
                            zsink.abort()
                            raise
                else:
                    sink = DirSink(tmp)
                    files = export_tables(r, chosen, sink, progress)
                    manifest = self.manifest(store, chosen, files, project, environment)
                    sink.finish(manifest)
            tmp.rename(out)
        except BaseException as exc:
            if tmp.is_dir():
                remove_tree(tmp)
            else:
                tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise WriteFailed(str(out), exc) from None
            raise
        self.api.audit.record(
            "db.export",
            project=project,
            environment=environment,
            target=str(out),
            details={"tables": len(chosen), "rows": manifest.total_rows, "format": fmt},
        )
        return ExportResult(out, manifest)

    def manifest(
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
            created_at=utcnow().isoformat(timespec="seconds"),
            tool_version=__version__,
            kind=kind,
            note=note,
            encrypted=encrypted,
            extra={"tier": self.stores.config(project).env(environment).tier.value},
        )

    def import_snapshot(
        self,
        project: str,
        environment: str,
        path: Path,
        tables: Sequence[str] = (),
        mode: ImportMode = None,
        progress: Progress | None = None,
        not_production: bool = False,
    ) -> LoadResult:
        cfg = self.stores.config(project)
        source = open_source(path)
        transform: Transform | None = None
        sanitized = False
        try:
            m = source.manifest
            if m.dump_only:
                raise UsageError(
                    f"{path.name} is a PostgreSQL backup (a pg_dump archive, no table files)",
                    f"restore it with 'tristage db restore {environment} ID' from the backups "
                    "of its environment, or export a portable snapshot with 'tristage db export'",
                )
            components = m.extra.get("components") if m.engine == "convex" else None
            if components and not tables:
                # tables of Convex components have no place in one SQL database: named,
                # never dropped without a word
                shown = ", ".join(str(c) for c in components[:10])
                more = f" and {len(components) - 10} more" if len(components) > 10 else ""
                raise UsageError(
                    f"{path.name} holds tables of Convex components, which are not imported: "
                    f"{shown}{more}; nothing was imported",
                    "import the app's own tables by naming them (--table NAME for each: "
                    f"{', '.join(t.name for t in m.tables) or 'none'}), or export without the "
                    "components",
                )
            tier = cfg.env(environment).tier
            if m.extra.get("tier") == Tier.production.value and tier != Tier.production:
                raise UsageError(
                    f"{path.name} holds unsanitized production data; {environment} is not "
                    "production",
                    f"use 'tristage db clone {m.environment or 'production'} {environment}', "
                    "which sanitizes",
                )
            names = [t.name for t in select_tables(m.tables, tables, path.name)]
            if m.engine == "convex" and tier != Tier.production and not not_production:
                # a Convex ZIP does not say where it came from: sanitized like production
                transform = self._convex_plan(
                    project, environment, source, names, cfg.sanitize_columns
                )
                sanitized = True
            # a tristage snapshot is checked against its manifest (row counts, sha256)
            # while it loads; a mismatch rolls the whole import back
            verify = m.engine != "convex"
            result = self.load(
                self.stores.open_store(project, environment), source, names, mode, progress,
                check=verify, enforced=False, transform=transform,
            )  # fmt: skip
            stored = skipped = 0
            if m.engine == "convex" and path.is_file():
                files = convex_storage_files(path)
                if sanitized:
                    skipped = len(files)  # stored files may hold personal data: not copied
                elif files:
                    folder = self.stores.data_dir(project, environment) / CONVEX_STORAGE_DIR
                    stored = extract_convex_storage(path, files, folder)
        except BaseException as exc:
            self.api.audit.record(
                "db.import.failed",
                project=project,
                environment=environment,
                target=path.name,
                details={"error": type(exc).__name__},
            )
            raise
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
                "sanitized": sanitized,
                "not_production": not_production,
                **(
                    {"storage_files": stored, "storage_skipped": skipped}
                    if stored or skipped
                    else {}
                ),
            },
        )
        return result

    def _convex_plan(
        self,
        project: str,
        environment: str,
        source: Source,
        names: Sequence[str],
        rules: Mapping[str, Any],
    ) -> Transform:
        """The transforms of `[sanitize]` for a Convex ZIP; refuses (fail closed) when a
        column has no rule or a kept one looks personal."""
        tables = [t for t in source.manifest.tables if t.name in set(names)]
        plan = sanitize.plan(tables, rules)
        for name, cols in plan.to_sniff().items():
            t = next(x for x in tables if x.name == name)
            rows = [
                vals for _, vals in itertools.islice(source.rows(name, t), sanitize.SAMPLE_ROWS)
            ]
            samples = {}
            for c in cols:
                i = t.column_names.index(c.column)
                samples[c.column] = [
                    v.value if isinstance(v, JsonValue) else v for v in (r[i] for r in rows)
                ]
            plan.sniff(name, samples)
        if not plan.ok:
            self.api.audit.record(
                "db.import.refused",
                project=project,
                environment=environment,
                details={"columns": [f"{p.table}.{p.column}" for p in plan.problems]},
            )
            raise SanitizeRefused(
                plan.problems,
                "a Convex ZIP may hold production data, so it is sanitized like a clone: add "
                "the rules to [sanitize] (or pass --not-production if it does not come from "
                "production); nothing was imported",
            )
        transformer = sanitize.Transformer(self.api.project_salt(project))

        def for_table(t: Table) -> Callable[[Sequence[Any]], Sequence[Any]] | None:
            rules = [c for c in plan.columns.get(t.name, []) if c.rule != "keep"]
            return transformer.row_function(t.column_names, rules) if rules else None

        return for_table

    def load(
        self,
        store: DataStoreT,
        source: Source,
        names: Sequence[str],
        mode: ImportMode | Literal["recreate"],
        progress: Progress | None = None,
        drop_others: bool = False,
        check: bool = False,
        enforced: bool | None = None,
        transform: Transform | None = None,
    ) -> LoadResult:
        """Load tables of `source` in one transaction; with `check`, each file is
        verified against the manifest while it is read (a mismatch rolls back)."""
        m = source.manifest
        wanted = [t for t in m.tables if t.name in set(names)]
        ordered = load_order(wanted)

        def counted(t: Table, items: Iterator[T]) -> Iterator[T]:
            return with_progress(items, t.name, m.files[t.name].rows, progress)

        def load_table(w: Writer, t: Table, target: Table, cols: list[str]) -> int:
            fast = m.engine != "convex" and transform is None
            if isinstance(w, PgSession) and fast:
                records = source.records(t.name, target, cols, check)
                return w.copy_records(
                    target, cols, counted(t, records), lambda n: source.ref(t.name, n)
                )
            if isinstance(w, SqliteSession) and fast:
                records = source.records(t.name, target, cols, check)
                return w.insert_records(
                    target, cols, counted(t, records), lambda n: source.ref(t.name, n)
                )
            rows: Iterator[SourcedRow] = source.rows(t.name, target, cols, check)
            fn = transform(t) if transform is not None else None
            if fn is not None:
                rows = ((ref, fn(vals)) for ref, vals in rows)
            return w.insert(target, cols, counted(t, rows))

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
                    w.create(t, m.engine, defer_keys=check if enforced is None else enforced)
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


def select_tables(tables: Sequence[Table], names: Sequence[str], where: str) -> list[Table]:
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


def with_progress(
    items: Iterable[T], table: str, total: int, progress: Progress | None
) -> Iterator[T]:
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
