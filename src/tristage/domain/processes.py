"""Process types and replicas (pure): which processes a deployment's release runs.

A Procfile names process types (`web: gunicorn app:app`, `worker: python worker.py`,
`release: python manage.py migrate`). `release` runs once before the release takes
traffic; every other type runs as supervised processes, `web` with the port and the
health check. How many of each (`replicas`) comes from `processes` in tristage.toml,
overridden at run time by `tristage scale`; a deployment that is not its
environment's live one (a warm previous release, a branch's latest) runs only one
web process, so two copies of a worker never run for one environment for long.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import UsageError
from .config import MAX_REPLICAS, PROCESS_TYPE_RE

WEB = "web"
ONE_OFF_TYPES = frozenset({"release"})


@dataclass(frozen=True, order=True)
class ProcessName:
    """`web.1`, `worker.2`: a process type and its replica number (from 1)."""

    type: str
    index: int

    def __str__(self) -> str:
        return f"{self.type}.{self.index}"

    @classmethod
    def parse(cls, text: str) -> ProcessName:
        kind, _, n = text.rpartition(".")
        if not kind or not n.isdigit() or int(n) < 1:
            raise ValueError(f"not a process name: {text!r} (TYPE.N, e.g. web.1)")
        return cls(kind, int(n))

    @property
    def is_web(self) -> bool:
        return self.type == WEB


WEB_1 = ProcessName(WEB, 1)


def process_types(web: str, procfile: Mapping[str, str]) -> dict[str, str]:
    """Each type's command: `web` is the resolved web command; the Procfile's other
    types but `release` (the migration step) follow in file order."""
    out = {WEB: web}
    for kind, command in procfile.items():
        if kind != WEB and kind not in ONE_OFF_TYPES and PROCESS_TYPE_RE.match(kind):
            out[kind] = command
    return out


def replicas(
    types: Mapping[str, str],
    configured: Mapping[str, int] | None,
    scaled: Mapping[str, int],
    live: bool,
) -> dict[str, int]:
    """How many processes of each type run: `scaled` over `configured` over 1. The live
    deployment runs them all; any other runs one web process. Web always runs at least
    one (a release is what its web process serves)."""
    out: dict[str, int] = {}
    for kind in types:
        n = scaled.get(kind, (configured or {}).get(kind, 1))
        if kind == WEB:
            n = max(1, n) if live else 1
        elif not live:
            n = 0
        if n > 0:
            out[kind] = n
    return out


def formation(counts: Mapping[str, int]) -> list[ProcessName]:
    """Every process name of a formation, web first, then types in order, by number."""
    return [ProcessName(kind, i) for kind, n in counts.items() for i in range(1, n + 1)]


def parse_scale(args: list[str]) -> dict[str, int]:
    """`web=3 worker=0` -> {"web": 3, "worker": 0}; UsageError on a bad argument."""
    example = "e.g. 'tristage scale web=2 worker=1 --env production'"
    if not args:
        raise UsageError("nothing to scale", example)
    out: dict[str, int] = {}
    for arg in args:
        kind, sep, n = arg.partition("=")
        if not sep or not PROCESS_TYPE_RE.match(kind) or not n.isdigit():
            raise UsageError(f"{arg!r} is not TYPE=COUNT", example)
        count = int(n)
        if count > MAX_REPLICAS:
            raise UsageError(f"{arg}: at most {MAX_REPLICAS} replicas", "use a smaller count")
        if kind in ONE_OFF_TYPES:
            raise UsageError(f"{kind!r} runs once per deployment", "scale web or a worker type")
        if kind == WEB and count < 1:
            raise UsageError("web needs at least 1 replica", "scale it to 1 or more")
        out[kind] = count
    return out
