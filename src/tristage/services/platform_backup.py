"""A backup of the platform's own state: the state store (projects and their sealed
keys, variables and secrets, tokens, deployments, aliases, webhooks, the audit log).

The state store is copied with SQLite's backup API through the store's own connection
(a consistent copy while the platform runs; the file is never opened a second time by
this process), then encrypted under the platform master key in chunks of AES-256-GCM
bound to their index and to the last-chunk flag (a truncated, reordered or altered file
fails to decrypt). The master key is **not** in the backup: secrets in the state store
are sealed by it, so keep it apart (a password manager, a sealed envelope); without it
neither the backup nor the secrets in it can be read, and with it alone nothing can be
restored. Restoring writes the copy back through the same connection, inside SQLite's
backup API (all or nothing), after checking it decrypts whole and passes SQLite's
integrity check.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..edges.homelock import AlreadyRunning, HomeLock
from ..edges.secrets import SecretBoxError
from ..edges.store.sqlite import SqliteStore
from ..errors import StoreError, TristageError, UsageError
from ..paths import private_dirs, private_open

if TYPE_CHECKING:
    from ..api import Tristage

MAGIC = b"TSPLATFORM1\n"
CHUNK = 1 << 20


class PlatformBackupError(TristageError):
    pass


@dataclass(frozen=True)
class PlatformBackup:
    path: Path
    bytes: int
    sha256: str  # of the encrypted file

    def as_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "bytes": self.bytes, "sha256": self.sha256}


def _context(index: int, last: bool) -> bytes:
    return b"platform-backup|%d|%d" % (index, last)


class PlatformBackupService:
    def __init__(self, api: Tristage) -> None:
        self.api = api

    def _store(self) -> SqliteStore:
        store = self.api.store
        if not isinstance(store, SqliteStore):
            raise UsageError("the platform's state store is not SQLite: nothing to copy")
        return store

    def backup(self, out: Path) -> PlatformBackup:
        if out.exists():
            raise UsageError(f"{out} already exists", "choose a new file name")
        tmp = private_dirs(self.api.home, "tmp") / f"platform-{secrets.token_hex(6)}.sqlite3"
        final_tmp = out.with_name(f".{out.name}.partial-{secrets.token_hex(4)}")
        try:
            self._store().copy_to(tmp)
            box = self.api.secret_box
            h = hashlib.sha256()
            size = tmp.stat().st_size
            with open(tmp, "rb") as src, private_open(final_tmp, exclusive=True) as dst:
                dst.write(MAGIC)
                h.update(MAGIC)
                index, done = 0, 0
                while True:
                    data = src.read(CHUNK)
                    done += len(data)
                    last = done >= size
                    blob = box.encrypt(data, _context(index, last))
                    frame = struct.pack(">I", len(blob)) + blob
                    dst.write(frame)
                    h.update(frame)
                    index += 1
                    if last:
                        break
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(final_tmp, out)
        finally:
            for p in (tmp, Path(f"{tmp}-journal"), final_tmp):
                p.unlink(missing_ok=True)
        self.api.audit.record("platform.backup", details={"bytes": out.stat().st_size})
        return PlatformBackup(out, out.stat().st_size, h.hexdigest())

    def restore(self, path: Path, yes: bool = False) -> None:
        if not yes:
            raise UsageError(
                "restoring replaces the platform's whole state (projects, variables, "
                "deployments, tokens) with the backup's",
                "stop 'tristage up' first, then pass --yes to confirm",
            )
        # the control plane of this home must not run meanwhile (its state would be
        # replaced under it), nor start before the restore is done
        lock = HomeLock(self.api.home)
        try:
            lock.acquire()
        except AlreadyRunning as exc:
            raise UsageError(
                f"cannot restore the platform's state while its control plane runs: {exc.message}",
                "stop it first ('tristage down', or stop 'tristage up'), then restore",
            ) from None
        try:
            self._restore(path)
        finally:
            lock.release()
        self.api.audit.record("platform.restore", details={"from": path.name})

    def _restore(self, path: Path) -> None:
        tmp = private_dirs(self.api.home, "tmp") / f"platform-{secrets.token_hex(6)}.sqlite3"
        try:
            self._decrypt(path, tmp)
            try:
                self._store().replace_from(tmp)
            except StoreError as exc:
                raise PlatformBackupError(
                    f"{path} is not an intact state store ({exc.message})", "use another backup"
                ) from None
        finally:
            tmp.unlink(missing_ok=True)

    def _decrypt(self, path: Path, out: Path) -> None:
        box = self.api.secret_box
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        with f, private_open(out, exclusive=True) as dst:
            if f.read(len(MAGIC)) != MAGIC:
                raise PlatformBackupError(
                    f"{path} is not a tristage platform backup",
                    "pass a file from 'platform backup'",
                )
            index = 0
            while True:
                head = f.read(4)
                if len(head) < 4:
                    raise PlatformBackupError(f"{path} is truncated", "use another backup")
                (n,) = struct.unpack(">I", head)
                blob = f.read(n)
                try:
                    data, last = box.decrypt(blob, _context(index, False)), False
                except SecretBoxError:
                    try:
                        data, last = box.decrypt(blob, _context(index, True)), True
                    except SecretBoxError:
                        raise PlatformBackupError(
                            f"{path} cannot be decrypted at chunk {index}: another master "
                            "key, or the file was altered",
                            "restore with the master key of the platform that made it "
                            "(TRISTAGE_MASTER_KEY or master.key)",
                        ) from None
                dst.write(data)
                index += 1
                if last:
                    if f.read(1):
                        raise PlatformBackupError(f"{path} has data after its end")
                    return
