"""The TCP ports a process group listens on, from /proc (Linux): which sockets its
processes hold (`/proc/PID/fd` -> `socket:[INODE]`) and which of those listen
(`/proc/net/tcp`, `/proc/net/tcp6`). Used to tell an app listening on the wrong port
from one that does not listen at all."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

LISTEN = "0A"


def parse_listening(text: str) -> dict[int, tuple[str, int]]:
    """(pure) socket inode -> (address, port) of the LISTEN rows of a /proc/net/tcp* file."""
    out: dict[int, tuple[str, int]] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != LISTEN:
            continue
        address, _, port = fields[1].partition(":")
        with contextlib.suppress(ValueError):
            out[int(fields[9])] = (_address(address), int(port, 16))
    return out


def _address(hexed: str) -> str:
    if len(hexed) == 8:  # IPv4, little-endian
        return ".".join(str(int(hexed[i : i + 2], 16)) for i in (6, 4, 2, 0))
    return "::" if set(hexed) == {"0"} else "[ipv6]"


def descendants(root: int, proc: Path = Path("/proc")) -> set[int]:
    """`root` and every process below it."""
    parents: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(parents.get(pid, []))
    return found


def listening(pids: Iterable[int], proc: Path = Path("/proc")) -> list[tuple[str, int]]:
    """The (address, port) pairs the processes `pids` listen on, sorted."""
    inodes: set[int] = set()
    for pid in pids:
        fd_dir = proc / str(pid) / "fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        for name in names:
            with contextlib.suppress(OSError):
                target = os.readlink(fd_dir / name)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    table: dict[int, tuple[str, int]] = {}
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            table.update(parse_listening((proc / "net" / name).read_text()))
    return sorted({table[i] for i in inodes if i in table})
