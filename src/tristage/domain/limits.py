"""Resource limits of a sandboxed process: parsing sizes, and what a build or a release gets.

Pure: the runtime turns a `Limits` into cgroup settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

# a build installs dependencies and compiles: it gets at least this much
BUILD_MEMORY = 2 << 30
BUILD_PIDS = 1024


def parse_size(text: str) -> int:
    """'512M', '1G', '1.5GiB', '1048576' -> bytes (binary units); ValueError otherwise."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size: use a number with K, M or G, e.g. '512M'")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value < 16 << 20:
        raise ValueError(f"{text!r} is below the 16M a process needs to start")
    return int(value)


def format_size(n: int) -> str:
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.0f}M"
    return str(n)


@dataclass(frozen=True)
class Limits:
    """What one sandboxed process group may use; None is no limit."""

    memory: int | None = None  # bytes
    cpus: float | None = None  # cores
    pids: int | None = None

    @classmethod
    def from_settings(cls, memory: str | None, cpus: float | None, pids: int | None) -> Limits:
        return cls(parse_size(memory) if memory else None, cpus, pids)

    def for_build(self) -> Limits:
        """A build gets the release's limits raised to what installing dependencies needs."""
        return Limits(
            memory=max(self.memory or 0, BUILD_MEMORY),
            cpus=None,
            pids=max(self.pids or 0, BUILD_PIDS),
        )

    def describe(self) -> str:
        parts = []
        if self.memory:
            parts.append(f"memory {format_size(self.memory)}")
        if self.cpus:
            parts.append(f"{self.cpus:g} CPU")
        if self.pids:
            parts.append(f"{self.pids} processes")
        return ", ".join(parts) or "no limits"
