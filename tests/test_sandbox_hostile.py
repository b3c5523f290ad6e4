"""The sandbox against a hostile app, end to end.

A project whose app (tests/apps/hostile) tries what an attacker's code would is
deployed to production (`main`), then pushed to `dev` (development
tier) through a real control plane, with a real bubblewrap sandbox and real
cgroups. Every test asks the feature release (or reads its build log) what it
could do, and checks the platform's side of it: it cannot read the platform's
files or another environment's, see or signal production's processes, write
into any artifact, poison the dependencies production builds with, exceed its
limits, or leave a process behind.

The tests share one control plane (module fixture) and run in file order: the few
that replace a release (a production rebuild, a new feature release) update `World`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import GIT_ENV, git, run_cli
from test_deploy_helpers import (
    ControlPlane,
    commit,
    deployment_id,
    deployments,
    make_project,
    push,
    wait_for,
)
from tristage.api import Tristage
from tristage.paths import private_mkdirs

BWRAP = shutil.which("bwrap")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    # one control plane for the module, its tests in file order: one worker runs them all
    pytest.mark.xdist_group("sandbox-hostile"),
    pytest.mark.skipif(BWRAP is None, reason="bubblewrap (bwrap) is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox's cgroups need root here"),
]

FEATURE = "dev"  # development's own branch: the hostile release takes its host
DEV_HOST = "development.shop.localhost"
PROD_HOST = "shop.localhost"
MEMORY = "64M"
PIDS = 48
ORIGINAL = 'VALUE = "original"\n'
PROD_SECRET = "sk_live_" + secrets.token_hex(12)


# -- the hostile project ---------------------------------------------------------


def make_wheel(directory: Path, init: str = ORIGINAL) -> str:
    """A pure-Python wheel of `hostiledep` (its VALUE is what poisoning tries to change);
    byte-identical each time, so every branch has the same dependencies."""
    files = {
        "hostiledep/__init__.py": init.encode(),
        "hostiledep-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: hostiledep\n"
        b"Version: 1.0\n",
        "hostiledep-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("hostiledep-1.0.dist-info/RECORD,,")
    files["hostiledep-1.0.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    directory.mkdir(parents=True, exist_ok=True)
    name = "hostiledep-1.0-py3-none-any.whl"
    with zipfile.ZipFile(directory / name, "w") as zf:
        for path, data in files.items():
            zf.writestr(zipfile.ZipInfo(path, (2024, 1, 1, 0, 0, 0)), data)
    return name


def feature_toml(base: str, build: str, **settings: str) -> str:
    extra = "".join(f"{k} = {v}\n" for k, v in settings.items())
    return base.replace("[app]\n", f"[app]\nbuild = {json.dumps(build)}\n{extra}", 1)


def key_reads(home: Path) -> list[str]:
    """Ways a build command might name the master key (all must find nothing)."""
    return [
        "$TRISTAGE_HOME/master.key",
        "../../../master.key",
        f"{home}/master.key",
        f"/proc/1/root{home}/master.key",
        "/proc/self/cwd/../../../master.key",
    ]


@dataclass
class World:
    home: Path
    repo: Path
    cp: ControlPlane
    api: Tristage
    base_toml: str
    prod: str
    dev: str
    dev_push: subprocess.CompletedProcess[str]

    def dev_get(self, path: str, timeout: float = 10) -> Any:
        r = self.cp.client.get(
            f"http://127.0.0.1:{self.cp.port}{path}", headers={"Host": DEV_HOST}, timeout=timeout
        )
        assert r.status_code == 200, r.text
        return r.json()

    def dev_probe(self, **attempts: list[Any]) -> dict[str, Any]:
        r = self.cp.client.post(
            f"http://127.0.0.1:{self.cp.port}/probe", json=attempts, headers={"Host": DEV_HOST}
        )
        assert r.status_code == 200, r.text
        report: dict[str, Any] = r.json()
        return report

    def artifact(self, dep: str) -> Path:
        return self.home / "artifacts" / "shop" / dep

    def handle(self, dep: str) -> dict[str, Any]:
        row = self.api.store.query_one("SELECT handle FROM releases WHERE deployment=?", (dep,))
        assert row is not None, f"{dep} has no release"
        handle: dict[str, Any] = json.loads(row["handle"])
        return handle

    def release_pids(self, dep: str) -> set[int]:
        """The host pids in the release's cgroup (the pump is outside it)."""
        cgroup = self.handle(dep)["cgroup"]
        assert cgroup, "the release runs without a cgroup"
        procs = Path(cgroup["paths"].get("pids") or next(iter(cgroup["paths"].values())))
        return {int(p) for p in (procs / "cgroup.procs").read_text().split()}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, cwd=self.repo)

    def build_log(self, dep: str) -> str:
        r = self.cli("logs", dep, "--build")
        assert r.returncode == 0, r.stderr
        return r.stdout

    def runtime_log(self, dep: str) -> str:
        r = self.cli("logs", dep)
        assert r.returncode == 0, r.stderr
        return r.stdout


def push_ok(repo: Path, branch: str) -> tuple[str, subprocess.CompletedProcess[str]]:
    r = push(repo, branch, timeout=120)
    assert r.returncode == 0, r.stderr
    return deployment_id(r.stderr), r


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Production deployed from `main`, then the hostile feature branch in development,
    both under umask 022 with the master key in its file."""
    root = tmp_path_factory.mktemp("hostile")
    home, repo = root / "home", root / "myapp"
    home.mkdir()
    repo.mkdir()
    old_umask = os.umask(0o022)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TRISTAGE_HOME", str(home))
            mp.setenv("TRISTAGE_MASTER_KEY_FILE", str(home / "master.key"))
            mp.delenv("TRISTAGE_MASTER_KEY", raising=False)
            mp.delenv("TRISTAGE_RUNTIME", raising=False)
            for k, v in GIT_ENV.items():
                mp.setenv(k, v)
            yield from _deploy_world(home, repo)
    finally:
        os.umask(old_umask)


def _deploy_world(home: Path, repo: Path) -> Iterator[World]:
    git(repo, "init", "-q", "-b", "main")
    make_project(repo, app="hostile")
    wheel = make_wheel(repo / "vendor")
    commit(repo, {"requirements.txt": f"./vendor/{wheel}\n"}, "a dependency")
    base_toml = (repo / "tristage.toml").read_text()
    # a production secret: the master key and an encrypted value exist on the host
    r = run_cli("env", "set", "STRIPE_SECRET_KEY", PROD_SECRET, "--env", "production",
                "--secret", cwd=repo)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (home / "master.key").is_file()
    cp = ControlPlane(home).start()
    api = Tristage(home, actor="tester")
    try:
        prod, _ = push_ok(repo, "main")
        assert cp.serves(PROD_HOST) == prod
        git(repo, "checkout", "-qb", FEATURE)
        targets = {
            # every copy of the dependency production's builds reuse
            "poison": [f"{home}/cache/shop/production/**/hostiledep/__init__.py"],
            # production's caches and artifact
            "plant": [
                f"{home}/cache/shop/production/pip",
                f"{home}/cache/shop/production/python",
                str(home / "artifacts" / "shop" / prod),
            ],
        }
        build = f"cat {' '.join(key_reads(home))}; python hostile_build.py"
        toml = feature_toml(base_toml, build, memory=json.dumps(MEMORY), pids=str(PIDS))
        commit(repo, {"tristage.toml": toml, "targets.json": json.dumps(targets)}, "hostile")
        dev, dev_push = push_ok(repo, FEATURE)
        assert cp.serves(DEV_HOST) == dev
        yield World(home, repo, cp, api, base_toml, prod, dev, dev_push)
    finally:
        api.close()
        cp.stop()


# -- what a build can do ------------------------------------------------------------


def test_a_build_command_finds_no_master_key(world: World) -> None:
    key = (world.home / "master.key").read_text().strip()
    assert len(key) >= 40  # the platform's key is really there, on the host
    log = world.build_log(world.dev)
    for path in key_reads(world.home):
        shown = path.replace("$TRISTAGE_HOME", "")
        assert f"cat: {shown}: No such file or directory" in log, log
    assert key not in log
    assert key not in world.dev_push.stderr + world.dev_push.stdout


def test_the_exact_build_command_fails_without_the_key(world: World) -> None:
    git(world.repo, "checkout", "-qb", "feature/cat")
    try:
        toml = feature_toml(world.base_toml, "cat $TRISTAGE_HOME/master.key ../../../master.key")
        commit(world.repo, {"tristage.toml": toml}, "print the key")
        r = push(world.repo, "feature/cat", timeout=120)
    finally:
        git(world.repo, "checkout", "-q", FEATURE)
    key = (world.home / "master.key").read_text().strip()
    dep = deployment_id(r.stderr)
    wait_for(
        lambda: next(d for d in deployments(world.repo) if d["id"] == dep)["status"] == "error",
        60,
        "the build to fail",
    )
    log = world.build_log(dep)
    assert "cat: /master.key: No such file or directory" in log
    assert "cat: ../../../master.key: No such file or directory" in log
    assert "failed with exit code 1" in log
    assert key not in log and key not in r.stderr + r.stdout
    assert world.cp.serves(DEV_HOST) == world.dev  # the feature release is untouched


def test_a_build_leaves_no_process_behind_and_does_not_hang(world: World) -> None:
    marker = f"hostile-build-{secrets.token_hex(4)}"
    sleeper = f"python -c 'import os, time; os.setsid(); time.sleep(300)' {marker}"
    # one child keeps the build's output open, one detaches from it; the build then
    # fails, so development keeps serving the feature release
    build = f"{sleeper}-piped & {sleeper}-detached >/dev/null 2>&1 & sleep 0.5; exit 3"
    git(world.repo, "checkout", "-qb", "feature/bg")
    try:
        commit(world.repo, {"tristage.toml": feature_toml(world.base_toml, build)}, "bg")
        started = time.monotonic()
        r = push(world.repo, "feature/bg", timeout=120)
    finally:
        git(world.repo, "checkout", "-q", FEATURE)
    assert time.monotonic() - started < 60, "the build hung on its background children"
    assert "failed with exit code 3" in world.build_log(deployment_id(r.stderr))
    assert _host_pids_with(marker) == set()
    assert world.cp.serves(DEV_HOST) == world.dev


def _build_report(log: str) -> dict[str, Any]:
    for line in log.splitlines():
        if "BUILD-REPORT " in line:
            report: dict[str, Any] = json.loads(line.split("BUILD-REPORT ", 1)[1])
            return report
    raise AssertionError(f"no build report in:\n{log}")


PLATFORM_VARS = {"TRISTAGE_HOME", "TRISTAGE_MASTER_KEY", "TRISTAGE_MASTER_KEY_FILE"}


def _platform_fds(fds: dict[str, str], home: Path) -> dict[str, str]:
    return {fd: target for fd, target in fds.items() if str(home) in target}


def test_a_build_holds_no_platform_file_capability_or_production_secret(world: World) -> None:
    report = _build_report(world.build_log(world.dev))
    assert report["cap_eff"] == 0
    assert report["fds"] and _platform_fds(report["fds"], world.home) == {}
    assert "PATH" in report["env"]  # the report lists its environment
    assert not {"STRIPE_SECRET_KEY", *PLATFORM_VARS} & set(report["env"])
    assert PROD_SECRET not in world.build_log(world.dev)


def _production_deps(home: Path) -> list[Path]:
    return sorted((home / "cache" / "shop" / "production").glob("**/hostiledep/__init__.py"))


def test_a_feature_build_cannot_poison_what_production_builds_with(world: World) -> None:
    report = _build_report(world.build_log(world.dev))
    # its own cached copy of the dependency (same requirements.txt as production's)
    [(own, outcome)] = report["own"].items()
    assert "/cache/shop/development/" in own
    assert outcome == "EROFS"
    assert report["poison"] == {}  # production's cache is not even there to find
    assert all(v != "written" for v in report["plant"].values()), report["plant"]
    # on the platform's side: production's cache and artifact are as they were
    cached = _production_deps(world.home)
    assert cached and all(p.read_text() == ORIGINAL for p in cached)
    assert not list(world.home.glob("**/planted-by-a-feature-build"))
    assert world.dev_get("/value")["value"] == "original"
    # and a production build after it reuses the cache and gets the real package
    r = world.cli("redeploy", world.prod, "--rebuild")
    assert r.returncode == 0, r.stdout + r.stderr
    rebuilt = r.stdout.split("deployment ")[1].split()[0]
    assert "cache hit" in world.build_log(rebuilt)
    assert world.cp.serves(PROD_HOST) == rebuilt
    served = world.cp.get(PROD_HOST, "/value").json()
    assert served["value"] == "original"
    assert "/cache/shop/production/" in served["file"]
    world.prod = rebuilt


# -- what a release can read --------------------------------------------------------


def test_a_release_cannot_read_the_platforms_files(world: World) -> None:
    home, prod = world.home, world.prod
    logs = home / "logs" / "shop"
    secret_paths = [
        home / "master.key",
        home / "state.db",
        home / "state.db-wal",
        home / "controlplane.json",
        home / "repos" / "shop.git" / "config",
        world.artifact(prod) / "app.py",
        logs / f"{prod}.build.log",
        logs / f"{prod}.runtime.log",
        logs / f"{world.dev}.build.log",
    ]
    for p in secret_paths:
        assert p.exists(), f"{p} should exist on the host"
    relative = ["../../../master.key", "../../../state.db", "../../../logs"]
    report = world.dev_probe(
        read=[*map(str, secret_paths), *relative, "app.py"],
        list=[str(home), str(home / "logs"), str(logs), str(home / "artifacts" / "shop")],
    )
    own = report["read"].pop("app.py")  # the probe itself works: it reads its own code
    assert own["ok"] and own["sha256"] == _sha(world.artifact(world.dev) / "app.py")
    for path, result in report["read"].items():
        assert not result["ok"], f"the feature release read {path}"
    for path, result in report["list"].items():
        entries = set(result.get("entries", []))
        leaked = entries & {"master.key", "state.db", "logs", "repos", prod, world.dev + ".log"}
        assert not leaked, f"the feature release listed {sorted(leaked)} in {path}"


def test_a_release_cannot_read_or_write_another_environments_database(world: World) -> None:
    url = world.api.data.database_url("shop", "production")
    prod_db = Path(url.removeprefix("sqlite://"))
    assert prod_db.is_file()
    before = _sha(prod_db)
    report = world.dev_probe(read=[str(prod_db)], append=[str(prod_db)])
    assert not report["read"][str(prod_db)]["ok"], "the feature release read production's data"
    assert not report["append"][str(prod_db)]["ok"], "the feature release wrote production's data"
    assert _sha(prod_db) == before


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_release_holds_no_platform_file_capability_or_production_secret(
    world: World,
) -> None:
    who = world.dev_get("/whoami")
    assert who["uid"] != 0 and who["cap_eff"] == 0
    assert who["fds"] and _platform_fds(who["fds"], world.home) == {}, who["fds"]
    env = who["environ"]
    assert env["TRISTAGE_ENV"] == "development"
    assert not {"STRIPE_SECRET_KEY", *PLATFORM_VARS} & set(env)
    assert not [k for k, v in env.items() if PROD_SECRET in v]


# -- processes ------------------------------------------------------------------------


def test_a_release_cannot_see_or_signal_productions_processes(world: World) -> None:
    prod_pids = world.release_pids(world.prod)
    assert prod_pids
    assert world.cp.proc is not None
    targets = sorted(prod_pids | {world.cp.proc.pid})
    who = world.dev_get("/whoami")
    seen = {p["pid"] for p in who["processes"]}
    assert who["pid"] in seen  # it does see itself
    assert not seen & set(targets), f"production's pids visible: {seen & set(targets)}"
    # its /proc is its own pid namespace: a handful of its own processes, none of the host's
    assert len(seen) <= len(world.release_pids(world.dev)), who["processes"]
    report = world.dev_probe(kill=targets, environ=targets)
    for pid in targets:
        assert report["kill"][str(pid)] == {"ok": False, "error": "ESRCH"}, pid
        assert not report["environ"][str(pid)]["ok"], pid
    assert world.release_pids(world.prod) == prod_pids  # production untouched


# -- writing ----------------------------------------------------------------------------


def test_a_release_cannot_write_into_any_artifact(world: World) -> None:
    own, prod = world.artifact(world.dev), world.artifact(world.prod)
    before = {p: _sha(p) for p in (own / "app.py", prod / "app.py")}
    value = world.dev_get("/value")["file"]
    report = world.dev_probe(
        append=[
            "app.py",
            str(own / "app.py"),
            str(prod / "app.py"),
            value,
            # leaving its cgroup, and so its limits
            *(f"/sys/fs/cgroup/{c}/cgroup.procs" for c in ("pids", "memory", "unified")),
        ],
        write=["new-file", str(own / "new-file"), str(prod / "new-file"), "/usr/new-file"],
    )
    for kind in ("append", "write"):
        for path, result in report[kind].items():
            assert not result["ok"], f"the feature release could {kind} {path}"
    assert report["append"]["app.py"]["error"] == "EROFS"  # its own code is read-only
    assert report["append"][value]["error"] == "EROFS"  # and so are its dependencies
    assert {p: _sha(p) for p in before} == before
    assert not (own / "new-file").exists() and not (prod / "new-file").exists()


# -- limits -------------------------------------------------------------------------------


def test_a_release_cannot_fork_past_its_pids_limit(world: World) -> None:
    result = world.dev_get(f"/fork?max={PIDS * 10}", timeout=30)
    assert result["error"] == "EAGAIN", result
    assert 0 < result["forked"] < PIDS
    assert world.dev_get("/")["deployment"] == world.dev  # and it keeps serving


def test_a_release_killed_for_memory_is_reported_as_out_of_memory(world: World) -> None:
    with pytest.raises(httpx.HTTPError):
        r = world.cp.client.get(
            f"http://127.0.0.1:{world.cp.port}/alloc?mb=512",
            headers={"Host": DEV_HOST},
            timeout=30,
        )
        r.raise_for_status()  # a 502 from the router: its upstream died
    wait_for(
        lambda: f"out of memory (limit {MEMORY})" in world.runtime_log(world.dev),
        20,
        "the out-of-memory kill in the runtime log",
    )
    log = world.runtime_log(world.dev)
    assert "allocated 8 MiB" in log and "allocated 512 MiB" not in log
    mib = [int(m) for m in re.findall(r"allocated (\d+) MiB", log)]
    assert max(mib) <= 64
    wait_for(  # the supervisor reports it once it has seen the exit
        lambda: f"{world.dev} killed: out of memory (limit {MEMORY})" in world.cp.output(),
        10,
        "the out-of-memory kill in the control plane's output",
    )
    alerts = wait_for(
        lambda: [
            a
            for a in json.loads(world.cli("alerts", "--json").stdout)
            if a["kind"] == "out_of_memory" and a["deployment"] == world.dev
        ],
        10,
        "the out-of-memory alert",
    )
    assert "out of memory" in alerts[0]["message"]
    # the supervisor restarted it
    wait_for(lambda: world.cp.serves(DEV_HOST) == world.dev, 20, "the restart")
    # and `tristage status` says how it last ended
    status = json.loads(world.cli("status", "--json").stdout)
    dev = next(e for e in status["environments"] if e["environment"] == "development")
    assert dev["deployment"] == world.dev and "out of memory (limit 64M)" in dev["health"], dev


# -- nothing left behind ----------------------------------------------------------------


def _host_pids_with(marker: str) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            found.add(int(entry.name))
    return found


def test_setsid_children_die_with_the_release(world: World) -> None:
    marker = f"hostile-marker-{secrets.token_hex(4)}"
    spawned = world.dev_get(f"/spawn?marker={marker}")
    assert set(spawned["pids"]) == {"setsid", "daemon"}
    # the setsid child and the double-forked daemon (once its first fork has exited)
    wait_for(lambda: len(_host_pids_with(marker)) == 2, 10, "the two children")
    children = _host_pids_with(marker)
    assert children <= world.release_pids(world.dev)  # found through the cgroup too
    # replace the feature release: the old one is stopped, its whole cgroup with it
    old = world.dev
    commit(world.repo, {"note.txt": "v2\n"}, "replace the release")
    world.dev, _ = push_ok(world.repo, FEATURE)
    assert world.cp.serves(DEV_HOST) == world.dev
    wait_for(lambda: not _host_pids_with(marker), 15, f"the children of {old} to die")


# -- the platform's own files -----------------------------------------------------------


def _loose(paths: list[Path], home: Path) -> list[str]:
    """Those of `paths` another user could read or enter (symlinks aside)."""
    out = []
    for p in paths:
        st = p.lstat()
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o077:
            out.append(f"{p.relative_to(home)} {stat.S_IMODE(st.st_mode):o}")
    return out


def test_logs_artifacts_and_caches_are_private_under_umask_022(world: World) -> None:
    home = world.home
    logs = [home / "logs", *(home / "logs").rglob("*")]
    assert any(p.name.endswith(".runtime.log") for p in logs)
    # the way to every artifact and dependency cache, and each artifact itself
    artifacts = [home / "artifacts", home / "artifacts" / "shop"]
    artifacts += [p for p in artifacts[1].iterdir() if p.is_dir()]
    assert world.artifact(world.prod) in artifacts and world.artifact(world.dev) in artifacts
    # cache/shop/<environment>/{python,pip}/<entry>
    shop = home / "cache" / "shop"
    caches = [home / "cache", shop, *(p for g in ("*", "*/*", "*/*/*") for p in shop.glob(g))]
    loose = _loose(logs + artifacts + caches, home)
    assert loose == [], "readable by other users:\n" + "\n".join(loose)


def test_private_dir_makes_every_directory_it_creates_0700(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        (tmp_path / "kept").mkdir()
        made = private_mkdirs(tmp_path / "kept" / "a" / "b" / "c")
    finally:
        os.umask(old)
    assert made.is_dir()
    assert stat.S_IMODE((tmp_path / "kept").stat().st_mode) == 0o755  # not made: untouched
    for d in (made.parent.parent, made.parent, made):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    assert private_mkdirs(made) == made  # already there: fine
    (made / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        private_mkdirs(made / "file")


# -- the master key from the environment ---------------------------------------------------


def test_master_key_from_the_environment_still_redacts_and_creates_no_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, repo = tmp_path / "home", tmp_path / "myapp"
    home.mkdir()
    repo.mkdir()
    monkeypatch.setenv("TRISTAGE_HOME", str(home))
    monkeypatch.delenv("TRISTAGE_MASTER_KEY_FILE", raising=False)
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    monkeypatch.setenv("TRISTAGE_MASTER_KEY", key)
    for k, v in GIT_ENV.items():
        monkeypatch.setenv(k, v)
    git(repo, "init", "-q", "-b", "main")
    make_project(repo, app="hostile")
    value = "s3cr3t-" + secrets.token_hex(8)
    r = run_cli("env", "set", "API_SECRET", value, "--env", "development", "--secret", cwd=repo)
    assert r.returncode == 0, r.stderr
    git(repo, "checkout", "-qb", "feature/key")
    cp = ControlPlane(home).start()
    try:
        dep, _ = push_ok(repo, "feature/key")
        r = cp.get("feature-key.shop.localhost", "/secret")
        assert r.status_code == 200 and r.json() == {"printed": True}
        wait_for(
            lambda: "the secret is" in run_cli("logs", dep, cwd=repo).stdout, 10, "the log line"
        )
        log = run_cli("logs", dep, cwd=repo).stdout
        assert "the secret is ****" in log
        assert value not in log
        on_disk = (home / "logs" / "shop" / f"{dep}.runtime.log").read_text()
        assert value not in on_disk and "the secret is ****" in on_disk
    finally:
        cp.stop()
    assert not (home / "master.key").exists()
    assert value not in cp.output()
