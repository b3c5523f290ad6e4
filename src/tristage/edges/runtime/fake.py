"""A runtime for tests: no processes, each release an HTTP server thread on its port.

It keeps the protocol's promises (a handle is JSON; stop leaves nothing running;
status tells exited from running; adopt of a gone release is False) so the control
plane's supervision, reconciling and crash handling can be tested in milliseconds.
A test makes a release crash (`crash`), run out of memory (`crash(oom=True)`), lose
its supervising log pump (`orphan`) or answer its health check with an error
(`set_health`).

Its releases live on a `FakeHost`, as local processes live on the machine: another
`FakeRuntime` on the same host (a control plane started after a crash) controls the
handles the first one made. Each release writes its log as a real one does: how it
was started and how it ended, redacted.
"""

from __future__ import annotations

import itertools
import shlex
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ...domain.redaction import build_redactor
from .base import Handle, ProcessSpec, State, Status
from .logpump import LogFile, ending


@dataclass
class FakeProcess:
    spec: ProcessSpec
    server: ThreadingHTTPServer | None
    health: int = 200
    state: State = State.running
    exit_code: int | None = None
    oom: bool = False
    log: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        """A line of the release's output, redacted, into its log."""
        text = build_redactor(self.spec.redact)(line)
        self.log.append(text)
        if self.spec.log_path is not None:
            LogFile(self.spec.log_path, self.spec.log_prefix).write(text)


@dataclass
class FakeHost:
    """Where fake releases run: shared by every `FakeRuntime` made on it."""

    procs: dict[str, FakeProcess] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeRuntime:
    name = "fake"
    sandboxed = True

    def __init__(self, serve: bool = True, host: FakeHost | None = None) -> None:
        self.serve = serve
        self.host = host or FakeHost()
        self.procs = self.host.procs
        self.started: list[ProcessSpec] = []
        self.ran: list[ProcessSpec] = []
        self._lock = self.host.lock
        self.run_result: Callable[[ProcessSpec], int] = lambda spec: 0

    def _server(self, proc: FakeProcess) -> ThreadingHTTPServer | None:
        port = int(proc.spec.env.get("PORT", "0") or 0)
        if not self.serve or not port:
            return None

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = f"fake {proc.spec.name}".encode()
                self.send_response(proc.health)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
        return server

    def start(self, spec: ProcessSpec) -> Handle:
        with self._lock:
            key = f"fake-{next(self.host.ids)}"
        proc = FakeProcess(spec, None)
        proc.server = self._server(proc)
        command = spec.command if isinstance(spec.command, str) else shlex.join(spec.command)
        proc.say(f"fake: starting {command}")
        with self._lock:
            self.procs[key] = proc
            self.started.append(spec)
        return {"runtime": self.name, "id": key}

    def _get(self, handle: Handle) -> FakeProcess | None:
        return self.procs.get(str(handle.get("id")))

    def status(self, handle: Handle) -> Status:
        proc = self._get(handle)
        if proc is None:
            return Status(State.exited)
        return Status(proc.state, proc.exit_code, proc.oom)

    def _halt(self, proc: FakeProcess, code: int, oom: bool = False) -> None:
        if proc.server is not None:
            proc.server.shutdown()
            proc.server.server_close()
            proc.server = None
        if proc.state is not State.exited:
            proc.state, proc.exit_code, proc.oom = State.exited, code, oom
            proc.say(ending(code, oom, "?"))

    def stop(self, handle: Handle, grace: float = 5.0) -> Status:
        proc = self._get(handle)
        if proc is None:
            return Status(State.exited)
        self._halt(proc, -15)
        return self.status(handle)

    def adopt(self, handle: Handle) -> bool:
        proc = self._get(handle)
        if proc is None:
            return False
        if proc.state is State.orphaned:
            self.stop(handle)  # never left running twice
        return proc.state is State.running

    def run(
        self,
        spec: ProcessSpec,
        on_output: Callable[[str], None],
        timeout: float,
        cancel: Callable[[], bool] = lambda: False,
    ) -> Status:
        self.ran.append(spec)
        on_output(f"fake: {spec.argv()[-1]}")
        return Status(State.exited, self.run_result(spec))

    def reap(self, scope: str, known: Sequence[Handle]) -> int:
        keep = {str(h.get("id")) for h in known}
        reaped = 0
        for key, proc in list(self.procs.items()):
            if proc.spec.scope == scope and key not in keep and proc.state is not State.exited:
                self._halt(proc, -9)
                reaped += 1
        return reaped

    # -- what a test does to a release ------------------------------------------------
    def crash(self, handle: Handle, code: int = 1, oom: bool = False) -> None:
        proc = self._get(handle)
        assert proc is not None
        self._halt(proc, -9 if oom else code, oom)

    def orphan(self, handle: Handle) -> None:
        """The release's supervisor died; the app still serves."""
        proc = self._get(handle)
        assert proc is not None
        if proc.state is State.running:
            proc.state = State.orphaned

    def set_health(self, handle: Handle, status: int) -> None:
        proc = self._get(handle)
        assert proc is not None
        proc.health = status

    def running(self) -> list[ProcessSpec]:
        """What runs (orphans included: they still serve)."""
        return [p.spec for p in self.procs.values() if p.state is not State.exited]
