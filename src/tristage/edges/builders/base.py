"""What every builder shares: a redacted, followable build log and a sandboxed step runner.

Every step of a build (installing dependencies, the `build` command) is the
deployment's own code: it runs through the `Runtime`, in the sandbox, seeing the
artifact (writable), the directories a step mounts, and nothing of the platform.
Files the platform itself writes into an artifact are written by a step inside
the sandbox too, so a symlink planted by an earlier step cannot redirect them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...domain.limits import Limits
from ...errors import TristageError
from ...paths import private_dir
from ..runtime import Mount, ProcessSpec, Runtime


class BuildFailed(TristageError):
    pass


class BuildLog:
    """Appends redacted lines to a private file that `tristage logs --build --follow` tails."""

    def __init__(self, path: Path, redact: Callable[[str], str]) -> None:
        self.path = path
        self.redact = redact
        private_dir(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        self._fh = os.fdopen(fd, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            self._fh.write(self.redact(text.rstrip("\n")) + "\n")
            self._fh.flush()

    def close(self) -> None:
        self._fh.close()


@dataclass
class BuildContext:
    """One build: the artifact directory, its environment, its log, its caches, its runtime."""

    artifact: Path
    env: dict[str, str]
    log: BuildLog
    cache: Path  # the dependency caches of this environment only
    runtime: Runtime
    name: str = "build"
    limits: Limits = field(default_factory=Limits)
    mounts: tuple[Mount, ...] = ()  # what every step sees besides the artifact
    artifact_writable: bool = True
    timeout: float = 900.0
    _canceled: threading.Event = field(default_factory=threading.Event)

    @property
    def sandboxed(self) -> bool:
        return self.runtime.sandboxed

    def cancel(self) -> None:
        self._canceled.set()

    def step(
        self,
        title: str,
        argv: Sequence[str] | str,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        mounts: Sequence[Mount] = (),
    ) -> None:
        """Run one command in the sandbox, its output into the log; BuildFailed on error.

        A string runs through `/bin/sh -c`."""
        if self._canceled.is_set():
            raise BuildFailed("build canceled")
        self.log.line(f"> {title}")
        started = time.monotonic()
        spec = ProcessSpec(
            name=self.name,
            command=argv if isinstance(argv, str) else tuple(argv),
            cwd=cwd or self.artifact,
            env=dict(env or self.env),
            mounts=(Mount(self.artifact, writable=self.artifact_writable), *self.mounts, *mounts),
            limits=self.limits,
        )
        status = self.runtime.run(
            spec, lambda text: self.log.line("  " + text), self.timeout, self._canceled.is_set
        )
        if self._canceled.is_set():
            raise BuildFailed(f"{title}: canceled")
        if status.oom_killed:
            raise BuildFailed(
                f"{title} was killed: out of memory ({status.detail or 'its limit'})",
                "raise `memory` in tristage.toml, or use less memory while building",
            )
        if status.detail.startswith("timed out"):
            raise BuildFailed(f"{title} {status.detail}", "make the step faster")
        if status.exit_code != 0:
            raise BuildFailed(
                f"{title} failed with exit code {status.exit_code}", "see the build log above"
            )
        self.log.line(f"  done in {time.monotonic() - started:.2f}s")


@dataclass(frozen=True)
class BuildResult:
    kind: str  # python | node | static
    web: str | None  # the web command found by the builder (Procfile / package.json start)
    path_prefix: tuple[str, ...]  # directories to put first on PATH at runtime (venv bin)
    layers: tuple[str, ...] = ()  # read-only directories the release needs (cached deps)
