"""The files of an environment's data directory in backups, restores, drills and clones.

Small hooks of the backup and clone services call in here: `archive` adds the files to
a backup being written (a tar member encrypted and checked like the tables), `stage`
unpacks a backup's files beside the data directory before a restore changes anything
and `swap` puts them in place after the store is restored, `drill_check` reads the
archive through, `plan_clone`/`apply_clone` copy the files a `[sanitize.files]` rule
names (every file from an environment that is not production).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..domain import data_files as plan
from ..domain.data_files import ARCHIVE_MEMBER, MANIFEST_KEY, FilesEntry
from ..domain.snapshot import FileEntry
from ..edges import data_files as disk
from ..edges.data_files import DataFilesError, Stage
from ..edges.snapshot_io import SnapshotError, Source, ZipSink
from ..paths import private_dirs
from .data_records import BackupDamaged

if TYPE_CHECKING:
    from ..api import Tristage
    from .data_stores import DataStores


@dataclass
class Staged:
    """A backup's files unpacked beside the data directory, waiting for the swap."""

    stage: Stage
    store: frozenset[str]
    files: int
    bytes: int
    closer: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    swapped: bool = False

    def swap(self) -> None:
        disk.swap_in(self.stage, self.store)
        self.swapped = True

    def close(self) -> None:
        self.closer.close()


@dataclass(frozen=True)
class ClonePlan:
    source: Path
    target: Path
    store: frozenset[str]
    copied: tuple[str, ...]
    left_out: int
    target_files: int


class DataFiles:
    """What a data directory holds besides the store, for the data services."""

    def __init__(self, api: Tristage, stores: DataStores) -> None:
        self.api = api
        self.stores = stores

    def store_files(self, project: str, owner: str) -> frozenset[str]:
        """The store's own files in the data directory (relative paths), left out."""
        if self.stores.config(project).env(owner).database.engine == "postgres":
            return frozenset()
        root = self.stores.data_dir(project, owner)
        path = self.stores.sqlite_path(project, owner)
        if root not in path.parents:
            return frozenset()
        return plan.store_names(path.relative_to(root).as_posix())

    def recovered(self, project: str, owner: str) -> Path:
        """The data directory, a swap a killed process left finished or undone first."""
        root = self.stores.data_dir(project, owner)
        if disk.has_stage(root):
            store = self.store_files(project, owner)
            if disk.recover(root, store):
                self.api.audit.record("db.files.recovered", project=project, environment=owner)
        return root

    def root(self, project: str, owner: str) -> tuple[Path, frozenset[str]]:
        """The data directory (recovered) and the paths left out of it."""
        return self.recovered(project, owner), self.store_files(project, owner)

    # -- backups -------------------------------------------------------------------
    def archive(self, project: str, owner: str, sink: ZipSink) -> dict[str, Any]:
        """Write the files into the backup; returns the manifest entry."""
        root, store = self.root(project, owner)
        items = disk.scan(root, store)
        scratch = private_dirs(self.api.home, "tmp")
        with sink.member(ARCHIVE_MEMBER, compress=False) as out:
            done = disk.write_archive(root, items, out, scratch)
        entry = FilesEntry(ARCHIVE_MEMBER, done.sha256, done.bytes, done.files, done.file_bytes)
        return entry.to_json()

    @staticmethod
    def entry(src: Source) -> FilesEntry | None:
        """The files entry of a backup (None for one without files); damaged: raises."""
        raw = src.manifest.extra.get(MANIFEST_KEY)
        if raw is None:
            return None
        try:
            return FilesEntry.from_json(raw)
        except ValueError as exc:
            raise BackupDamaged(f"{src.label}: {exc}", "restore another backup") from None

    def _read(
        self, src: Source, entry: FilesEntry, into: Path | None, store: frozenset[str]
    ) -> tuple[int, int]:
        """Read the archive through (unpacking it into `into`, if given); a problem
        raises DataFilesError naming the member."""
        member = FileEntry(entry.path, 0, entry.sha256, entry.bytes)
        label = entry.path
        try:
            files, size = disk.read_archive(src.checked_chunks(member), into, label, store)
        except SnapshotError as exc:
            raise DataFilesError(exc.message.removeprefix(f"{src.label}:")) from None
        if (files, size) != (entry.files, entry.file_bytes):
            raise DataFilesError(
                f"{entry.path} holds {files} file(s) of {size} bytes, the manifest says "
                f"{entry.files} of {entry.file_bytes}"
            )
        return files, size

    def problems(self, src: Source, project: str, owner: str) -> list[str]:
        """What is wrong with a backup's files archive ([] = intact or none)."""
        try:
            entry = self.entry(src)
            if entry is not None:
                self._read(src, entry, None, self.store_files(project, owner))
        except (BackupDamaged, DataFilesError) as exc:
            return [exc.message]
        return []

    def stage(self, project: str, owner: str, src: Source, backup_id: str) -> Staged | None:
        """Unpack a backup's files (checked) beside the data directory; None for a
        backup without files (the directory is then left as it is)."""
        entry = self.entry(src)
        if entry is None:
            return None
        root, store = self.root(project, owner)
        closer = contextlib.ExitStack()
        try:
            stage = closer.enter_context(disk.staging(root))
            files, size = self._read(src, entry, stage.new, store)
        except DataFilesError as exc:
            closer.close()
            raise BackupDamaged(
                f"backup {backup_id} failed verification: {exc.message}",
                "nothing was restored; restore another backup",
            ) from None
        except BaseException:
            closer.close()
            raise
        return Staged(stage, store, files, size, closer)

    # -- clones --------------------------------------------------------------------
    def plan_clone(self, project: str, source: str, target: str, sanitized: bool) -> ClonePlan:
        """Which files a clone copies: from production those `[sanitize.files] copy`
        names (none without the rule), else all of them. Refuses a source holding a
        link or a special file before anything is copied."""
        src_root, src_store = self.root(project, source)
        dst_root, dst_store = self.root(project, target)
        items = [i.rel for i in disk.scan(src_root, src_store) if not i.is_dir]
        rule = self.stores.config(project).sanitize_files
        patterns = (rule.copy_ if rule else []) if sanitized else None
        chosen = plan.plan_copy(items, patterns)
        there = sum(1 for i in disk.scan(dst_root, dst_store) if not i.is_dir)
        return ClonePlan(src_root, dst_root, dst_store, chosen.copied, chosen.left_out, there)

    def apply_clone(self, p: ClonePlan) -> int:
        """Copy the planned files beside the target's directory and swap them in (the
        target's other files go); returns the number of files copied."""
        with disk.staging(p.target) as stage:
            files, _ = disk.copy_files(p.source, list(p.copied), stage.new)
            disk.swap_in(stage, p.store)
        return files

    def drill_check(
        self, src: Source, project: str, owner: str
    ) -> tuple[int, int, str | None] | None:
        """(files in the manifest, files read, problem) of a backup's files archive,
        read through and checked without unpacking; None for a backup without one."""
        try:
            entry = self.entry(src)
        except BackupDamaged as exc:
            return 0, -1, exc.message
        if entry is None:
            return None
        try:
            files, _ = self._read(src, entry, None, self.store_files(project, owner))
        except DataFilesError as exc:
            return entry.files, -1, exc.message
        return entry.files, files, None
