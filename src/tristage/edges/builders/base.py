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

from ...domain.redaction import Redactor
from ...errors import TristageError


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
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")
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
            self._release()

    def close(self) -> None:
        with self._lock:
            self._release()
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
                self.log.output(raw.decode(errors="replace"))
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
