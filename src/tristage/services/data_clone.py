"""Clone one environment's data store into another, sanitizing production data."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..domain import leak_scan, sanitize
from ..domain.config import Tier
from ..domain.snapshot import JsonValue, Table, load_order
from ..edges.datastores import PostgresDataStore, pg_text
from ..edges.datastores.base import LoadError, Reader, SourcedRow
from ..edges.datastores.postgres import PostgresSession as PgSession
from ..edges.datastores.postgres import clone_with_schema
from ..edges.datastores.sqlite import SqliteSession
from ..edges.snapshot_io import Progress
from ..errors import TristageError, UsageError
from .data_backups import BackupService
from .data_records import (
    CloneReport,
    ConfirmationRequired,
    DataStoreT,
    SanitizeLeak,
    SanitizeRefused,
)
from .data_snapshots import with_progress
from .data_stores import DataStores

if TYPE_CHECKING:
    from ..api import Tristage


class CloneService:
    """Copy one environment's store into another, sanitized when the source is production."""

    def __init__(self, api: Tristage, stores: DataStores, backups: BackupService) -> None:
        self.api = api
        self.stores = stores
        self.backup_service = backups
        self._faker: Any = None

    def clone(
        self,
        project: str,
        source_env: str,
        target_env: str,
        yes: bool = False,
        progress: Progress | None = None,
    ) -> CloneReport:
        started = time.monotonic()
        cfg = self.stores.config(project)
        src_owner, dst_owner = cfg.owner(source_env), cfg.owner(target_env)
        if cfg.env(dst_owner).tier == Tier.production:
            raise UsageError(
                f"cannot clone into {target_env}: it is production",
                "production data only changes through deploys, imports and restores",
            )
        if src_owner == dst_owner:
            raise UsageError(f"{source_env} and {target_env} share one data store")
        must_sanitize = cfg.env(src_owner).tier == Tier.production
        src, dst = (
            self.stores.open_store(project, src_owner),
            self.stores.open_store(project, dst_owner),
        )
        # the data directory's files: those [sanitize.files] names (all from another tier)
        files = self.backup_service.files.plan_clone(project, src_owner, dst_owner, must_sanitize)
        with src.read() as r:
            tables = r.tables()
            plan = (
                sanitize.plan(tables, cfg.sanitize_columns, self._faker_has)
                if must_sanitize
                else None
            )
            if plan is not None:
                by_name = {t.name: t for t in tables}
                for name, cols in plan.to_sniff().items():
                    plan.sniff(name, _samples(r, by_name[name], cols))
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
            if files.target_files:
                busy.append(f"{files.target_files} file(s) of its data directory")
            if busy and not yes:
                raise ConfirmationRequired(
                    f"cloning replaces the data of {dst_owner} ({', '.join(busy[:5])} hold data)",
                    "pass --yes to confirm (a safety backup is taken first)",
                )
            safety = (
                self.backup_service.backup(
                    project, dst_owner, kind="safety", note=f"before clone {src_owner}"
                )
                if busy
                else None
            )
            transformer = sanitize.Transformer(self.api.project_salt(project), self._fake)
            scan = leak_scan.ScanReport()

            def check(w: Any) -> None:
                # before the copy commits: a production value found there rolls it back
                if plan is not None:
                    _scan(r, w, tables, plan, transformer, scan)
                    if scan.found:
                        raise SanitizeLeak(scan.found)

            try:
                if isinstance(r, PgSession) and isinstance(dst, PostgresDataStore):
                    # the whole schema as pg_dump sees it; rows through the transforms
                    # tables copied as they are go by pg_dump | pg_restore, beside
                    # the others, whose rows stream through the transforms
                    def changed(t: Table) -> bool:
                        return plan is not None and any(
                            c.rule != "keep" for c in plan.columns.get(t.name, [])
                        )

                    direct = [t for t in tables if not changed(t)]

                    def fill(w: PgSession) -> dict[str, int]:
                        counts = {
                            t.name: w.copy_text(
                                t,
                                _copy_rows(
                                    t, r, plan.columns.get(t.name, []) if plan else [],
                                    transformer, progress, r.count(t.name) if progress else 0,
                                ),
                                t.name,
                            )
                            for t in tables
                            if changed(t)
                        }  # fmt: skip
                        check(w)
                        return counts

                    counts = clone_with_schema(r, src.url, dst.url, dst.role, fill, direct)
                    if progress:
                        for t in direct:
                            progress(t.name, counts[t.name], counts[t.name])
                else:
                    counts = self._copy(
                        r, dst, tables, src.engine, plan, transformer, progress, check
                    )
            except SanitizeLeak as exc:
                self.api.audit.record(
                    "db.clone.refused",
                    project=project,
                    environment=dst_owner,
                    target=src_owner,
                    details={"leaks": exc.found, "scan": scan.as_json()},
                )
                raise
            except BaseException as exc:
                if must_sanitize and isinstance(exc, TristageError):
                    # the database's complaint may quote production values: not those
                    exc.message = sanitize.without_values(exc.message)
                    exc.args = (exc.message,)
                    if isinstance(exc, LoadError):
                        exc.reason = sanitize.without_values(exc.reason)
                raise
        copied = self.backup_service.files.apply_clone(files)
        transformed = plan.transformed() if plan else {}
        report = CloneReport(
            src_owner,
            dst_owner,
            plan is not None,
            counts,
            {t: c for t, c in transformed.items() if c},
            safety.id if safety else None,
            round(time.monotonic() - started, 3),
            scan.as_json() if plan is not None else None,
            plan.forced() if plan is not None else {},
            copied,
            files.left_out,
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
                "forced_keep": report.forced_keep,
                "scan": report.scan,
                "files_copied": copied,
                "files_left_out": files.left_out,
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
        check: Callable[[Any], None],
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
                        c.column: transformer.function(c) for c in rules if c.rule != "keep"
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
            check(w)
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


def _sourced(
    t: Table,
    r: Reader,
    fn: Callable[[Sequence[Any]], Sequence[Any]] | None,
    progress: Progress | None,
    total: int,
) -> Iterator[SourcedRow]:
    label = f"{t.name} row "
    rows = ((label + str(n), fn(row) if fn else row) for n, row in enumerate(r.rows(t), 1))
    yield from with_progress(rows, t.name, total, progress)


def _copy_rows(
    t: Table,
    r: PgSession,
    rules: Sequence[sanitize.ColumnRule],
    transformer: sanitize.Transformer,
    progress: Progress | None,
    total: int,
) -> Iterator[bytes]:
    """COPY text rows of `t`, with the fields of changed columns rewritten."""
    by_col = {c.column: c for c in rules}
    changed = [
        (i, by_col[c])
        for i, c in enumerate(t.column_names)
        if c in by_col and by_col[c].rule != "keep"
    ]
    rows: Iterator[bytes] = r.copy_rows(t)
    if changed:
        loaders = r.text_loaders(t)
        fields = [(i, loaders[i], transformer.function(rule)) for i, rule in changed]
        rows = map(pg_text.row_function(len(t.columns), fields), rows)
    yield from with_progress(rows, t.name, total, progress)


def _sample(r: Any, t: Table) -> list[tuple[Any, ...]]:
    """The first rows of `t` in primary-key order (bounded)."""
    rows = r.rows(t)
    try:
        return list(itertools.islice(rows, sanitize.SAMPLE_ROWS))
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()


def _document(v: Any) -> Any:
    if isinstance(v, JsonValue):
        return v.value
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _samples(r: Reader, t: Table, cols: Sequence[sanitize.ColumnRule]) -> dict[str, list[Any]]:
    """Sampled values of the columns `cols` of `t` (JSON documents parsed)."""
    rows = _sample(r, t)
    out: dict[str, list[Any]] = {}
    for c in cols:
        i = t.column_names.index(c.column)
        values = [row[i] for row in rows]
        if c.rule == "json" or t.columns[i].kind == "json":
            values = [_document(v) for v in values]
        out[c.column] = values
    return out


def _scan(
    r: Reader,
    w: Any,
    tables: Sequence[Table],
    plan: sanitize.Plan,
    transformer: sanitize.Transformer,
    report: leak_scan.ScanReport,
) -> None:
    """Look in the copy for production values of every ruled column (sampled, bounded)."""
    for t in tables:
        rules = [c for c in plan.columns.get(t.name, []) if c.rule != "keep"]
        if not rules:
            continue
        source = _sample(r, t)
        values = leak_scan.production_values(t.column_names, rules, source)
        fn = transformer.row_function(t.column_names, rules)
        ruled = [t.column_names.index(c.column) for c in rules]
        expected = leak_scan.outputs([out[i] for i in ruled] for out in map(fn, source))
        leak_scan.scan(t.name, t.column_names, values, _sample(w, t), report, expected)
