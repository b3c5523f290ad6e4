"""Snapshot files: write and read directories, ZIPs (optionally encrypted) and Convex ZIPs.

A tristage snapshot holds ``manifest.json`` and ``tables/<table>.jsonl``. In an
encrypted backup each table file is a stream of AES-GCM chunks bound to the backup,
the table, the chunk index and whether it is the last chunk (so a truncated or
reordered stream fails). The manifest (schema, counts, checksums; no row values) is
written last, so a snapshot without it is incomplete.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import struct
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from json.encoder import encode_basestring as _encode_basestring
from pathlib import Path
from typing import IO, Any, Protocol

from ..domain.snapshot import (
    MANIFEST_NAME,
    Column,
    FileEntry,
    JsonValue,
    Manifest,
    SnapshotFormatError,
    Table,
    compact_json,
    decode_value,
    encode_value,
    infer_kind,
)
from ..errors import TristageError
from ..paths import make_private, private_dirs, private_mkdirs, private_open
from .datastores.base import Reader, SourcedRow

ENC_MAGIC = b"TSENC1\n"
_NESTED = frozenset({dict, list})  # tagged values ({"$ts": …}) and JSON documents
_SCAN = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # the C scanner
CHUNK = 1 << 20
MAX_BLOB = CHUNK + 4096  # one encrypted chunk: CHUNK plain bytes and the cipher's overhead
MAX_MANIFEST = 64 << 20  # a manifest larger than this is not read
MAX_LINE = 256 << 20  # a snapshot line (one row) longer than this is not read
FLUSH_ROWS = 1000

Progress = Callable[[str, int, int | None], None]  # table, rows done, rows total


class SnapshotError(TristageError):
    pass


class Box(Protocol):
    def encrypt(self, plaintext: bytes, context: bytes = b"") -> bytes: ...

    def decrypt(self, blob: bytes, context: bytes = b"") -> bytes: ...


# ---------------------------------------------------------------------------
# Encrypted member streams


class _EncryptingWriter(io.RawIOBase):
    def __init__(self, raw: IO[bytes], box: Box, context: bytes) -> None:
        self.raw, self.box, self.context = raw, box, context
        self.buf = bytearray()
        self.index = 0
        raw.write(ENC_MAGIC)

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.buf += b
        while len(self.buf) > CHUNK:
            self._emit(bytes(self.buf[:CHUNK]), final=False)
            del self.buf[:CHUNK]
        return len(b)

    def _emit(self, chunk: bytes, final: bool) -> None:
        ctx = self.context + f"|{self.index}|{int(final)}".encode()
        blob = self.box.encrypt(chunk, ctx)
        self.raw.write(struct.pack(">I", len(blob)) + blob)
        self.index += 1

    def close(self) -> None:
        if not self.closed:
            self._emit(bytes(self.buf), final=True)
            self.buf.clear()
        super().close()


def _decrypting_chunks(raw: IO[bytes], box: Box, context: bytes) -> Iterator[bytes]:
    if raw.read(len(ENC_MAGIC)) != ENC_MAGIC:
        raise SnapshotFormatError("not an encrypted tristage stream")

    def read_blob() -> bytes | None:
        head = raw.read(4)
        if not head:
            return None
        if len(head) < 4:
            raise SnapshotFormatError("truncated encrypted stream")
        (n,) = struct.unpack(">I", head)
        if n > MAX_BLOB:
            raise SnapshotFormatError(f"encrypted block of {n} bytes (at most {MAX_BLOB})")
        blob = raw.read(n)
        if len(blob) != n:
            raise SnapshotFormatError("truncated encrypted stream")
        return blob

    index = 0
    blob = read_blob()
    if blob is None:
        raise SnapshotFormatError("empty encrypted stream")
    while blob is not None:
        nxt = read_blob()
        final = nxt is None
        yield box.decrypt(blob, context + f"|{index}|{int(final)}".encode())
        index += 1
        blob = nxt


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    rest = b""
    for chunk in chunks:
        if not chunk:
            continue
        data = rest + chunk
        parts = data.split(b"\n")
        rest = _line_start(parts.pop())
        for p in parts:
            yield p + b"\n"
    if rest:
        yield rest


class LineTooLong(SnapshotFormatError):
    pass


def _line_start(part: bytes) -> bytes:
    """`part`, the start of a line not yet ended, unless it is already too long to hold."""
    if len(part) > MAX_LINE:
        raise LineTooLong(
            f"a line longer than {MAX_LINE >> 20} MB (one row per line; is it a snapshot?)"
        )
    return part


def _blocks(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Chunks cut at line ends (the last one may lack its newline)."""
    rest = b""
    for chunk in chunks:
        if not chunk:
            continue
        cut = chunk.rfind(b"\n")
        if cut < 0:
            rest = _line_start(rest + chunk)
            continue
        yield rest + chunk[: cut + 1]
        rest = _line_start(chunk[cut + 1 :])
    if rest:
        yield rest


def _read_chunks(f: IO[bytes]) -> Iterator[bytes]:
    while True:
        b = f.read(CHUNK)
        if not b:
            return
        yield b


# ---------------------------------------------------------------------------
# Writing


def table_file(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or "table"
    candidate, i = base, 1
    while candidate.lower() in taken:
        i += 1
        candidate = f"{base}-{i}"
    taken.add(candidate.lower())
    return f"tables/{candidate}.jsonl"


class Sink(Protocol):
    def member(self, path: str) -> AbstractContextManager[IO[bytes]]: ...

    def finish(self, manifest: Manifest) -> None: ...


class DirSink:
    """A snapshot directory: directories 0700, files 0600, whatever the umask."""

    def __init__(self, root: Path) -> None:
        self.root = root
        private_mkdirs(root.parent)
        root.mkdir(mode=0o700)
        make_private(root)

    @contextmanager
    def member(self, path: str) -> Iterator[IO[bytes]]:
        target = self.root / path
        private_dirs(self.root, *Path(path).parent.parts)
        with private_open(target) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())

    def finish(self, manifest: Manifest) -> None:
        _write_synced(self.root / MANIFEST_NAME, manifest.to_json().encode())


class ZipSink:
    def __init__(
        self, fileobj: IO[bytes], box: Box | None = None, context: bytes = b"", level: int = 6
    ) -> None:
        self.zip = zipfile.ZipFile(
            fileobj, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=level
        )
        self.box, self.context = box, context

    @contextmanager
    def member(self, path: str, compress: bool = True) -> Iterator[IO[bytes]]:
        """A member to write; without `compress` it is stored as it is (for bytes
        compressed already, such as a pg_dump archive)."""
        info = zipfile.ZipInfo(path, time.localtime()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        info.external_attr = 0o600 << 16
        with self.zip.open(info, "w", force_zip64=True) as raw:
            if self.box is None:
                yield raw
            else:
                enc = _EncryptingWriter(raw, self.box, self.context + b"|" + path.encode())
                yield enc  # type: ignore[misc]
                enc.close()

    def finish(self, manifest: Manifest) -> None:
        self.zip.writestr(MANIFEST_NAME, manifest.to_json())
        self.zip.close()

    def abort(self) -> None:
        """Give up an unfinished ZIP (its file is being discarded): what is left to
        write may fail, as on a full disk, and is not retried when the object goes."""
        try:
            self.zip.close()
        except (OSError, ValueError, RuntimeError):
            pass
        self.zip.fp = None


def _write_synced(path: Path, data: bytes) -> None:
    with private_open(path) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def export_tables(
    reader: Reader,
    tables: Sequence[Table],
    sink: Sink,
    progress: Progress | None = None,
    transform: Callable[[Table], Callable[[Sequence[Any]], Sequence[Any]] | None] | None = None,
) -> dict[str, FileEntry]:
    """Stream each table into the sink as JSONL; returns the file entries."""
    files: dict[str, FileEntry] = {}
    taken: set[str] = set()
    for table in tables:
        path = table_file(table.name, taken)
        total = reader.count(table.name) if progress else None
        fn = transform(table) if transform else None
        h = hashlib.sha256()
        n = size = 0
        if progress:
            progress(table.name, 0, total)
        server = getattr(reader, "jsonl", None) if fn is None else None
        blocks: Iterator[bytes] | None = server(table) if server is not None else None
        if blocks is None:
            blocks = _jsonl_blocks(reader.rows(table), table.column_names, fn)
        with sink.member(path) as out:
            for data in blocks:
                h.update(data)
                out.write(data)
                size += len(data)
                n += data.count(b"\n")
                if progress:
                    progress(table.name, n, total)
        if progress:
            progress(table.name, n, total)
        files[table.name] = FileEntry(path=path, rows=n, sha256=h.hexdigest(), bytes=size)
    return files


def line_encoder(names: Sequence[str]) -> Callable[[Sequence[Any]], str]:
    """A function from one row to its canonical JSONL line (what `dumps_row` gives for
    the row as an object), with the keys encoded once."""
    prefixes = [("{" if i == 0 else ",") + _encode_basestring(k) + ":" for i, k in enumerate(names)]
    encode_str = _encode_basestring

    def line(vals: Sequence[Any]) -> str:
        parts = []
        for pre, v in zip(prefixes, vals, strict=True):
            t = type(v)
            if v is None:
                parts.append(pre + "null")
            elif t is str:
                parts.append(pre + encode_str(v))
            elif t is int:
                parts.append(pre + int.__repr__(v))
            elif t is float and v - v == 0:  # finite (nan and ±inf are tagged)
                parts.append(pre + float.__repr__(v))
            else:
                parts.append(pre + compact_json(encode_value(v)))
        return "".join(parts) + "}" if parts else "{}"

    return line


def _jsonl_blocks(
    rows: Iterator[Sequence[Any]],
    names: Sequence[str],
    fn: Callable[[Sequence[Any]], Sequence[Any]] | None,
) -> Iterator[bytes]:
    line = line_encoder(names)
    buf: list[str] = []
    for row in rows:
        buf.append(line(fn(row) if fn else row))
        if len(buf) >= FLUSH_ROWS:
            buf.append("")
            yield "\n".join(buf).encode("utf-8")
            buf.clear()
    if buf:
        buf.append("")
        yield "\n".join(buf).encode("utf-8")


# ---------------------------------------------------------------------------
# Reading


def _safe_member(path: str) -> str:
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
        raise SnapshotFormatError(f"unsafe path {path!r} in the manifest")
    return path


class Source:
    """A snapshot to read: its manifest and the lines of each table file."""

    def __init__(
        self,
        label: str,
        manifest: Manifest,
        opener: Callable[[str], IO[bytes]],
        box: Box | None = None,
        context: bytes = b"",
        closer: Callable[[], None] | None = None,
    ) -> None:
        self.label = label
        self.manifest = manifest
        self._open = opener
        self._box, self._context = box, context
        self._closer = closer

    def close(self) -> None:
        if self._closer:
            self._closer()

    def where(self, table: str) -> str:
        return self.manifest.files[table].path

    def chunks(self, table: str, exact: bool = False) -> Iterator[bytes]:
        """The plain bytes of a table file, in chunks. With `exact`, reading stops with
        SnapshotError past the size the manifest lists (a verified read of a backup; an
        export may have been edited by hand)."""
        yield from self.entry_chunks(self.manifest.files[table], exact)

    @property
    def dump_entry(self) -> FileEntry | None:
        """The engine's own full dump in the snapshot (a PostgreSQL backup's pg_dump
        archive), if it holds one."""
        raw = self.manifest.extra.get("dump")
        if not isinstance(raw, dict):
            return None
        try:
            return FileEntry.from_json(
                "dump", {k: raw[k] for k in ("path", "rows", "sha256", "bytes")}
            )
        except (KeyError, TypeError, SnapshotFormatError):
            raise SnapshotError(f"{self.label}: the manifest's dump entry is malformed") from None

    def checked_chunks(self, entry: FileEntry) -> Iterator[bytes]:
        """The plain bytes of a member; after the last one its size and sha256 are
        compared with `entry`, a mismatch raising SnapshotError."""
        h = hashlib.sha256()
        size = 0
        for chunk in self.entry_chunks(entry, exact=True):
            h.update(chunk)
            size += len(chunk)
            yield chunk
        if size != entry.bytes or h.hexdigest() != entry.sha256:
            raise SnapshotError(
                f"{self.label}:{entry.path}: size or sha256 differs from the manifest",
                "the snapshot is damaged; nothing was changed",
            )

    def entry_chunks(self, entry: FileEntry, exact: bool = False) -> Iterator[bytes]:
        path = _safe_member(entry.path)
        with self._open(path) as f:
            if self.manifest.encrypted:
                if self._box is None:
                    raise SnapshotError(
                        f"{self.label} is encrypted", "it needs this platform's master key"
                    )
                plain = _decrypting_chunks(f, self._box, self._context + b"|" + path.encode())
            else:
                plain = _read_chunks(f)
            size = 0
            for chunk in plain:
                size += len(chunk)
                if exact and size > entry.bytes:
                    raise SnapshotError(
                        f"{self.label}:{path}: more than the {entry.bytes} bytes the manifest "
                        "lists",
                        "the snapshot is damaged or was altered; nothing was changed",
                    )
                yield chunk

    def blocks(self, table: str, check: bool = False) -> Iterator[bytes]:
        """The table file in blocks of whole lines. With `check`, the row count and
        sha256 are compared with the manifest after the last block, and a mismatch
        raises SnapshotError (so a load can verify while it reads, and roll back)."""
        try:
            yield from self._blocks(table, check)
        except LineTooLong as exc:
            raise SnapshotError(
                f"{self.label}:{self.where(table)}: {exc}", "nothing was changed"
            ) from None

    def _blocks(self, table: str, check: bool) -> Iterator[bytes]:
        if not check:
            yield from _blocks(self.chunks(table))
            return
        entry = self.manifest.files[table]
        h = hashlib.sha256()
        n = 0
        last = b"\n"
        for block in _blocks(self.chunks(table, exact=True)):
            h.update(block)
            n += block.count(b"\n")
            last = block[-1:]
            yield block
        if last != b"\n":
            n += 1
        if n != entry.rows:
            raise SnapshotError(
                f"{entry.path}: {n} rows, the manifest says {entry.rows}",
                "the snapshot is damaged; nothing was changed",
            )
        if h.hexdigest() != entry.sha256:
            raise SnapshotError(
                f"{entry.path}: sha256 differs from the manifest",
                "the snapshot is damaged; nothing was changed",
            )

    def verify(self, tables: Sequence[str] | None = None) -> list[str]:
        """Problems found by re-reading every file against the manifest ([] = intact)."""
        problems: list[str] = []
        for name in tables if tables is not None else list(self.manifest.files):
            entry = self.manifest.files[name]
            try:
                for _block in self.blocks(name, check=True):
                    pass
            except SnapshotError as exc:
                problems.append(exc.message)
            except (OSError, zipfile.BadZipFile, SnapshotFormatError, TristageError) as exc:
                problems.append(f"{entry.path}: unreadable ({_why(exc)})")
            except (EOFError, ValueError) as exc:
                problems.append(f"{entry.path}: unreadable ({_why(exc)})")
        dump = self.dump_entry if tables is None else None
        if dump is not None:
            try:
                for _chunk in self.checked_chunks(dump):
                    pass
            except SnapshotError as exc:
                problems.append(exc.message)
            except (OSError, zipfile.BadZipFile, SnapshotFormatError, TristageError) as exc:
                problems.append(f"{dump.path}: unreadable ({_why(exc)})")
            except (EOFError, ValueError) as exc:
                problems.append(f"{dump.path}: unreadable ({_why(exc)})")
        return problems

    def ref(self, table: str, lineno: int) -> str:
        """Where a line is, as `snapshot:file:line`."""
        return f"{self.label}:{self.where(table)}:{lineno}"

    def records(
        self, table: str, target: Table, columns: Sequence[str] | None = None, check: bool = False
    ) -> Iterator[tuple[int, list[Any]]]:
        """(line number, JSON values in `columns` order) of each row, values not yet
        decoded; a line that is not an object of known columns raises SnapshotError."""
        cols = list(columns or target.column_names)
        index = {c: i for i, c in enumerate(cols)}
        width = len(cols)
        scan = _SCAN
        lineno = 0
        for block in self.blocks(table, check):
            try:
                lines = block.decode("utf-8").split("\n")
            except UnicodeDecodeError:
                lines = [
                    self._decoded(table, lineno + i + 1, b)
                    for i, b in enumerate(block.split(b"\n"))
                ]
            if block.endswith(b"\n"):
                lines.pop()
            for s in lines:
                lineno += 1
                try:
                    obj, end = scan(s, 0)
                    if end != len(s) and not s[end:].isspace():
                        raise ValueError("extra data")
                except (StopIteration, ValueError):
                    if not s or s.isspace():
                        continue
                    obj = self._parse(table, lineno, s)
                if obj.__class__ is not dict:
                    raise SnapshotError(
                        f"{self.ref(table, lineno)}: expected a JSON object, got "
                        f"{type(obj).__name__}",
                        "nothing was changed; each line is one row as an object",
                    )
                if list(obj) == cols:  # the usual case: every column, in order
                    yield lineno, list(obj.values())
                    continue
                vals: list[Any] = [None] * width
                for k, j in obj.items():
                    i = index.get(k)
                    if i is None:
                        raise SnapshotError(
                            f"{self.ref(table, lineno)}: unknown column {k!r} (table "
                            f"{target.name} has: {', '.join(cols)})",
                            "nothing was changed; add the column to the table or drop it "
                            "from the line",
                        )
                    vals[i] = j
                yield lineno, vals

    def _decoded(self, table: str, lineno: int, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SnapshotError(
                f"{self.ref(table, lineno)}: not valid UTF-8 ({exc.reason} at byte {exc.start})",
                "nothing was changed; fix that line",
            ) from None

    def _parse(self, table: str, lineno: int, s: str) -> Any:
        try:
            return json.loads(s)
        except ValueError as exc:
            raise SnapshotError(
                f"{self.ref(table, lineno)}: not valid JSON ({exc})",
                "nothing was changed; fix that line",
            ) from None

    def rows(
        self,
        table: str,
        target: Table,
        columns: Sequence[str] | None = None,
        check: bool = False,
    ) -> Iterator[SourcedRow]:
        """Decoded rows with their `file:line`; a bad line raises SnapshotError."""
        cols = list(columns or target.column_names)
        wrap_json = self.manifest.engine == "convex"
        json_idx = [i for i, c in enumerate(cols) if (tc := target.column(c)) and tc.kind == "json"]
        for lineno, vals in self.records(table, target, cols, check):
            for i, j in enumerate(vals):
                if j.__class__ not in _NESTED:
                    continue  # null, string, number, boolean: as they are
                try:
                    vals[i] = decode_value(j)
                except SnapshotFormatError as exc:
                    raise SnapshotError(
                        f"{self.ref(table, lineno)}: column {cols[i]!r}: {exc}"
                    ) from None
            if wrap_json:
                for i in json_idx:
                    if vals[i] is not None and not isinstance(vals[i], JsonValue):
                        vals[i] = JsonValue(vals[i])
            yield self.ref(table, lineno), vals


def _why(exc: BaseException) -> str:
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


def open_source(path: Path, box: Box | None = None, context: bytes = b"") -> Source:
    """Open a snapshot directory, a tristage ZIP or a Convex snapshot ZIP."""
    label = path.name
    if path.is_dir():
        mpath = path / MANIFEST_NAME
        if not mpath.is_file():
            raise SnapshotError(
                f"{path} has no {MANIFEST_NAME}",
                "it is not a complete tristage snapshot (an interrupted export?)",
            )
        if mpath.stat().st_size > MAX_MANIFEST:
            raise SnapshotError(
                f"{mpath} is larger than {MAX_MANIFEST >> 20} MB",
                "it is not a manifest written by 'tristage db export'",
            )
        manifest = Manifest.from_json(mpath.read_bytes())
        root = path.resolve()

        def open_file(member: str) -> IO[bytes]:
            p = (root / member).resolve()
            if root not in p.parents:
                raise SnapshotFormatError(f"unsafe path {member!r}")
            return open(p, "rb")

        return Source(label, manifest, open_file, box, context)
    if not path.is_file():
        raise SnapshotError(f"no snapshot at {path}", "pass a snapshot directory or ZIP file")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise SnapshotError(
            f"{path} is not a readable ZIP ({exc})", "it is damaged or truncated"
        ) from None
    try:
        names = set(zf.namelist())
        if MANIFEST_NAME in names:
            if zf.getinfo(MANIFEST_NAME).file_size > MAX_MANIFEST:
                raise SnapshotFormatError(
                    f"its {MANIFEST_NAME} is larger than {MAX_MANIFEST >> 20} MB"
                )
            manifest = Manifest.from_json(zf.read(MANIFEST_NAME))
        elif any(n.endswith("/documents.jsonl") for n in names):
            manifest = _convex_manifest(zf)
        else:
            raise SnapshotError(
                f"{path} holds neither a {MANIFEST_NAME} nor Convex table folders",
                "pass a snapshot made by 'tristage db export' or a Convex snapshot ZIP",
            )
    except SnapshotFormatError as exc:
        zf.close()
        raise SnapshotError(f"{path}: {exc}") from None
    except BaseException:
        zf.close()
        raise

    def open_member(member: str) -> IO[bytes]:
        return zf.open(member)

    return Source(label, manifest, open_member, box, context, zf.close)


_EMPTY_KINDS = {"_id": "text", "_creationTime": "real"}
STORAGE_PREFIX = "_storage/"  # Convex file storage: `_storage/<id>` files beside its table


def convex_storage_files(path: Path) -> list[str]:
    """The stored files (`_storage/<id>`) of a Convex snapshot ZIP, by member name."""
    with zipfile.ZipFile(path) as zf:
        return [
            m
            for m in zf.namelist()
            if m.startswith(STORAGE_PREFIX)
            and m.count("/") == 1
            and not m.endswith(("/", ".jsonl", ".json"))
        ]


def extract_convex_storage(path: Path, members: list[str], into: Path) -> int:
    """Copy stored files of a Convex ZIP into the directory `into` (0600 files in 0700
    directories), streaming; names are checked (no path leaves `into`)."""
    n = 0
    folder = private_mkdirs(into)
    with zipfile.ZipFile(path) as zf:
        for member in members:
            name = member[len(STORAGE_PREFIX) :]
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}", name) or ".." in name:
                raise SnapshotError(f"{path.name}:{member}: not a stored file's name")
            target = folder / name
            tmp = folder / f".partial-{name}"
            with zf.open(member) as src, private_open(tmp) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(tmp, target)
            n += 1
    return n


def _convex_manifest(zf: zipfile.ZipFile) -> Manifest:
    """Read a Convex snapshot ZIP: a folder per table with `documents.jsonl`."""
    tables: list[Table] = []
    files: dict[str, FileEntry] = {}
    components: list[str] = []
    for member in sorted(zf.namelist()):
        parts = member.split("/")
        component = convex_component_table(parts)
        if component is not None:
            components.append(component)
            continue
        if len(parts) != 2 or parts[1] != "documents.jsonl" or parts[0].startswith("_"):
            continue
        name = parts[0]
        order: list[str] = []
        samples: dict[str, list[Any]] = {}
        h = hashlib.sha256()
        n = size = 0
        with zf.open(member) as f:
            for lineno, line in enumerate(_lines(_read_chunks(f)), 1):
                h.update(line)
                size += len(line)
                if not line.strip():
                    continue
                n += 1
                try:
                    doc = json.loads(line)
                except ValueError as exc:
                    raise SnapshotFormatError(
                        f"{member}:{lineno}: not valid JSON ({exc})"
                    ) from None
                if not isinstance(doc, dict):
                    raise SnapshotFormatError(f"{member}:{lineno}: expected a JSON object")
                for k, v in doc.items():
                    if k not in samples:
                        samples[k] = []
                        order.append(k)
                    s = samples[k]
                    if v is not None and len(s) < 64 and type(v) not in {type(x) for x in s}:
                        s.append(v)
        if not samples:  # an empty table: Convex's system fields, so it can be created
            samples = {"_id": [], "_creationTime": []}
            order = ["_id", "_creationTime"]
        head = [k for k in ("_id", "_creationTime") if k in samples]
        cols = tuple(
            Column(
                name=k,
                type="",
                kind=infer_kind(samples[k]) if samples[k] else _EMPTY_KINDS.get(k, "text"),
                nullable=k != "_id",
            )
            for k in head + [k for k in order if k not in head]
        )
        tables.append(Table(name, cols, ("_id",) if "_id" in samples else ()))
        files[name] = FileEntry(path=member, rows=n, sha256=h.hexdigest(), bytes=size)
    extra: dict[str, Any] = {"components": components} if components else {}
    return Manifest(engine="convex", tables=tables, files=files, kind="convex", extra=extra)


def convex_component_table(parts: Sequence[str]) -> str | None:
    """`component/path:table` of a Convex ZIP member that is a table of a component
    (`_components/<name>/[_components/<name>/…]<table>/documents.jsonl`), else None;
    a component's system tables (`_storage`, …) count too (its stored files)."""
    if len(parts) < 4 or parts[-1] != "documents.jsonl" or "_components" not in parts[:-2]:
        return None
    path = [parts[i + 1] for i in range(len(parts) - 3) if parts[i] == "_components"]
    return f"{'/'.join(path)}:{parts[-2]}"


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
