"""The `Runtime` protocol's conformance suite: one set of tests run against every
implementation (`sandbox`, `unsandboxed`, `fake`), real processes on loopback ports.

A `Harness` gives each test what it needs in the runtime's own terms: a release that
serves HTTP on `$PORT` (for the local runtimes a small stdlib app driven over HTTP:
`/exit/N`, `/oom`, `/setsid`; for the fake its test hooks), and a check that nothing
is left after a stop (for local runtimes by scanning /proc for a marker variable every
process of the release inherits, independently of the runtime's own bookkeeping).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tristage.domain.limits import Limits
from tristage.domain.variables import MASK
from tristage.edges.runtime import (
    Handle,
    Mount,
    ProcessSpec,
    Runtime,
    State,
    Status,
    free_port,
    open_runtime,
    proc_start,
)
from tristage.edges.runtime import bwrap as bwrap_argv
from tristage.edges.runtime.cgroups import Hierarchy, _own_paths, _v1_mounts, hierarchy
from tristage.edges.runtime.fake import FakeRuntime
from tristage.edges.runtime.local import LocalRuntime

pytestmark = pytest.mark.timeout(60)

PYTHON = str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}")
MARK = "CONFORMANCE_MARK"
SECRET = "s3cr3t-Conformance-Token-9f2b"

# The app every local release runs: it says how it was started (its arguments, a
# secret among them), serves $PORT, and does what a test asks over HTTP.
APP = r"""
import json, os, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

print("starting with", " ".join(sys.argv[1:]), flush=True)
if "--ignore-term" in sys.argv:
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

def later(fn):
    threading.Timer(0.05, fn).start()

def oom():
    hog = []
    while True:
        hog.append(b"x" * (4 << 20))

def setsid_child():
    r, w = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:  # a grandchild in a session of its own, reparented
            os.write(w, str(os.getpid()).encode())
            time.sleep(600)
        os._exit(0)
    os.wait()
    return os.read(r, 32).decode()

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = "ok"
        if url.path.startswith("/exit/"):
            code = int(url.path.rsplit("/", 1)[1])
            later(lambda: os._exit(code))
        elif url.path == "/oom":
            threading.Thread(target=oom, daemon=True).start()
        elif url.path == "/setsid":
            body = setsid_child()
        elif url.path == "/say":
            print(q["text"], flush=True)
        elif url.path == "/read":
            try:
                body = "read: " + open(q["path"]).read()
            except OSError as exc:
                body = f"error: {type(exc).__name__}"
        elif url.path == "/write":
            try:
                with open(q["path"], "w") as f:
                    f.write("written")
                body = "written"
            except OSError as exc:
                body = f"error: {type(exc).__name__}"
        elif url.path == "/pids":
            pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
            cmds = []
            for p in pids:
                try:
                    cmds.append(open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace"))
                except OSError:
                    pass
            body = json.dumps({"me": os.getpid(), "pids": pids, "cmdlines": cmds})
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
server.daemon_threads = True
print("listening", flush=True)
server.serve_forever()
"""

FORK_BOMB = r"""
import os, sys, time
n = 0
for _ in range(120):  # bounded: even without a limit this ends
    try:
        pid = os.fork()
    except OSError as exc:
        print("fork failed:", os.strerror(exc.errno), flush=True)
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    n += 1
print("forked", n, flush=True)
"""


def _bwrap_missing() -> bool:
    return shutil.which("bwrap") is None


def _cgroups() -> bool:
    return hierarchy().usable


# -- /proc, independently of the runtime ----------------------------------------------
def marked(mark: str) -> list[int]:
    """Every process on the machine whose environment carries `MARK=mark`."""
    needle = f"{MARK}={mark}".encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rfind(")") + 2 :].startswith("Z"):
            continue  # a zombie runs nothing; its parent reaps it
        if needle in env.split(b"\0"):
            out.append(int(entry))
    return out


def session_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2 :].split()[3])


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, f"timed out waiting for {what}"
            return value
        time.sleep(0.02)


# -- the harness ------------------------------------------------------------------------
@dataclass
class Release:
    spec: ProcessSpec
    handle: Handle
    port: int

    def get(self, url_path: str, **params: str) -> str:
        r = httpx.get(f"http://127.0.0.1:{self.port}{url_path}", params=params, timeout=5,
                      trust_env=False)  # fmt: skip
        assert r.status_code == 200, r.text
        return r.text


@dataclass
class Harness:
    kind: str
    runtime: Runtime
    root: Path  # holds the artifact (mounted read-only) and the logs (outside the sandbox)
    mark: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: list[Handle] = field(default_factory=list)

    @property
    def local(self) -> bool:
        return self.kind != "fake"

    @property
    def artifact(self) -> Path:
        return self.root / "artifact"

    def fresh(self) -> Runtime:
        """Another instance, as a control plane started after this one crashed makes."""
        if isinstance(self.runtime, FakeRuntime):
            return FakeRuntime(host=self.runtime.host)
        return open_runtime(self.kind)

    def spec(
        self,
        command: str | tuple[str, ...],
        name: str = "conf",
        limits: Limits | None = None,
        redact: tuple[str, ...] = (),
        mounts: tuple[Mount, ...] = (),
        env: dict[str, str] | None = None,
        log: bool = True,
        scope: str = "",
    ) -> ProcessSpec:
        return ProcessSpec(
            scope=scope,
            name=name,
            command=command,
            cwd=self.artifact,
            env={"PATH": "/usr/bin:/bin", MARK: self.mark, **(env or {})},
            mounts=(Mount(self.artifact), *mounts),
            limits=limits or Limits(),
            log_path=self.root / "logs" / f"{name}.log" if log else None,
            redact=redact,
        )

    def serve(self, *args: str, **kw: Any) -> Release:
        """Start a release serving $PORT and wait until it answers."""
        port = free_port()
        spec = self.spec((PYTHON, "app.py", *args), env={"PORT": str(port)}, **kw)
        handle = self.runtime.start(spec)
        self.started.append(handle)
        rel = Release(spec, handle, port)
        wait_until(lambda: _answers(rel), 15, "the release to answer")
        return rel

    def end(self, rel: Release, code: int) -> None:
        """Make the release's process end with `code`."""
        if isinstance(self.runtime, FakeRuntime):
            self.runtime.crash(rel.handle, code)
        else:
            rel.get(f"/exit/{code}")

    def run_out_of_memory(self, rel: Release) -> None:
        if isinstance(self.runtime, FakeRuntime):
            self.runtime.crash(rel.handle, oom=True)
        else:
            rel.get("/oom")

    def lose_supervisor(self, rel: Release) -> None:
        """What a full disk or a kill did to the release's log pump: it is gone."""
        if isinstance(self.runtime, FakeRuntime):
            self.runtime.orphan(rel.handle)
        else:
            os.kill(int(rel.handle["pid"]), signal.SIGKILL)

    def one_off(self, lines: list[str], code: int) -> tuple[ProcessSpec, list[str]]:
        """A one-off that prints `lines` and exits `code`; and what `run` streams of it."""
        script = "".join(f"print({line!r})\n" for line in lines) + f"raise SystemExit({code})"
        spec = self.spec((PYTHON, "-c", script), log=False)
        if isinstance(self.runtime, FakeRuntime):
            self.runtime.run_result = lambda _spec: code
            return spec, [f"fake: {script}"]
        return spec, lines

    def leftovers(self, rel: Release) -> list[str]:
        """What of the release is still there after a stop (empty when nothing is)."""
        out = []
        if listening(rel.port):
            out.append(f"port {rel.port} still accepts connections")
        if self.local:
            out += [f"process {pid} still runs" for pid in marked(self.mark)]
            cgroup = rel.handle.get("cgroup")
            for d in (cgroup or {}).get("paths", {}).values():
                if Path(d).exists():
                    out.append(f"cgroup {d} still exists")
        return out

    def cleanup(self) -> None:
        for handle in self.started:
            with contextlib.suppress(Exception):
                self.runtime.stop(handle, 0.2)
        if self.local:
            for pid in marked(self.mark):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def _answers(rel: Release) -> bool:
    try:
        return rel.get("/").startswith(("ok", "fake"))
    except (httpx.HTTPError, AssertionError):
        return False


KINDS = [
    pytest.param(
        "sandbox",
        marks=pytest.mark.skipif(
            _bwrap_missing(),
            reason="bubblewrap (bwrap) is not installed: apt-get install bubblewrap",
        ),
    ),
    "unsandboxed",
    "fake",
]


@pytest.fixture(params=KINDS)
def h(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    kind: str = request.param
    runtime = open_runtime(kind)
    harness = Harness(kind, runtime, tmp_path)
    harness.artifact.mkdir()
    (harness.artifact / "app.py").write_text(APP)
    yield harness
    harness.cleanup()


def local_only(h: Harness, why: str = "the fake runs no processes") -> None:
    if not h.local:
        pytest.skip(why)


def cgroups_only(h: Harness) -> None:
    local_only(h, "the fake runs no processes (its out-of-memory is `crash(oom=True)`)")
    if not _cgroups():
        pytest.skip(f"cgroups are not usable here: {hierarchy().problem}")


def wait_exited(runtime: Runtime, handle: Handle, timeout: float = 15.0) -> Status:
    return wait_until(
        lambda: (st := runtime.status(handle)).state is State.exited and st, timeout, "an exit"
    )


# -- the shared suite ------------------------------------------------------------------------
def test_start_serves_and_status_is_running(h: Harness) -> None:
    rel = h.serve()
    assert rel.get("/").startswith(("ok", "fake"))
    st = h.runtime.status(rel.handle)
    assert st.state is State.running and not st.gone
    assert st.exit_code is None and not st.oom_killed


def test_stop_leaves_nothing(h: Harness) -> None:
    rel = h.serve()
    if h.local:
        assert marked(h.mark), "the marker scan must see the running release"
    final = h.runtime.stop(rel.handle, 2.0)
    assert final.state is State.exited
    assert h.runtime.status(rel.handle).state is State.exited
    assert h.leftovers(rel) == []


def test_a_setsid_child_dies_with_stop(h: Harness) -> None:
    local_only(h)
    rel = h.serve()
    rel.get("/setsid")
    procs = wait_until(lambda: len(marked(h.mark)) >= 3 and marked(h.mark), 5, "the child")
    sessions = {session_of(p) for p in procs} - {None}
    assert len(sessions) >= 2, "the child must have left the release's session"
    h.runtime.stop(rel.handle, 1.0)
    assert h.leftovers(rel) == []


def test_reap_stops_what_no_known_handle_names_in_its_scope_only(h: Harness) -> None:
    if h.local:
        cgroups_only(h)
    scope = f"conformance-{os.getpid()}-{h.mark[-6:]}"
    kept, lost = h.serve(scope=scope), h.serve(scope=scope)
    other = h.serve(scope=scope + "-other")
    fresh = open_runtime(h.kind) if h.local else h.runtime  # as after a restart
    assert fresh.reap(scope, [kept.handle]) == 1
    wait_exited(h.runtime, lost.handle)
    assert not listening(lost.port)  # (the marker scan would see the two that still run)
    for d in (lost.handle.get("cgroup") or {}).get("paths", {}).values():
        assert not Path(d).exists()
    assert h.runtime.status(kept.handle).state is State.running
    assert h.runtime.status(other.handle).state is State.running


def test_stop_is_idempotent_and_a_stopped_handle_stays_exited(h: Harness) -> None:
    rel = h.serve()
    h.runtime.stop(rel.handle, 1.0)
    again = h.runtime.stop(rel.handle, 0.1)
    assert again.state is State.exited
    assert h.runtime.status(rel.handle).state is State.exited


def test_run_returns_the_exit_code_and_streams_lines(h: Harness) -> None:
    spec, expected = h.one_off(["first line", "second line"], 3)
    lines: list[str] = []
    st = h.runtime.run(spec, lines.append, timeout=30)
    assert st.state is State.exited
    assert st.exit_code == 3
    assert lines == expected
    ok_spec, _ = h.one_off([], 0)
    assert h.runtime.run(ok_spec, lambda _line: None, timeout=30).exit_code == 0


def test_run_ends_with_its_process_even_if_a_child_holds_its_output(h: Harness) -> None:
    local_only(h)
    spec = h.spec(("/bin/sh", "-c", "sleep 30 & echo done"), log=False)
    lines: list[str] = []
    began = time.monotonic()
    st = h.runtime.run(spec, lines.append, timeout=20)
    took = time.monotonic() - began
    assert took < 5, f"run waited {took:.1f}s for a child the one-off left behind"
    assert st.exit_code == 0 and lines == ["done"]
    assert marked(h.mark) == []


def test_run_honours_timeout(h: Harness) -> None:
    local_only(h, "the fake's one-offs end at once: nothing to time out")
    spec = h.spec(("/bin/sh", "-c", "echo begun; sleep 30"), log=False)
    lines: list[str] = []
    began = time.monotonic()
    st = h.runtime.run(spec, lines.append, timeout=0.5)
    took = time.monotonic() - began
    assert took < 5, f"run took {took:.1f}s with a 0.5s timeout"
    assert st.exit_code != 0
    assert "timed out" in st.detail
    assert lines == ["begun"]
    assert marked(h.mark) == []


def test_run_honours_cancel(h: Harness) -> None:
    local_only(h, "the fake's one-offs end at once: nothing to cancel")
    spec = h.spec(("/bin/sh", "-c", "sleep 30"), log=False)
    asked = threading.Event()
    timer = threading.Timer(0.3, asked.set)
    timer.start()
    began = time.monotonic()
    st = h.runtime.run(spec, lambda _line: None, timeout=60, cancel=asked.is_set)
    assert time.monotonic() - began < 5
    assert st.exit_code != 0 and "cancel" in st.detail
    assert marked(h.mark) == []


def test_adopt_a_running_handle_but_not_a_stopped_one(h: Harness) -> None:
    rel = h.serve()
    assert h.runtime.adopt(rel.handle) is True
    assert h.runtime.status(rel.handle).state is State.running  # adopting changes nothing
    h.runtime.stop(rel.handle, 1.0)
    assert h.runtime.adopt(rel.handle) is False


def test_handles_are_json_and_a_fresh_instance_controls_them(h: Harness) -> None:
    rel = h.serve()
    stored = json.loads(json.dumps(rel.handle))
    assert stored == rel.handle
    after_restart = h.fresh()
    assert after_restart is not h.runtime
    assert after_restart.status(stored).state is State.running
    assert after_restart.adopt(stored) is True
    assert after_restart.stop(stored, 1.0).state is State.exited
    assert after_restart.status(stored).state is State.exited
    assert h.runtime.status(rel.handle).state is State.exited
    assert after_restart.adopt(stored) is False
    assert h.leftovers(rel) == []


def test_adopt_of_a_release_that_lost_its_supervisor_stops_it(h: Harness) -> None:
    rel = h.serve()
    h.lose_supervisor(rel)
    st = wait_until(
        lambda: (s := h.runtime.status(rel.handle)).state is not State.running and s, 5, "a change"
    )
    assert st.state in (State.orphaned, State.exited)
    assert h.fresh().adopt(json.loads(json.dumps(rel.handle))) is False
    assert wait_until(lambda: h.leftovers(rel) == [], 5, "nothing left")


def test_the_log_gets_redacted_output(h: Harness) -> None:
    rel = h.serve("--token", SECRET, redact=(SECRET,))
    if h.local:
        rel.get("/say", text=f"a request carrying {SECRET}")
    h.end(rel, 4)
    wait_exited(h.runtime, rel.handle)
    assert rel.spec.log_path is not None
    log = wait_until(
        lambda: (
            rel.spec.log_path.exists() and "code 4" in (t := rel.spec.log_path.read_text()) and t
        ),
        5,
        "the log's last line",
    )
    assert f"--token {MASK}" in log, log
    assert SECRET not in log, log
    assert oct(rel.spec.log_path.stat().st_mode & 0o777) == oct(0o600)


def test_exit_code_is_reported(h: Harness) -> None:
    rel = h.serve()
    h.end(rel, 3)
    st = wait_exited(h.runtime, rel.handle)
    assert st.exit_code == 3 and not st.oom_killed
    assert st.describe() == "exited with exit code 3"
    assert not listening(rel.port)


def test_out_of_memory_is_reported(h: Harness) -> None:
    if h.local:
        cgroups_only(h)
    rel = h.serve(limits=Limits(memory=64 << 20))
    h.run_out_of_memory(rel)
    st = wait_exited(h.runtime, rel.handle, 30)
    assert st.oom_killed, st
    assert "out of memory" in st.describe()
    if h.local:
        assert "limit 64M" in st.describe(), st
    assert rel.spec.log_path is not None
    log = wait_until(lambda: rel.spec.log_path.exists() and rel.spec.log_path.read_text(), 5)
    assert "out of memory" in log, log
    h.runtime.stop(rel.handle, 0.5)
    assert h.leftovers(rel) == []


def test_stop_kills_what_ignores_sigterm_after_the_grace(h: Harness) -> None:
    local_only(h, "the fake runs no processes to ignore a signal")
    rel = h.serve("--ignore-term")
    began = time.monotonic()
    final = h.runtime.stop(rel.handle, 0.3)
    took = time.monotonic() - began
    assert final.state is State.exited
    assert took < 3, f"stop took {took:.1f}s with a 0.3s grace"
    assert h.leftovers(rel) == []


def test_limits_apply_to_every_process_of_the_release(h: Harness) -> None:
    cgroups_only(h)
    rel = h.serve(limits=Limits(memory=96 << 20, cpus=0.5, pids=64))
    rel.get("/setsid")
    pump = int(rel.handle["pid"])
    procs = wait_until(lambda: len(marked(h.mark)) >= 3 and marked(h.mark), 5, "the child")
    leaves = {Path(d).name for d in rel.handle["cgroup"]["paths"].values()}
    assert len(leaves) == 1, leaves
    leaf = leaves.pop()
    for pid in set(procs) - {pump}:  # the pump is outside: it reports how the app ended
        groups = _own_paths(Path(f"/proc/{pid}/cgroup").read_text())
        for ctrl in ("memory", "pids", "cpu") if hierarchy().version == 1 else ("",):
            assert groups[ctrl].endswith("/" + leaf), (pid, ctrl, groups)
    paths = {k: Path(v) for k, v in rel.handle["cgroup"]["paths"].items()}
    if hierarchy().version == 1:
        assert (paths["memory"] / "memory.limit_in_bytes").read_text().strip() == str(96 << 20)
        assert (paths["pids"] / "pids.max").read_text().strip() == "64"
        assert (paths["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "50000"
    else:
        d = paths[""]
        assert (d / "memory.max").read_text().strip() == str(96 << 20)
        assert (d / "pids.max").read_text().strip() == "64"
        assert (d / "cpu.max").read_text().split()[0] == "50000"


def test_status_out_of_file_descriptors_is_never_an_exit(h: Harness) -> None:
    rel = h.serve()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fds: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 512), hard))
    try:
        try:
            while True:
                fds.append(os.open("/dev/null", os.O_RDONLY))
        except OSError as exc:
            assert exc.errno == errno.EMFILE, exc
        st = h.runtime.status(rel.handle)
        adopted = h.runtime.adopt(rel.handle)
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert st.state in (State.running, State.unknown), st
    if h.local:  # telling needs /proc, which needs a file descriptor
        assert st.state is State.unknown and "Too many open files" in st.detail, st
    assert adopted is True  # unknown is kept, never stopped
    assert h.runtime.status(rel.handle).state is State.running
    assert rel.get("/").startswith(("ok", "fake"))


def test_out_of_memory_of_a_one_off_is_reported(h: Harness) -> None:
    cgroups_only(h)
    hog = "hog = []\nwhile True:\n    hog.append(b'x' * (4 << 20))\n"
    spec = h.spec((PYTHON, "-c", hog), limits=Limits(memory=64 << 20), log=False)
    st = h.runtime.run(spec, lambda _line: None, timeout=30)
    assert st.oom_killed and st.exit_code != 0, st
    assert "out of memory" in st.describe()


def test_a_pids_limit_stops_a_fork_bomb(h: Harness) -> None:
    cgroups_only(h)
    spec = h.spec((PYTHON, "-c", FORK_BOMB), limits=Limits(pids=32), log=False)
    lines: list[str] = []
    st = h.runtime.run(spec, lines.append, timeout=30)
    assert st.exit_code == 0, lines
    assert any(line.startswith("fork failed") for line in lines), lines
    forked = int(next(line for line in lines if line.startswith("forked")).split()[1])
    assert 0 < forked < 32, lines
    assert marked(h.mark) == []  # the sleeping children went with the one-off


# -- the sandbox only -------------------------------------------------------------------------
def sandbox_only(h: Harness) -> None:
    if h.kind != "sandbox":
        pytest.skip("only the sandbox isolates a process")


def test_sandbox_honours_mounts(h: Harness, tmp_path: Path) -> None:
    sandbox_only(h)
    data = tmp_path / "data"
    data.mkdir()
    hidden = tmp_path / "outside.txt"
    hidden.write_text("platform secret")
    rel = h.serve(mounts=(Mount(data, writable=True),))
    assert rel.get("/read", path=str(h.artifact / "app.py")).startswith("read: ")
    assert rel.get("/write", path=str(h.artifact / "app.py")) == "error: OSError"
    assert rel.get("/write", path=str(h.artifact / "new.txt")) == "error: OSError"
    assert (h.artifact / "app.py").read_text() == APP
    assert rel.get("/write", path=str(data / "kept.txt")) == "written"
    assert (data / "kept.txt").read_text() == "written"
    assert rel.get("/read", path=str(hidden)) == "error: FileNotFoundError"
    assert rel.get("/read", path=str(h.root / "logs" / "conf.log")) == "error: FileNotFoundError"
    home = os.environ.get("TRISTAGE_HOME")
    if home:
        assert rel.get("/read", path=str(Path(home) / "master.key")).startswith("error: ")


def test_sandbox_sees_only_its_own_pid_namespace(h: Harness) -> None:
    sandbox_only(h)
    rel = h.serve()
    seen = json.loads(rel.get("/pids"))
    assert seen["me"] < 10, seen
    assert len(seen["pids"]) < 10, seen
    ours = Path("/proc/self/cmdline").read_bytes().decode(errors="replace")
    assert ours not in seen["cmdlines"]  # the test's own process is not there
    assert len(seen["cmdlines"]) == len(seen["pids"]) <= 3, seen["cmdlines"]  # bwrap + the app


# -- pure helpers -------------------------------------------------------------------------------
V1_MOUNTS = """\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,nosuid,nodev,noexec,relatime,pids 0 0
cgroup /sys/fs/cgroup/freezer cgroup rw,nosuid,nodev,noexec,relatime,freezer 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,nosuid,nodev,noexec,relatime,xattr,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime 0 0
"""
V1_SELF = """\
12:pids:/user.slice/user-1000.slice
9:memory:/process_api/8c17b534
4:cpu,cpuacct:/
2:freezer:/
1:name=systemd:/user.slice
0::/user.slice
"""
V2_MOUNTS = """\
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0
"""
V2_SELF = "0::/user.slice/user-1000.slice/session-3.scope\n"


def test_v1_mounts_maps_each_controller_to_its_mount() -> None:
    assert _v1_mounts(V1_MOUNTS) == {
        "cpu": Path("/sys/fs/cgroup/cpu,cpuacct"),
        "memory": Path("/sys/fs/cgroup/memory"),
        "pids": Path("/sys/fs/cgroup/pids"),
        "freezer": Path("/sys/fs/cgroup/freezer"),
    }


def test_v1_mounts_of_a_v2_only_machine_is_empty() -> None:
    assert _v1_mounts(V2_MOUNTS) == {}
    assert _v1_mounts("") == {}


def test_own_paths_reads_v1_and_v2_lines() -> None:
    own = _own_paths(V1_SELF)
    assert own["pids"] == "/user.slice/user-1000.slice"
    assert own["memory"] == "/process_api/8c17b534"
    assert own["cpu"] == own["cpuacct"] == "/"
    assert own["name=systemd"] == "/user.slice"
    assert own[""] == "/user.slice"
    assert _own_paths(V2_SELF) == {"": "/user.slice/user-1000.slice/session-3.scope"}
    assert _own_paths("garbage\n\n") == {}


def test_hierarchy_usable_only_for_v1_or_v2() -> None:
    assert Hierarchy(1, {}).usable and Hierarchy(2, {}).usable
    assert not Hierarchy(0, {}, "no cgroups").usable


def test_bwrap_argv_binds_the_spec_and_isolates() -> None:
    view = bwrap_argv.SystemView(
        top_level=(("bin", "usr/bin"), ("lib", None)),
        etc=("passwd", "ssl"),
        prefixes=(Path("/opt/python"),),
    )
    spec = ProcessSpec(
        name="d1",
        command="python app.py",
        cwd=Path("/srv/artifact"),
        env={},
        mounts=(
            Mount(Path("/srv/artifact")),
            Mount(Path("/srv/data/prod"), Path("/data"), writable=True),
        ),
    )
    args = bwrap_argv.argv("/usr/bin/bwrap", spec, view)
    assert args[0] == "/usr/bin/bwrap"
    for flag in ("--unshare-user", "--unshare-pid", "--unshare-ipc", "--new-session",
                 "--die-with-parent"):  # fmt: skip
        assert flag in args
    assert args[args.index("--cap-drop") + 1] == "ALL"
    assert args[args.index("--uid") + 1] == str(bwrap_argv.SANDBOX_UID) != "0"

    def triples(flag: str) -> list[tuple[str, str]]:
        return [(args[i + 1], args[i + 2]) for i, a in enumerate(args) if a == flag]

    ro, rw = triples("--ro-bind"), triples("--bind")
    assert ("/usr", "/usr") in ro and ("/lib", "/lib") in ro
    assert ("/etc/passwd", "/etc/passwd") in ro and ("/etc/ssl", "/etc/ssl") in ro
    assert ("/opt/python", "/opt/python") in ro
    assert ("/srv/artifact", "/srv/artifact") in ro
    assert rw == [("/srv/data/prod", "/data")]  # the only writable host path
    assert ("usr/bin", "/bin") in triples("--symlink")
    assert args[args.index("--chdir") + 1] == "/srv/artifact"
    assert ("/tmp" in args) and args[args.index("/tmp") - 1] == "--tmpfs"
    # the command comes last, after "--", and runs through the shell when it is a string
    assert args[args.index("--") + 1 :] == ["/bin/sh", "-c", "python app.py"]
    assert not any("tristage" in a for a in args)  # nothing of the platform is bound


def test_bwrap_argv_keeps_an_argv_command_as_is() -> None:
    view = bwrap_argv.SystemView((), (), ())
    spec = ProcessSpec("d2", ("/usr/bin/env", "a b", "--x"), Path("/w"), {})
    args = bwrap_argv.argv("bwrap", spec, view)
    assert args[args.index("--") + 1 :] == ["/usr/bin/env", "a b", "--x"]
    assert "--bind" not in args


def test_sandbox_env_puts_home_on_the_private_tmp() -> None:
    env = bwrap_argv.sandbox_env({"PORT": "1", "HOME": "/root"})
    assert env["HOME"] == "/tmp" and env["TMPDIR"] == "/tmp" and env["PORT"] == "1"


def test_a_local_runtime_is_a_runtime() -> None:
    rt: Runtime = LocalRuntime(sandboxed=False)
    assert rt.name == "unsandboxed" and not rt.sandboxed
    assert open_runtime("sandbox").sandboxed


def test_proc_start_reads_the_start_time_past_a_tricky_command_name() -> None:
    began = time.time()
    rename = "open('/proc/self/comm', 'w').write('a) b (c 1 2'); import time; time.sleep(30)"
    child = subprocess.Popen([PYTHON, "-c", rename])
    try:
        comm = Path(f"/proc/{child.pid}/comm")
        wait_until(lambda: comm.read_text().strip() == "a) b (c 1 2", 5, "the new name")
        ticks = proc_start(child.pid)
        assert ticks is not None and ticks.isdigit(), ticks
        btime = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        started = btime + int(ticks) / os.sysconf("SC_CLK_TCK")
        assert abs(started - began) < 2.5, (started, began)
        assert proc_start(child.pid) == ticks  # stable: what identifies the process
    finally:
        child.kill()
    wait_until(lambda: proc_start(child.pid) is None, 5, "the zombie not to count")
    child.wait()
    assert proc_start(child.pid) is None
