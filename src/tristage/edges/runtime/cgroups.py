"""Control groups: limits for a process group, its out-of-memory count, and killing all of it.

Both hierarchies are supported: cgroup v1 (one directory per controller: memory,
cpu, pids, freezer) and v2 (one unified directory). A release's cgroup is created
under the cgroup the control plane runs in (so limits set above it still apply),
in a `tristage` child. Nothing inside a sandbox can leave its cgroup: the cgroup
file system is not mounted there.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...domain.limits import Limits

ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "cpu", "pids", "freezer")
PERIOD_US = 100_000


class CgroupError(OSError):
    pass


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise CgroupError(exc.errno, f"cannot write {value!r} to {path}: {exc.strerror}") from None


def _v1_mounts(mounts: str) -> dict[str, Path]:
    """controller -> mount point, from /proc/self/mounts."""
    out: dict[str, Path] = {}
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[2] != "cgroup":
            continue
        for opt in parts[3].split(","):
            if opt in V1_CONTROLLERS:
                out[opt] = Path(parts[1])
    return out


def _own_paths(text: str) -> dict[str, str]:
    """controller ('' for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for ctrl in parts[1].split(",") if parts[1] else [""]:
            out[ctrl] = parts[2]
    return out


@dataclass(frozen=True)
class Hierarchy:
    """Where this machine lets us create cgroups, or why it does not."""

    version: int  # 1 or 2; 0 when unusable
    bases: dict[str, Path]  # v1: controller -> base dir; v2: {"": base dir}
    problem: str = ""

    @property
    def usable(self) -> bool:
        return self.version in (1, 2)


def detect() -> Hierarchy:
    try:
        mounts = Path("/proc/self/mounts").read_text()
        own = _own_paths(Path("/proc/self/cgroup").read_text())
    except OSError as exc:
        return Hierarchy(0, {}, f"cannot read /proc: {exc.strerror}")
    v1 = _v1_mounts(mounts)
    if all(c in v1 for c in ("memory", "cpu", "pids")):
        bases = {c: v1[c] / own.get(c, "/").lstrip("/") / "tristage" for c in v1}
        for ctrl, base in bases.items():
            try:
                base.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                return Hierarchy(0, {}, f"cgroup v1 {ctrl} is not writable ({exc.strerror})")
        return Hierarchy(1, bases)
    controllers = ROOT / "cgroup.controllers"
    if controllers.is_file():
        return _detect_v2(own.get("", "/"), controllers.read_text().split())
    return Hierarchy(0, {}, "no cgroup hierarchy with the memory, cpu and pids controllers")


def _detect_v2(own: str, available: list[str]) -> Hierarchy:
    missing = [c for c in ("memory", "cpu", "pids") if c not in available]
    if missing:
        return Hierarchy(0, {}, f"cgroup v2 lacks the {', '.join(missing)} controller(s)")
    # a cgroup with processes cannot hand controllers to children ("no internal
    # processes"): use our own cgroup's parent when ours is busy, else the root
    for parent in (ROOT / own.lstrip("/"), ROOT / own.lstrip("/") / "..", ROOT):
        base = (parent / "tristage").resolve()
        try:
            base.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                _write(parent.resolve() / "cgroup.subtree_control", "+memory +cpu +pids")
            _write(base / "cgroup.subtree_control", "+memory +cpu +pids")
            return Hierarchy(2, {"": base})
        except OSError:
            continue
    return Hierarchy(0, {}, "cgroup v2 is not writable (run as root, or delegate a subtree)")


_hierarchy: Hierarchy | None = None


def hierarchy() -> Hierarchy:
    global _hierarchy
    if _hierarchy is None:
        _hierarchy = detect()
    return _hierarchy


@dataclass(frozen=True)
class Cgroup:
    """One process group's cgroup: a directory per v1 controller, or one v2 directory."""

    version: int
    paths: dict[str, Path]  # v1: controller -> directory; v2: {"": directory}

    @property
    def dirs(self) -> list[Path]:
        return list(self.paths.values())

    # -- creation ---------------------------------------------------------------
    @classmethod
    def create(
        cls, name: str, limits: Limits, where: Hierarchy | None = None, scope: str = ""
    ) -> Cgroup:
        """A new group `name-XXXXXX`, under the `scope` directory when one is given (the
        groups of one platform home, so that home's control plane can find them all)."""
        h = where or hierarchy()
        if not h.usable:
            raise CgroupError(errno.ENOTSUP, h.problem)
        leaf = f"{name}-{secrets.token_hex(3)}"
        cg = cls(h.version, {ctrl: base / scope / leaf for ctrl, base in h.bases.items()})
        try:
            for d in cg.dirs:
                d.mkdir(parents=True)  # its scope directory too
            cg._limit(limits)
        except OSError:
            cg.remove()
            raise
        return cg

    def _dir(self, controller: str) -> Path | None:
        if self.version == 2:
            return self.paths[""]
        return self.paths.get(controller)

    def _limit(self, limits: Limits) -> None:
        mem, cpu, pids = self._dir("memory"), self._dir("cpu"), self._dir("pids")
        assert mem and cpu and pids
        if self.version == 1:
            if limits.memory:
                _write(mem / "memory.limit_in_bytes", str(limits.memory))
                with contextlib.suppress(OSError):  # no swap accounting: nothing to cap
                    _write(mem / "memory.memsw.limit_in_bytes", str(limits.memory))
            if limits.cpus:
                _write(cpu / "cpu.cfs_period_us", str(PERIOD_US))
                _write(cpu / "cpu.cfs_quota_us", str(int(limits.cpus * PERIOD_US)))
            if limits.pids:
                _write(pids / "pids.max", str(limits.pids))
            return
        if limits.memory:
            _write(mem / "memory.max", str(limits.memory))
            with contextlib.suppress(OSError):
                _write(mem / "memory.swap.max", "0")
        if limits.cpus:
            _write(cpu / "cpu.max", f"{int(limits.cpus * PERIOD_US)} {PERIOD_US}")
        if limits.pids:
            _write(pids / "pids.max", str(limits.pids))

    # -- persistence (a release's handle) -------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "paths": {k: str(v) for k, v in self.paths.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cgroup:
        return cls(int(data["version"]), {k: Path(v) for k, v in data["paths"].items()})

    # -- use --------------------------------------------------------------------------
    def add(self, pid: int) -> None:
        """Move `pid` into every controller's directory (before it execs the app)."""
        for d in self.dirs:
            _write(d / "cgroup.procs", str(pid))

    def pids(self) -> set[int]:
        """The processes in the group now (empty once it is gone)."""
        d = self._dir("pids") or self.dirs[0]
        try:
            text = (d / "cgroup.procs").read_text()
        except FileNotFoundError:
            return set()
        return {int(x) for x in text.split()}

    def oom_kills(self) -> int:
        mem = self._dir("memory")
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            text = (mem / name).read_text() if mem else ""
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def memory_limit(self) -> int | None:
        mem = self._dir("memory")
        name = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
        try:
            raw = (mem / name).read_text().strip() if mem else "max"
        except OSError:
            return None
        return None if raw == "max" or int(raw) >= 1 << 60 else int(raw)

    def signal(self, sig: int, skip: Iterable[int] = ()) -> int:
        """Send `sig` to every process in the group but `skip`; how many got it."""
        sent = 0
        excluded = set(skip)
        for pid in self.pids() - excluded:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                sent += 1
        return sent

    def kill(self, timeout: float = 5.0) -> bool:
        """SIGKILL every process of the group, new forks included; True once it is empty."""
        if self.version == 2:
            with contextlib.suppress(OSError):
                _write(self.dirs[0] / "cgroup.kill", "1")
        freezer = self._dir("freezer") if self.version == 1 else None
        deadline = time.monotonic() + timeout
        while True:
            if freezer is not None:  # frozen, nothing can fork between the read and the kill
                with contextlib.suppress(OSError):
                    _write(freezer / "freezer.state", "FROZEN")
            self.signal(signal.SIGKILL)
            if freezer is not None:
                with contextlib.suppress(OSError):
                    _write(freezer / "freezer.state", "THAWED")
            if not self.pids():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)

    @classmethod
    def in_scope(cls, scope: str, where: Hierarchy | None = None) -> list[Cgroup]:
        """Every group created under `scope`."""
        h = where or hierarchy()
        if not h.usable or not scope:
            return []
        leaves: set[str] = set()
        for base in h.bases.values():
            try:
                leaves.update(p.name for p in (base / scope).iterdir() if p.is_dir())
            except FileNotFoundError:
                continue
        return [cls(h.version, {c: b / scope / leaf for c, b in h.bases.items()})
                for leaf in sorted(leaves)]  # fmt: skip

    def remove(self) -> None:
        """Delete the (empty) group's directories; what is already gone is fine."""
        for d in self.dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    if d.parent not in hierarchy().bases.values():
                        with contextlib.suppress(OSError):  # the last of its scope
                            d.parent.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        break
                    time.sleep(0.01)  # the last process is still being reaped
