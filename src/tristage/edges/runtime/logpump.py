"""`python -I -m tristage.edges.runtime.logpump`: run a release, log its output redacted.

The pump is the session leader of a release, started by the runtime with its
instructions as JSON on stdin (the command, the log file, the cgroup to put the
app in, the secret values to redact): secrets travel through that pipe, never
through the environment or the command line, and the pump needs neither the
platform's state store nor its master key. It starts the app as its child with
stdout/stderr on a pipe, copies that output line by line into the log (redacted),
and exits with the app's exit code after writing how it ended (an exit code, a
signal, or the kernel's out-of-memory killer).

It never takes the release down: a full disk or a log file it cannot open drops
lines (and says how many once it can write again) but keeps reading, so the app
is never blocked on a pipe nor left running without its pump.
"""

from __future__ import annotations

import codecs
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from tristage.paths import private_mkdirs

HOLD_SECONDS = 0.2  # a tail held back (it could start a secret) is written after this


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def log_max_bytes() -> int:
    """How large a release's log grows before it is rotated (TRISTAGE_LOG_MAX_BYTES)."""
    return _env_int("TRISTAGE_LOG_MAX_BYTES", 16 * 1024 * 1024)


def _redactor(values: list[str]) -> Any:
    from tristage.domain.redaction import build_redactor

    return build_redactor(values).stream()


class LogFile:
    """Appends lines to the log, private (0600); survives ENOSPC and a deleted directory.

    Past `max_bytes` the log is rotated: `LOG.1` becomes `LOG.2` ... up to `keep` files,
    the log becomes `LOG.1` and a new one starts. Several pumps (the processes of one
    release) may append to one log: each notices another's rotation and reopens."""

    def __init__(
        self, path: Path, prefix: str = "", max_bytes: int | None = None, keep: int = 3
    ) -> None:
        self.path = path
        self.prefix = prefix  # which process of the release wrote the line
        self.dropped = 0
        self.max_bytes = max_bytes if max_bytes is not None else log_max_bytes()
        self.keep = keep
        self._fh: IO[str] | None = None
        self._written = 0
        self._open()  # the log exists from the start, even for a quiet app

    def _rotate_if_due(self) -> None:
        """(every 64 lines) Rotate a log past its size; reopen one another pump rotated."""
        self._written += 1
        if self._written % 64 or self._fh is None:
            return
        try:
            ours = os.fstat(self._fh.fileno())
            try:
                current = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                current = None
            if current is not None and current.st_ino == ours.st_ino:
                if ours.st_size < self.max_bytes:
                    return
                for n in range(self.keep - 1, 0, -1):
                    older = self.path.with_name(f"{self.path.name}.{n}")
                    if older.exists():
                        older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
                self.path.replace(self.path.with_name(f"{self.path.name}.1"))
            self._fh.close()
        except OSError:
            pass
        self._fh = None
        self._open()

    def _open(self) -> IO[str] | None:
        if self._fh is None:
            try:
                private_mkdirs(self.path.parent)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
                             0o600)  # fmt: skip
                self._fh = os.fdopen(fd, "a", encoding="utf-8")
            except OSError:
                return None
        return self._fh

    def write(self, line: str) -> None:
        """One whole line, time-stamped."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        fh = self._open()
        if fh is None:
            self.dropped += 1
            return
        try:
            if self.dropped:
                fh.write(f"{stamp} tristage: {self.dropped} lines dropped (the log was not"
                         " writable: disk full?)\n")  # fmt: skip
                self.dropped = 0
            fh.write(f"{stamp} {self.prefix}{line}\n")
            fh.flush()
            self._rotate_if_due()
        except OSError:
            self.dropped += 1
            self._fh = None
            try:
                fh.close()
            except OSError:
                pass


class Lines:
    """Turns redacted text (cut anywhere) into whole time-stamped log lines; lines that
    contain one of `drop` (the access log of the platform's health probes) are left out."""

    def __init__(self, log: LogFile, drop: tuple[str, ...] = ()) -> None:
        self.log = log
        self.partial = ""
        self.drop = drop

    def _write(self, line: str) -> None:
        if not any(d in line for d in self.drop):
            self.log.write(line)

    def add(self, text: str) -> None:
        text = self.partial + text
        *whole, self.partial = text.split("\n")
        for line in whole:
            self._write(line.rstrip("\r"))

    def end(self) -> None:
        if self.partial:
            self._write(self.partial)
            self.partial = ""


def pump(fd: int, redact: Any, lines: Lines) -> None:
    """Copy the app's output from `fd` to the log, redacted, until EOF."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        ready, _, _ = select.select([fd], [], [], HOLD_SECONDS)
        if not ready:
            if redact.held:
                lines.add(redact.release())
                lines.end()
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        lines.add(redact.feed(decoder.decode(chunk)))
    lines.add(redact.feed(decoder.decode(b"", final=True)))
    lines.add(redact.flush())
    lines.end()


def _preexec(cgroup: dict[str, Any] | None) -> Callable[[], None]:
    def run() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if cgroup is not None:
            for d in cgroup["paths"].values():
                with open(os.path.join(d, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))

    return run


def _oom_kills(cgroup: dict[str, Any] | None) -> int:
    if cgroup is None:
        return 0
    from tristage.edges.runtime.cgroups import Cgroup

    return Cgroup.from_json(cgroup).oom_kills()


def ending(code: int, oom: bool, limit: str) -> str:
    if oom:
        return f"tristage: the process was killed: out of memory (limit {limit})"
    if code < 0:
        return f"tristage: the process was killed by signal {-code}"
    return f"tristage: the process exited with code {code}"


def main() -> int:
    # SIGTERM reaches the app from the runtime; the pump drains its output to EOF.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    spec = json.loads(sys.stdin.read())
    log = LogFile(Path(spec["log"]), spec.get("prefix") or "", spec.get("log_max_bytes"))
    cgroup = spec.get("cgroup")
    redact = _redactor(spec.get("redact") or [])
    try:
        app = subprocess.Popen(
            spec["argv"],
            cwd=spec["cwd"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_preexec(cgroup),
        )
    except OSError as exc:
        log.write(f"tristage: could not start the process: {exc.strerror or exc}")
        return 127
    assert app.stdout is not None
    pump(app.stdout.fileno(), redact, Lines(log, tuple(spec.get("drop") or ())))
    code = app.wait()
    log.write(ending(code, _oom_kills(cgroup) > 0, spec.get("memory_limit") or "?"))
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    raise SystemExit(main())
