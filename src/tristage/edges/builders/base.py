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
from ...domain.redaction import Redactor
from ...errors import TristageError
from ...paths import private_mkdirs
from ..runtime import Mount, ProcessSpec, Runtime


class BuildFailed(TristageError):
    pass


class BuildLog:
    """Appends redacted lines to a file that `tristage logs --build --follow` tails.

    A build step's output (`output`) goes through a redacting stream, so a secret it
    prints across two lines or two writes is masked too; a tail the stream holds back
    (it could be the start of a secret) is written before the next `line`, or after
    `HOLD_SECONDS` at the latest.
    """

    HOLD_SECONDS = 0.2

    def __init__(self, path: Path, redact: Callable[[str], str]) -> None:
        self.path = path
        self.redact = redact
        self._stream = redact.stream() if isinstance(redact, Redactor) else None
        private_mkdirs(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        self._fh = os.fdopen(fd, "a", encoding="utf-8")
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def line(self, text: str) -> None:
        """One line of the platform's own (redacted on its own)."""
        with self._lock:
            self._release()
            self._fh.write(self.redact(text.rstrip("\n")) + "\n")
            self._fh.flush()

    def output(self, text: str) -> None:
        """One line of a build step's output, indented."""
        line = "  " + text.rstrip("\n") + "\n"
        with self._lock:
            if self._stream is None:
                self._fh.write(self.redact(line))
            else:
                self._fh.write(self._stream.feed(line))
                if self._stream.held and self._timer is None:
                    self._timer = threading.Timer(self.HOLD_SECONDS, self._release_later)
                    self._timer.daemon = True
                    self._timer.start()
            self._fh.flush()

    def _release(self) -> None:
        """(under the lock) Write what the stream holds back."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._stream is not None and self._stream.held and not self._fh.closed:
            held = self._stream.flush()
            self._fh.write(held if held.endswith("\n") else held + "\n")
            self._fh.flush()

    def _release_later(self) -> None:
        with self._lock:
            self._timer = None
            if self._stream is not None and self._stream.held and not self._fh.closed:
                held = self._stream.release()  # a pause: a long held secret start is masked
                self._fh.write(held if held.endswith("\n") else held + "\n")
                self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._release()
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
    scope: str = ""  # whose processes these are (see `Runtime.reap`)
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

    @property
    def canceled(self) -> bool:
        return self._canceled.is_set()

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
            scope=self.scope,
        )
        status = self.runtime.run(spec, self.log.output, self.timeout, self._canceled.is_set)
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
    runtime: str | None = None  # the language runtimes used: "python 3.12.1 + node 20.11.0"
