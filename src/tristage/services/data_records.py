"""What the data services return and raise: backup, export, load, prune, restore, drill
and clone records, and the errors callers catch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

from ..domain import sanitize
from ..domain.snapshot import Manifest
from ..errors import TristageError, UsageError

if TYPE_CHECKING:  # the data stores import psycopg: not for who only needs these records
    from ..edges.datastores import PostgresDataStore, SqliteDataStore

DataStoreT: TypeAlias = "SqliteDataStore | PostgresDataStore"
T = TypeVar("T")
ImportMode = Literal["replace", "append"] | None
BACKUP_KINDS = ("manual", "scheduled", "pre-migration", "safety")


class ConfirmationRequired(UsageError):
    pass


class SanitizeRefused(TristageError):
    def __init__(
        self,
        problems: Sequence[sanitize.Problem],
        hint: str = "add the rules to [sanitize] in tristage.toml; nothing was copied",
    ) -> None:
        lines = "\n".join(f"  {p}" for p in problems)
        what = "import" if "imported" in hint else "clone"
        super().__init__(
            f"{what} refused: {len(problems)} column(s) without a sanitization rule\n{lines}",
            hint,
        )
        self.problems = list(problems)


class SanitizeLeak(TristageError):
    """The check after a clone found production values in the copy; nothing was kept."""

    def __init__(self, found: Sequence[str]) -> None:
        lines = "\n".join(f"  {f}" for f in found)
        super().__init__(
            f"clone refused: production values of ruled columns found in the copy\n{lines}",
            "the copy was rolled back and the target is as it was; a column the rules keep "
            "holds the same personal data (give it a rule too)",
        )
        self.found = list(found)


class BackupDamaged(TristageError):
    pass


class WriteFailed(TristageError):
    """A snapshot or backup could not be written (full disk, lost directory, ...)."""

    def __init__(self, what: str, exc: OSError) -> None:
        super().__init__(
            f"cannot write {what}: {exc.strerror or exc}",
            "nothing was kept and the database's transaction was ended; free space there "
            "(or choose another place) and run again",
        )


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
    files: int | None = None  # files put back in the data directory (None: none backed up)
    undo: str | None = None  # PostgreSQL: the replaced database, kept for `--undo`


@dataclass(frozen=True)
class UndoCopy:
    """A database a PostgreSQL restore replaced, kept so the restore can be undone."""

    database: str
    created_at: float
    note: str

    def as_json(self) -> dict[str, Any]:
        return {"database": self.database, "created_at": self.created_at, "note": self.note}


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
    # the check of the copy for production values (sampled): tables, rows, values, found
    scan: dict[str, Any] | None = None
    forced_keep: dict[str, str] = field(default_factory=dict)  # "t.c" -> reason
    files_copied: int = 0  # files of the data directory copied ([sanitize.files])
    files_left_out: int = 0  # files of the source's data directory not copied

    def as_json(self) -> dict[str, Any]:
        return asdict(self)
