"""The blocking steps of the deploy pipeline (run in a worker thread): build the
artifact and run the migration, with the process environments, mounts and limits
they and the release's web process get.

A process sees only a few keys of the control plane's own environment
(`BASE_ENV_KEYS`), the environment's variables and the deployment's `TRISTAGE_*`
facts: never another environment's secrets. In the sandbox it sees only its
artifact (writable while it builds, read-only after), the cached dependencies
its builder chose, its environment's dependency caches (while building) and its
environment's data directory (when it runs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..domain import aliases
from ..domain.config import FILE_NAME, ProcessSettings, Tier, parse_config, procfile_entries
from ..domain.deployments import Deployment, Status
from ..domain.git_events import PULL_REQUEST
from ..domain.limits import Limits
from ..domain.processes import WEB_1, ProcessName, process_types
from ..edges import git
from ..edges.builders import BuildContext, BuildFailed, BuildLog, build
from ..edges.runtime import Mount, ProcessSpec, Runtime
from ..edges.runtime import Status as RunStatus
from ..edges.runtime.base import PROBE_MARK
from ..errors import NotFound, UsageError
from ..paths import private_mkdirs
from .data_records import ConfirmationRequired
from .runtimes import Runtimes

if TYPE_CHECKING:
    from ..api import Tristage

BASE_ENV_KEYS = (
    "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME", "SSL_CERT_FILE",
    "NODE_EXTRA_CA_CERTS",  # the machine's CA bundle for Node (a TLS-inspecting proxy)
)  # fmt: skip

SettingsFor = Callable[[Deployment], ProcessSettings]
OnContext = Callable[[BuildContext], None]  # lets the control plane cancel a running step


def _system_path() -> list[str]:
    """The control plane's PATH without its own virtualenv: an app never runs
    tristage's python, pip or console scripts by accident."""
    own = os.path.join(sys.prefix, "bin") if sys.prefix != sys.base_prefix else None
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(os.pathsep)
    return [p for p in path if p and p != own]


def base_env(extra_path: tuple[str, ...] = ()) -> dict[str, str]:
    env = {k: os.environ[k] for k in BASE_ENV_KEYS if k in os.environ}
    env["PATH"] = ":".join([*extra_path, *_system_path()])
    return env


def commit_settings(api: Tristage, dep: Deployment) -> ProcessSettings:
    """The process settings of `dep`'s environment as its commit's own tristage.toml
    says (read from git: the artifact is what the deployment's code made of it and is
    never read back by the platform); the Procfile's `release:` line is the migration
    step when `migrate` is unset."""
    bare = api.deploys.bare_repo(dep.project)
    objects = pushed_objects(api, dep)
    cfg = api.config_for(dep.project)
    text = git.show_file(bare, dep.commit, FILE_NAME, objects)
    if text is not None:
        own = parse_config(text, f"{dep.commit[:7]}:{FILE_NAME}")
        if dep.environment in own.environments:
            cfg = own
    settings = cfg.settings(dep.environment)
    if not settings.migrate:
        procfile = git.show_file(bare, dep.commit, "Procfile", objects)
        release = procfile_entries(procfile).get("release") if procfile else None
        if release:
            settings = settings.model_copy(update={"migrate": release})
    return settings


def pushed_objects(api: Tristage, dep: Deployment) -> Path | None:
    """The quarantine directory of the push `dep` came from while the pre-receive hook
    waits for it (the commit is not in the repository's own objects yet); only a
    directory inside the project's hosted repository is read."""
    if not dep.objects:
        return None
    path = Path(dep.objects)
    bare = api.deploys.bare_repo(dep.project).resolve()
    return path if path.is_relative_to(bare) else None


def commit_process_types(api: Tristage, dep: Deployment) -> dict[str, str]:
    """Each process type of `dep` and its command: `web` (the resolved web command) and
    the other lines of the commit's Procfile (read from git), but `release`."""
    procfile = git.show_file(
        api.deploys.bare_repo(dep.project), dep.commit, "Procfile", pushed_objects(api, dep)
    )
    return process_types(dep.web or "", procfile_entries(procfile) if procfile else {})


def runtime_scope(api: Tristage) -> str:
    """Names this platform home's process groups in the runtime (see `Runtime.reap`)."""
    return "home-" + hashlib.sha256(str(api.home).encode()).hexdigest()[:12]


def limits_of(settings: ProcessSettings) -> Limits:
    return Limits.from_settings(settings.memory, settings.cpus, settings.pids)


def environment_cache(api: Tristage, project: str, environment: str) -> Path:
    """The dependency caches of one environment: no other environment's build sees them."""
    path = api.deploys.cache_dir / project / environment
    private_mkdirs(path)
    return path


def data_dirs(api: Tristage, dep: Deployment) -> list[Path]:
    """The environment's data directory, the only writable place of a release (and the
    directory of a SQLite file the configuration puts elsewhere)."""
    dirs = [api.data.data_dir(dep.project, dep.environment)]
    url = api.data.database_url(dep.project, dep.environment)
    if url.startswith("sqlite:///"):
        parent = Path(url.removeprefix("sqlite://")).parent
        if parent not in dirs:
            dirs.append(parent)
    return dirs


def release_mounts(api: Tristage, dep: Deployment) -> tuple[Mount, ...]:
    assert dep.artifact
    return (
        Mount(Path(dep.artifact)),
        *(Mount(Path(layer)) for layer in dep.layers),
        *(Mount(d, writable=True) for d in data_dirs(api, dep)),
    )


def release_spec(
    api: Tristage,
    dep: Deployment,
    port: int,
    settings: ProcessSettings,
    process: ProcessName = WEB_1,
    command: str | None = None,
) -> ProcessSpec:
    """What the runtime starts for one process of `dep` (`web.1` by default): a web
    process on `port`, any other type without one (`port` 0). Every process of a
    release writes to the release's log; all but `web.1` mark their lines."""
    assert dep.artifact and dep.web
    env = runtime_env(api, dep, port if process.is_web else None)
    env["TRISTAGE_PROCESS"] = str(process)
    return ProcessSpec(
        name=dep.id if process == WEB_1 else f"{dep.id}-{process.type}-{process.index}",
        command=command or dep.web,
        cwd=Path(dep.artifact),
        env=env,
        mounts=release_mounts(api, dep),
        limits=limits_of(settings),
        log_path=api.deploys.log_path(dep.project, dep.id, build=False),
        redact=tuple(api.variables.secret_values(dep.project)),
        scope=runtime_scope(api),
        log_prefix="" if process == WEB_1 else f"[{process}] ",
        drop_lines=(PROBE_MARK,),
    )


_ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


def release_log_tail(api: Tristage, dep: Deployment, lines: int = 12) -> list[str]:
    """The last non-blank lines the release printed (its log is redacted as written),
    without terminal escapes: what a failed start shows in the push output."""
    path = api.deploys.log_path(dep.project, dep.id, build=False)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        fh.seek(max(0, size - 16384))
        text = fh.read().decode("utf-8", "replace")
    out = [_ANSI.sub("", line).rstrip() for line in text.splitlines()]
    return [line[:500] for line in out if line.strip()][-lines:]


_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d ")


def last_app_line(tail: list[str]) -> str | None:
    """The last line of a release log tail the app printed (not the platform's own)."""
    for line in reversed(tail):
        text = _STAMP.sub("", line, count=1)
        if not text.startswith("tristage: "):
            return text
    return None


def deployment_vars(dep: Deployment) -> dict[str, str]:
    """What a build or release knows about the deployment it belongs to."""
    return {
        "TRISTAGE_ENV": dep.environment,
        "TRISTAGE_DEPLOYMENT": dep.id,
        "TRISTAGE_GIT_BRANCH": dep.branch,
        "TRISTAGE_GIT_COMMIT": dep.commit,
    }


def public_vars(api: Tristage, dep: Deployment) -> dict[str, str]:
    """`TRISTAGE_URL` (the environment's canonical URL: `https://` and its first domain,
    else its local URL) and `TRISTAGE_HOSTS` (every host the release may be served on),
    for frameworks with an allowed-host list."""
    cfg = api.config_for(dep.project)
    names = cfg.public_names().get(dep.environment, aliases.NO_NAMES)
    hosts = aliases.release_hosts(
        dep.project, dep.environment, cfg.production, dep.id, dep.branch, names
    )
    local = api.deploys.environment_url(dep.project, dep.environment)
    return {"TRISTAGE_URL": aliases.public_url(names) or local, "TRISTAGE_HOSTS": ",".join(hosts)}


def path_prefix(dep: Deployment) -> tuple[str, ...]:
    """The artifact's own tool directories, searched before the system's PATH."""
    out = []
    if dep.artifact:
        for sub in (".venv/bin", "node_modules/.bin"):
            p = Path(dep.artifact) / sub
            if p.is_dir():
                out.append(str(p))
    return tuple(out)


def runtime_env(api: Tristage, dep: Deployment, port: int | None) -> dict[str, str]:
    """What a process of `dep`'s release gets; `port` None for one without a port (a
    migration, a one-off), which then has no PORT at all."""
    env = {
        **base_env(path_prefix(dep)),
        # the environment's data store, unless a DATABASE_URL variable points elsewhere
        "DATABASE_URL": api.data.database_url(dep.project, dep.environment),
        **api.variables.runtime_env(dep.project, dep.environment, dep.branch),
        "PORT": str(port) if port is not None else "",
        **deployment_vars(dep),
        **public_vars(api, dep),
        # the environment's files that outlive deployments (mounted writable)
        "TRISTAGE_DATA_DIR": str(api.data.data_dir(dep.project, dep.environment)),
        "PYTHONUNBUFFERED": "1",
    }
    if port is None:
        del env["PORT"]
    if dep.artifact and (Path(dep.artifact) / ".venv").is_dir():
        env["VIRTUAL_ENV"] = str(Path(dep.artifact) / ".venv")
    return env


def build_artifact(
    api: Tristage,
    dep: Deployment,
    log: BuildLog,
    settings_for: SettingsFor,
    on_context: OnContext,
    runtime: Runtime,
) -> tuple[str, str, str, tuple[str, ...], str | None]:
    """Build (or reuse) the deployment's artifact: (artifact dir, web command, build
    hash, read-only layers, language runtimes)."""
    svc = api.deploys
    log.line(
        f"tristage: deployment {dep.id} of {dep.project} ({dep.branch} @ {dep.commit[:7]}) "
        f"for {dep.environment}"
    )
    for warning in api.variables.enforce(dep.project, dep.environment, branch=dep.branch):
        log.line(f"warning: {warning}")
    build_hash = api.variables.build_hash(dep.project, dep.environment, dep.branch)
    if dep.source:
        src = svc.get(dep.source)
        if not src.artifact or not src.web:
            raise BuildFailed(f"the artifact of {src.id} is gone", "redeploy it instead")
        log.line(f"> reusing the artifact of {src.id} (build-time variables are the same)")
        return src.artifact, src.web, src.build_hash or build_hash, src.layers, src.runtime
    artifact = svc.artifact_dir(dep.project, dep.id)
    if artifact.exists():
        shutil.rmtree(artifact)
    shutil.rmtree(artifact.with_name(artifact.name + ".partial"), ignore_errors=True)
    private_mkdirs(artifact.parent)
    log.line(f"> git archive {dep.commit[:12]}")
    git.archive(svc.bare_repo(dep.project), dep.commit, artifact, objects=pushed_objects(api, dep))
    artifact.chmod(0o700)  # the way in is private whatever the umask
    dep = dataclasses.replace(dep, artifact=str(artifact))
    settings = settings_for(dep)
    env = {
        **base_env(),
        **api.variables.build_env(dep.project, dep.environment, dep.branch),
        "CI": "1",
        **deployment_vars(dep),
    }
    limits = limits_of(settings).for_build()
    ctx = BuildContext(
        artifact=artifact,
        env=env,
        log=log,
        cache=environment_cache(api, dep.project, dep.environment),
        runtime=runtime,
        name=f"build-{dep.id}",
        scope=runtime_scope(api),
        limits=limits,
    )
    on_context(ctx)
    log.line(f"> building in the {runtime.name} runtime ({limits.describe()})")
    started = time.monotonic()
    result = build(ctx, settings.web, settings.build)
    log.line(f"> built ({result.kind}) in {time.monotonic() - started:.2f}s; web: {result.web}")
    assert result.web is not None
    return str(artifact), result.web, build_hash, result.layers, result.runtime


def run_migration(
    api: Tristage,
    dep: Deployment,
    log: BuildLog,
    settings_for: SettingsFor,
    on_context: OnContext,
    runtime: Runtime,
) -> None:
    """The release command (`migrate`, else the Procfile's `release:` line), after a
    snapshot of the environment's data."""
    settings = settings_for(dep)
    if not settings.migrate or not dep.artifact:
        return
    snapshot = api.data.snapshot_before_migration(dep.project, dep.environment, dep.id)
    if snapshot:
        api.store.execute("UPDATE deployments SET snapshot=? WHERE id=?", (snapshot, dep.id))
        log.line(f"> snapshot {snapshot} taken before the migration")
    env = runtime_env(api, dep, None)
    mounts = release_mounts(api, dep)
    ctx = BuildContext(
        artifact=Path(dep.artifact),
        env=env,
        log=log,
        cache=environment_cache(api, dep.project, dep.environment),
        runtime=runtime,
        name=f"migrate-{dep.id}",
        scope=runtime_scope(api),
        limits=limits_of(settings),
        mounts=mounts[1:],
        artifact_writable=False,
    )
    on_context(ctx)
    try:
        ctx.step(f"migrate: {settings.migrate}", settings.migrate)
    except BuildFailed as exc:
        restore = (
            f"; the data is unchanged or restorable with "
            f"'tristage db restore {dep.environment} {snapshot}' (snapshot {snapshot})"
            if snapshot
            else ""
        )
        raise BuildFailed(
            f"migration failed: {exc.message}{restore}",
            f"the previous deployment keeps serving; see 'tristage logs {dep.id} --build'",
        ) from None


# -- store steps (run on the control plane's store thread) ------------------------


def mark_built(
    api: Tristage,
    dep_id: str,
    artifact: str,
    web: str,
    build_hash: str,
    layers: tuple[str, ...] = (),
    runtime: str | None = None,
) -> Deployment:
    """Record the built artifact; the deployment is now `starting`."""
    api.store.execute(
        "UPDATE deployments SET status=?, artifact=?, web=?, build_hash=?, layers=?, runtime=?,"
        " updated_at=? WHERE id=?",
        (Status.starting.value, artifact, web, build_hash, json.dumps(list(layers)), runtime,
         time.time(), dep_id),
    )  # fmt: skip
    return api.deploys.get(dep_id)


def mark_ready(api: Tristage, dep: Deployment) -> Deployment:
    """The release passed its health check: `ready`, and its environment's desired
    deployment unless a newer one already is, or it does not take over the environment's
    host (a branch a glob caught: served at its branch host only, `takes_host`)."""
    store = api.store
    now = time.time()
    with store.transaction():
        store.execute(
            "UPDATE deployments SET status=?, ready_at=?, updated_at=? WHERE id=?",
            (Status.ready.value, now, now, dep.id),
        )
        current = store.query_one(
            "SELECT d.seq FROM aliases a JOIN deployments d ON d.id = a.desired"
            " WHERE a.project=? AND a.environment=?",
            (dep.project, dep.environment),
        )
        seq = store.query_one("SELECT seq FROM deployments WHERE id=?", (dep.id,))
        newer = current is None or (seq is not None and seq["seq"] > current["seq"])
        preview = dep.trigger == PULL_REQUEST  # a PR preview never takes the environment
        if dep.takes_host and not preview and newer:
            store.execute(
                "INSERT INTO aliases (project, environment, desired, desired_at)"
                " VALUES (?,?,?,?) ON CONFLICT (project, environment) DO UPDATE SET"
                " desired=excluded.desired, desired_at=excluded.desired_at",
                (dep.project, dep.environment, dep.id, now),
            )
        api.audit.record(
            "deploy.ready", project=dep.project, environment=dep.environment, target=dep.id
        )
    return api.deploys.get(dep.id)


# -- one-off commands -------------------------------------------------------------


def _terminal_fd() -> int | None:
    """stdin's fd when it is a terminal (and stdout too)."""
    try:
        fd = sys.stdin.fileno()
        return fd if os.isatty(fd) and os.isatty(sys.stdout.fileno()) else None
    except (OSError, ValueError):
        return None


def _size(fd: int) -> tuple[int, int] | None:
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return None
    return size.lines, size.columns


def _raw(fd: int) -> list[Any] | None:
    """Put the terminal in raw mode (the command's own terminal does the editing and
    echo); its previous mode."""
    try:
        saved = termios.tcgetattr(fd)
        tty.setraw(fd, termios.TCSANOW)
    except termios.error:
        return None
    return saved


def _typing(fd: int, into: int, canceled: threading.Event) -> None:
    """Hand what is typed to the command's terminal; Ctrl-C (in raw mode a byte) ends it."""
    try:
        while not canceled.is_set():
            data = os.read(fd, 4096)
            if not data:
                break
            if b"\x03" in data:
                canceled.set()
                break
            os.write(into, data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            os.close(into)


def one_off_spec(
    api: Tristage, dep: Deployment, command: tuple[str, ...], settings: ProcessSettings
) -> ProcessSpec:
    """A fresh process of `dep`'s release: its artifact (read-only), dependencies,
    variables and data directory, without a port."""
    assert dep.artifact
    env = runtime_env(api, dep, None)
    return ProcessSpec(
        name=f"run-{dep.id}",
        command=f"exec {shlex.join(command)}",  # through sh: PATH lookup, 127 if not found
        cwd=Path(dep.artifact),
        env=env,
        mounts=release_mounts(api, dep),
        limits=limits_of(settings),
    )


def exit_code_of(status: RunStatus) -> int:
    """A shell's exit code for a finished one-off: 128+N for signal N, 137 out of memory,
    124 timed out."""
    if status.oom_killed:
        return 137
    if status.detail.startswith("timed out"):
        return 124
    if status.exit_code is None:
        return 1
    return 128 - status.exit_code if status.exit_code < 0 else status.exit_code


def run_one_off(
    api: Tristage,
    project: str,
    environment: str,
    command: tuple[str, ...],
    output: Callable[[str], None],
    yes: bool = False,
    timeout: float = 3600.0,
    terminal: bool = False,
) -> int:
    """Run `command` in a fresh process of the deployment `environment` serves, its
    output (redacted) to `output` as it comes; its exit code. Audited, before and after;
    production asks for `yes`.

    With `terminal` (and a terminal on stdin) the command gets a terminal of its own
    (prompts, passwords without echo, a shell): what is typed goes to it, our terminal
    is raw meanwhile, and Ctrl-C ends the command (130)."""
    if not command:
        raise UsageError("no command to run", "e.g. 'tristage run --env production -- ls'")
    dep_id = api.deploys.live_deployment(project, environment)
    cfg = api.config_for(project)
    if cfg.env(environment).tier is Tier.production and not yes:
        raise ConfirmationRequired(
            f"this runs {' '.join(command)!r} against {environment}'s live data and secrets",
            "pass --yes to confirm",
        )
    dep = api.deploys.get(dep_id)
    if not dep.artifact or not Path(dep.artifact).is_dir():
        raise NotFound(f"the artifact of {dep.id} is gone", "redeploy it first")
    choice = Runtimes().choose(cfg, environment)
    spec = one_off_spec(api, dep, command, commit_settings(api, dep))
    shown = api.variables.redactor(project)(shlex.join(command))
    facts = {"command": shown, "runtime": choice.runtime.name}
    if choice.warning:
        output(f"warning: {choice.warning}\n")
    api.audit.record("deploy.run.start", project=project, environment=environment,
                     target=dep.id, details=facts)  # fmt: skip
    stream = api.variables.redactor(project).stream()
    canceled = threading.Event()
    result: list[RunStatus] = []
    errors: list[BaseException] = []
    tty = _terminal_fd() if terminal else None
    typed = -1
    if tty is not None:
        typed, into = os.pipe()
        spec = dataclasses.replace(spec, terminal_input=typed, terminal_size=_size(tty))
        threading.Thread(target=_typing, args=(tty, into, canceled), daemon=True).start()

    def shown_chunk(text: str) -> None:
        # a chunk as it comes (a prompt has no newline): what the stream holds back in
        # case a secret goes on is let out masked, never in clear
        output(stream.feed(text) + (stream.release() if stream.held else ""))

    def work() -> None:
        try:
            result.append(choice.runtime.run(
                spec, shown_chunk if tty is not None
                else lambda text: output(stream.feed(text.rstrip("\n") + "\n")),
                timeout, canceled.is_set,
            ))  # fmt: skip
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)

    worker = threading.Thread(target=work, name=f"run-{dep.id}", daemon=True)
    saved = _raw(tty) if tty is not None else None
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    except KeyboardInterrupt:  # Ctrl-C stops the command (and its whole process group)
        canceled.set()
        worker.join(30)
    finally:
        if tty is not None and saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(tty, termios.TCSADRAIN, saved)
        if typed >= 0:
            os.close(typed)
    output(stream.flush())
    code = 130 if canceled.is_set() else exit_code_of(result[0]) if result else 1
    api.audit.record("deploy.run", project=project, environment=environment, target=dep.id,
                     details={**facts, "exit_code": code})  # fmt: skip
    if errors:
        raise errors[0]
    return code
