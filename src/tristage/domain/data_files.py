"""The files of an environment's data directory in backups, restores and clones: pure
decisions (what is left out, which archive entries are acceptable, which files a clone
from production copies, the manifest entry of the archive).

A backup holds the data directory's files as one tar archive (`files/data.tar`) beside
the tables, with the entry `extra["files"]` of the manifest: the archive's size and
sha256, and the number and total size of the files in it. The data store's own files
(the SQLite file and its -wal/-shm/-journal) are backed up by the store and left out,
and so is anything whose first path segment starts with `.tristage`.

`[sanitize.files] copy = ["public/**"]` names the files a clone from production copies:
glob patterns over paths relative to the data directory, `*` and `?` within one path
segment, `[abc]` a character class, `**` any number of whole segments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

ARCHIVE_MEMBER = "files/data.tar"
MANIFEST_KEY = "files"
OWN_PREFIX = ".tristage"  # first path segments tristage keeps for itself
STORE_SUFFIXES = ("", "-wal", "-shm", "-journal")


class UnsafeEntry(ValueError):
    """An archive entry or a data directory path tristage will not copy."""


class GlobError(ValueError):
    """A `[sanitize.files]` pattern that is not one."""


@dataclass(frozen=True)
class FilesEntry:
    """The manifest entry of a backup's files archive."""

    path: str
    sha256: str
    bytes: int  # of the archive
    files: int
    file_bytes: int  # the files' own sizes, summed

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> FilesEntry:
        if not isinstance(data, Mapping):
            raise ValueError("the manifest's files entry is not an object")
        try:
            entry = cls(
                str(data["path"]),
                str(data["sha256"]),
                int(data["bytes"]),
                int(data["files"]),
                int(data["file_bytes"]),
            )
        except (KeyError, TypeError, ValueError):
            raise ValueError("the manifest's files entry is malformed") from None
        if entry.path != ARCHIVE_MEMBER or min(entry.bytes, entry.files, entry.file_bytes) < 0:
            raise ValueError("the manifest's files entry is malformed")
        if not re.fullmatch(r"[0-9a-f]{64}", entry.sha256):
            raise ValueError("the manifest's files entry has no sha256")
        return entry


def store_names(sqlite_file: str | None) -> frozenset[str]:
    """The paths (relative to the data directory) of the store's own files, left out of
    the files archive: `sqlite_file` (None: the store is not a file there) and its
    -wal, -shm and -journal."""
    if not sqlite_file:
        return frozenset()
    return frozenset(sqlite_file + s for s in STORE_SUFFIXES)


def excluded(rel: str, store: frozenset[str]) -> bool:
    """Whether the path `rel` (relative, `/`-separated) stays out of backups, restores
    and clones: a file of the store, or something of tristage's own."""
    return rel in store or rel.split("/", 1)[0].startswith(OWN_PREFIX)


def check_name(name: str) -> str:
    """`name` if it is a relative path inside the directory (no `..`, no absolute path,
    no empty or `.` segment, no NUL); raises UnsafeEntry otherwise."""
    raw = name[:-1] if name.endswith("/") else name
    if not raw or raw.startswith("/") or "\x00" in raw:
        raise UnsafeEntry(f"{name!r} is not a relative path")
    if any(p in ("", ".", "..") for p in raw.split("/")):
        raise UnsafeEntry(f"{name!r} leaves the data directory or is not a plain path")
    return raw


ENTRY_KINDS = {"file", "dir"}
KIND_NAMES = {
    "symlink": "a symbolic link",
    "hardlink": "a hard link",
    "fifo": "a named pipe",
    "socket": "a socket",
    "device": "a device file",
}


def refusal(name: str, kind: str, where: str) -> str:
    """Why an entry of kind `kind` (not a file or a directory) is refused."""
    what = KIND_NAMES.get(kind, f"a {kind}")
    return (
        f"{where}: {name!r} is {what}; only regular files and directories are backed up, "
        "restored or cloned"
    )


# -- [sanitize.files] ---------------------------------------------------------------


def _segment(seg: str, pattern: str) -> str:
    if "**" in seg:
        raise GlobError(f"{pattern!r}: '**' must be a whole path segment (as in 'public/**')")
    out: list[str] = []
    i = 0
    while i < len(seg):
        c = seg[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = seg.find("]", i + 2 if seg[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end < 0:
                raise GlobError(f"{pattern!r}: '[' without its closing ']'")
            body = seg[i + 1 : end]
            neg = body.startswith("!")
            body = body[1:] if neg else body
            escaped = body.replace("\\", "\\\\").replace("^", "\\^").replace("[", "\\[")
            out.append(f"[{'^' if neg else ''}{escaped}]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regular expression of one pattern (matched against a whole relative path);
    raises GlobError with what is wrong and how to write it."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise GlobError("an empty pattern matches no file; name a path such as 'public/**'")
    if pattern.startswith("/"):
        raise GlobError(
            f"{pattern!r}: patterns are relative to the data directory; drop the leading '/'"
        )
    if "\\" in pattern or "\x00" in pattern:
        raise GlobError(f"{pattern!r}: backslashes and NUL are not part of a pattern")
    segs = pattern.rstrip("/").split("/")
    if any(s in ("", ".", "..") for s in segs):
        raise GlobError(f"{pattern!r}: empty, '.' or '..' segments are not allowed")
    collapsed: list[str] = []
    for s in segs:
        if not (s == "**" and collapsed and collapsed[-1] == "**"):
            collapsed.append(s)
    regex = ""
    last = len(collapsed) - 1
    for i, s in enumerate(collapsed):
        if s == "**":
            if i == 0:
                regex += ".*" if i == last else "(?:.*/)?"
            else:
                regex += "(?:/.*)?"
            continue
        leading_star = i == 1 and collapsed[0] == "**"
        regex += ("" if i == 0 or leading_star else "/") + _segment(s, pattern)
    return re.compile(regex, re.DOTALL)


def check_patterns(patterns: Sequence[str]) -> list[str]:
    """The patterns as given, each checked (GlobError on the first bad one)."""
    for p in patterns:
        compile_glob(p)
    return list(patterns)


def copies_everything(pattern: str) -> bool:
    """Whether a pattern matches any path at all (`**`, `*` with `**`, …)."""
    rx = compile_glob(pattern)
    probes = ("a", "a/b", ".x", "a/.b/c.d")
    return all(rx.fullmatch(p) for p in probes)


@dataclass(frozen=True)
class CopyPlan:
    """Which files of the source a clone copies, and how many it leaves out."""

    copied: tuple[str, ...]
    left_out: int


def plan_copy(paths: Iterable[str], patterns: Sequence[str] | None) -> CopyPlan:
    """The files (relative paths) matched by one of `patterns`; None copies every file
    (a clone from an environment that is not production)."""
    if patterns is None:
        every = tuple(paths)
        return CopyPlan(every, 0)
    rules = [compile_glob(p) for p in patterns]
    copied: list[str] = []
    left = 0
    for p in paths:
        if any(r.fullmatch(p) for r in rules):
            copied.append(p)
        else:
            left += 1
    return CopyPlan(tuple(copied), left)
