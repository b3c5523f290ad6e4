"""What every builder shares: a redacted, followable build log and step runner."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import TristageError


class BuildFailed(TristageError):
    pass


class BuildLog:
    """Appends redacted lines to a file that `tristage logs --build --follow` tails."""

    def __init__(self, path: Path, redact: Callable[[str], str]) -> None:
        self.path = path
        self.redact = redact
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            self._fh.write(self.redact(text.rstrip("\n")) + "\n")
            self._fh.flush()

    def close(self) -> None:
        self._fh.close()


@dataclass
class BuildContext:
    """One build: the artifact directory, its environment, its log, its caches."""

    artifact: Path
    env: dict[str, str]
    log: BuildLog
    cache: Path
    timeout: float = 900.0
    _procs: set[subprocess.Popen[bytes]] = field(default_factory=set)
    _canceled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self._canceled.set()
        for proc in list(self._procs):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def step(
        self,
        title: str,
        argv: Sequence[str],
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        shell: bool = False,
    ) -> None:
        """Run one command, streaming its output into the log; raise BuildFailed on error."""
        if self._canceled.is_set():
            raise BuildFailed("build canceled")
        self.log.line(f"> {title}")
        started = time.monotonic()
        proc = subprocess.Popen(
            argv if not shell else argv[0],
            cwd=cwd or self.artifact,
            env=dict(env or self.env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            shell=shell,
            start_new_session=True,
        )
        self._procs.add(proc)
        timer = threading.Timer(self.timeout, self.cancel)
        timer.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                self.log.line("  " + raw.decode(errors="replace"))
            rc = proc.wait()
        finally:
            timer.cancel()
            self._procs.discard(proc)
        if self._canceled.is_set():
            raise BuildFailed(f"{title}: canceled")
        if rc != 0:
            raise BuildFailed(f"{title} failed with exit code {rc}", "see the build log above")
        self.log.line(f"  done in {time.monotonic() - started:.2f}s")


@dataclass(frozen=True)
class BuildResult:
    kind: str  # python | node | static
    web: str | None  # the web command found by the builder (Procfile / package.json start)
    path_prefix: tuple[str, ...]  # directories to put first on PATH at runtime (venv bin)
