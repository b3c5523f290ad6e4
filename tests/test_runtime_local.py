"""The local runtime's failure cases, with real processes: one control plane per home,
a log pump on a full disk, a pump that dies, a machine out of file descriptors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tristage.domain.limits import Limits
from tristage.edges.runtime import Mount, ProcessSpec, State, free_port, proc_start
from tristage.edges.runtime.cgroups import Cgroup, hierarchy
from tristage.edges.runtime.local import LocalRuntime

HAS_BWRAP = LocalRuntime(sandboxed=True)._bwrap is not None
needs_cgroups = pytest.mark.skipif(not hierarchy().usable, reason="cgroups are not writable")

SLEEPER = "import time\nprint('up', flush=True)\ntime.sleep(60)\n"


def spec(tmp: Path, code: str, name: str = "t") -> ProcessSpec:
    (tmp / "app.py").write_text(code)
    return ProcessSpec(
        name, (f"{sys.base_prefix}/bin/python3", "app.py"), tmp,
        {"PATH": "/usr/bin:/bin", "PORT": str(free_port())}, (Mount(tmp),),
        Limits(256 << 20, 1.0, 64), tmp / f"{name}.log",
    )  # fmt: skip


def wait(cond: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_two_control_planes_at_once_leave_one_running(home: Path) -> None:
    env = {**os.environ, "TRISTAGE_HOME": str(home)}
    cmd = [sys.executable, "-m", "tristage", "up", "--port", "0"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True) for _ in range(2)]  # fmt: skip
    try:
        # exactly one exits, with 1 and the pid of the other
        wait(lambda: any(p.poll() is not None for p in procs), 30)
        time.sleep(1.0)
        done = [p for p in procs if p.poll() is not None]
        running = [p for p in procs if p.poll() is None]
        assert len(done) == 1 and len(running) == 1
        out = done[0].communicate()[0].decode()
        assert done[0].returncode == 1
        assert f"already running for {home}" in out and f"pid {running[0].pid}" in out
        assert "tristage down" in out
        wait(lambda: (home / "controlplane.json").exists(), 20)
        assert json.loads((home / "controlplane.json").read_text())["pid"] == running[0].pid
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                p.wait(20)


@pytest.mark.parametrize("sandboxed", [False, True] if HAS_BWRAP else [False])
def test_a_full_disk_neither_blocks_the_app_nor_kills_the_pump(
    tmp_path: Path, sandboxed: bool
) -> None:
    # /dev/full answers every write with ENOSPC, like a full disk
    code = ("import time\nfor i in range(20000):\n    print('x' * 100, flush=True)\n"
            "open('done', 'w').close()\ntime.sleep(60)\n")  # fmt: skip
    s = spec(tmp_path, code)
    s = ProcessSpec(s.name, s.command, s.cwd, s.env, (Mount(tmp_path, writable=True),), s.limits,
                    Path("/dev/full"))  # fmt: skip
    rt = LocalRuntime(sandboxed=sandboxed)
    h = rt.start(s)
    try:
        wait(lambda: (tmp_path / "done").exists(), 30)  # 2 MB through the pipe: not blocked
        assert rt.status(h).state is State.running
    finally:
        rt.stop(h, 1.0)
    assert rt.status(h).state is State.exited


@needs_cgroups
def test_an_unsandboxed_app_whose_pump_died_is_stopped_not_doubled(tmp_path: Path) -> None:
    rt = LocalRuntime(sandboxed=False)
    s = spec(tmp_path, SLEEPER)
    h = rt.start(s)
    cg = Cgroup.from_json(h["cgroup"])
    assert s.log_path is not None
    log = s.log_path
    wait(lambda: len(cg.pids()) == 1 and log.exists() and "up" in log.read_text())
    app = next(iter(cg.pids()))
    os.kill(h["pid"], signal.SIGKILL)  # the pump only (the app prints nothing more)
    wait(lambda: rt.status(h).state is State.orphaned)
    fresh = LocalRuntime(sandboxed=False)  # as after a restart of the control plane
    assert fresh.adopt(h) is False
    assert not cg.pids()
    wait(lambda: proc_start(app) is None)  # gone (at most a zombie until its reaper runs)
    assert not any(d.exists() for d in cg.dirs)


@pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap is not installed")
@needs_cgroups
def test_a_sandboxed_app_dies_with_its_pump(tmp_path: Path) -> None:
    rt = LocalRuntime(sandboxed=True)
    h = rt.start(spec(tmp_path, SLEEPER))
    cg = Cgroup.from_json(h["cgroup"])
    wait(lambda: len(cg.pids()) >= 2)  # bwrap and the app
    os.kill(h["pid"], signal.SIGKILL)
    wait(lambda: not cg.pids(), 10)
    assert rt.status(h).state is State.exited
    rt.stop(h, 0.1)
    assert not any(d.exists() for d in cg.dirs)


PROBE = r"""
import json, resource, sys
from tristage.edges.runtime.local import LocalRuntime
handle = json.loads(sys.argv[1])
rt = LocalRuntime(sandboxed=False)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
held = []
try:
    while True:
        held.append(open("/dev/null"))
except OSError:
    pass
state = rt.status(handle).state.value
for f in held:
    f.close()
print(json.dumps({"exhausted": state, "after": rt.status(handle).state.value}))
"""


def test_out_of_file_descriptors_is_not_an_exit(tmp_path: Path) -> None:
    rt = LocalRuntime(sandboxed=False)
    h = rt.start(spec(tmp_path, SLEEPER))
    try:
        out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(h)], capture_output=True,
                             text=True, check=True)  # fmt: skip
        seen = json.loads(out.stdout)
        assert seen == {"exhausted": "unknown", "after": "running"}
    finally:
        rt.stop(h, 1.0)


def test_where_the_sandbox_cannot_run_only_development_or_an_explicit_policy_runs() -> None:
    from tristage.domain.config import parse_config
    from tristage.domain.presets import render
    from tristage.services.runtimes import Runtimes, SandboxRequired

    cfg = parse_config(render("professional", "shop"))
    runtimes = Runtimes(forced="")
    runtimes.add(LocalRuntime(sandboxed=True, bwrap_path="/nonexistent/bwrap"))
    dev = runtimes.choose(cfg, "development")
    assert dev.runtime.name == "unsandboxed" and dev.warning and "unsandboxed" in dev.warning
    for env in ("preview", "production"):
        with pytest.raises(SandboxRequired) as err:
            runtimes.choose(cfg, env)
        assert 'sandbox = "off"' in (err.value.hint or "")
    off = cfg.model_copy(update={"policy": cfg.policy.model_copy(update={"sandbox": "off"})})
    prod = runtimes.choose(off, "production")
    assert prod.runtime.name == "unsandboxed" and prod.warning
    if HAS_BWRAP and hierarchy().usable:
        assert Runtimes(forced="").choose(cfg, "production").runtime.name == "sandbox"


@pytest.mark.parametrize("sandboxed", [False, True] if HAS_BWRAP else [False])
def test_a_release_log_masks_every_form_of_a_secret(tmp_path: Path, sandboxed: bool) -> None:
    secret = "sk_live_51Hx0q2eZvKYlo2C8xN3qYv7"
    code = (
        "import base64, json, sys, time\n"
        f"s = {secret!r}\n"
        "sys.stdout.write(s[:12]); sys.stdout.flush(); time.sleep(0.3)\n"  # two writes
        "print(s[12:] + ' split', flush=True)\n"
        "print(json.dumps({'k': s + '\"'}), flush=True)\n"
        "print(base64.b64encode(s.encode()).decode(), flush=True)\n"
        "print(s.encode().hex(), flush=True)\n"
        "print('done', flush=True)\n"
        "time.sleep(60)\n"
    )
    s = spec(tmp_path, code)
    s = ProcessSpec(s.name, s.command, s.cwd, s.env, s.mounts, s.limits, s.log_path, (secret,))
    rt = LocalRuntime(sandboxed=sandboxed)
    h = rt.start(s)
    try:
        assert s.log_path is not None
        log = s.log_path
        wait(lambda: log.exists() and "done" in log.read_text())
        text = log.read_text()
    finally:
        rt.stop(h, 1.0)
    assert secret not in text and secret[:12] not in text and secret[12:] not in text
    assert secret.encode().hex() not in text
    # the pause wrote the held start masked, on its own line; the rest is masked with it
    assert " split" in text and text.count("****") >= 4, text


@needs_cgroups
def test_reap_stops_only_the_unrecorded_groups_of_its_scope(tmp_path: Path) -> None:
    rt = LocalRuntime(sandboxed=False)
    made = []
    for name, scope in (("kept", "home-a"), ("lost", "home-a"), ("other", "home-b")):
        d = tmp_path / name
        d.mkdir()
        s = spec(d, SLEEPER, name)
        made.append(rt.start(ProcessSpec(s.name, s.command, s.cwd, s.env, s.mounts, s.limits,
                                         s.log_path, scope=scope)))  # fmt: skip
    kept, lost, other = made
    try:
        for h in made:
            wait(lambda h=h: bool(Cgroup.from_json(h["cgroup"]).pids()))
        # a fresh runtime, as a control plane after a crash, knows only `kept`
        assert LocalRuntime(sandboxed=False).reap("home-a", [kept]) == 1
        wait(lambda: rt.status(lost).state is State.exited)
        assert not any(d.exists() for d in Cgroup.from_json(lost["cgroup"]).dirs)
        assert rt.status(kept).state is State.running
        assert rt.status(other).state is State.running  # another home's: not ours to stop
    finally:
        for h in made:
            rt.stop(h, 1.0)


@needs_cgroups
def test_a_control_plane_stops_a_release_it_has_no_record_of(home: Path, tmp_path: Path) -> None:
    """A release started by a control plane that died before recording it is stopped at
    the next start (it would otherwise run for ever, unseen, holding its port)."""
    from tristage.api import Tristage
    from tristage.services.pipeline_steps import runtime_scope

    scope = runtime_scope(Tristage(home, actor="tester"))
    rt = LocalRuntime(sandboxed=False)
    s = spec(tmp_path, SLEEPER, "1lostapp")
    h = rt.start(ProcessSpec(s.name, s.command, s.cwd, s.env, s.mounts, s.limits, s.log_path,
                             scope=scope))  # fmt: skip
    wait(lambda: bool(Cgroup.from_json(h["cgroup"]).pids()))
    env = {**os.environ, "TRISTAGE_HOME": str(home)}
    up = subprocess.Popen([sys.executable, "-m", "tristage", "up", "--port", "0"], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait(lambda: rt.status(h).state is State.exited, 30)
    finally:
        up.send_signal(signal.SIGINT)
        out = up.communicate(timeout=30)[0].decode()
        rt.stop(h, 0.5)
    assert "stopped 1 unrecorded release process group" in out, out


def test_proc_net_tcp_listen_rows_are_parsed() -> None:
    from tristage.edges.runtime.sockets import parse_listening

    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid"
        "  timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000"
        "     0        0 4242 1 0000000000000000 100 0 0 10 0\n"
        "   1: 0100007F:1F91 0100007F:D431 01 00000000:00000000 00:00000000 00000000"
        "     0        0 4343 1 0000000000000000 100 0 0 10 0\n"
    )
    assert parse_listening(text) == {4242: ("127.0.0.1", 8080)}
