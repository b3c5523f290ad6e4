"""The app's own environment for `tristage dev`: the virtualenv and `node_modules` the
last development build made, or made now when there is none for this working copy.

Python: the dependencies come from the development environment's build cache (the
entry a build installs for the same dependency files and interpreter, see
`edges.builders.python`). When there is none (no build yet, or the requirements or
lock file changed since), it is installed now, exactly as a build would (same cache,
same steps, through the runtime). A small venv of the working copy's own, under the
platform's home, names the working copy's code first and the cached dependencies
second, with the dependencies' console scripts (`gunicorn`, `flask`) bound to it.

Node: the working copy's `node_modules` when it has one; else the one the last build of
the same lock file cached, copied in; else the package manager installs it (with the
environment's download cache), as `npm ci` by hand would.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..domain.config import PipelineConfig
from ..edges.builders import BuildContext, BuildFailed, BuildLog, node, python
from ..errors import UsageError
from ..paths import private_mkdirs
from .pipeline_steps import base_env, environment_cache, runtime_scope
from .runtimes import Runtimes

if TYPE_CHECKING:
    from ..api import Tristage

Progress = Callable[[str], None]


@dataclass(frozen=True)
class AppEnvironment:
    path_prefix: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)  # VIRTUAL_ENV
    using: tuple[str, ...] = ()  # said before the app starts, and in the import hint


def _failed(exc: BuildFailed, log: Path | None = None) -> UsageError:
    hint = exc.hint or ""
    if log is not None:
        tail = log.read_text(errors="replace").splitlines()[-15:] if log.is_file() else []
        hint = "\n".join([*tail, f"(whole log: {log})", hint]).strip()
    return UsageError(f"tristage dev: {exc.message}", hint or None)


def app_environment(
    api: Tristage,
    cfg: PipelineConfig,
    environment: str,
    root: Path,
    web: str,
    progress: Progress,
) -> AppEnvironment:
    project = cfg.project.name
    prefix: list[str] = []
    env: dict[str, str] = {}
    using: list[str] = []
    is_python = python.detect(root) or web.split(" ", 1)[0].startswith("python")
    if is_python:
        venv, said = _python(api, cfg, environment, root, progress)
        prefix.append(str(venv / "bin"))
        env["VIRTUAL_ENV"] = str(venv)
        using.append(said)
    if node.detect(root):
        bin_dir, said = _node(api, project, environment, root, progress)
        prefix.append(str(bin_dir))
        using.append(said)
    return AppEnvironment(tuple(prefix), env, tuple(using))


def _last_build(api: Tristage, project: str, environment: str) -> tuple[str, str] | None:
    """The newest deployment of the environment that built, and its build log's text."""
    for dep in api.deploys.list_deployments(project, environment, 20):
        log = api.deploys.log_path(project, dep.id, build=True)
        if dep.artifact and log.is_file():
            return dep.id, log.read_text(errors="replace")
    return None


def _context(
    api: Tristage, cfg: PipelineConfig, environment: str, root: Path, log: BuildLog
) -> BuildContext:
    project = cfg.project.name
    return BuildContext(
        artifact=root,
        env={**base_env(), **api.variables.build_env(project, environment, None), "CI": "1"},
        log=log,
        cache=environment_cache(api, project, environment),
        runtime=Runtimes().choose(cfg, environment).runtime,
        name=f"dev-{project}-{environment}",
        scope=runtime_scope(api),
    )


def _python(
    api: Tristage, cfg: PipelineConfig, environment: str, root: Path, progress: Progress
) -> tuple[Path, str]:
    project = cfg.project.name
    try:
        plan = python.Plan.of(root)
    except BuildFailed as exc:
        raise _failed(exc) from None
    cache = environment_cache(api, project, environment)
    interpreter = f"python {plan.python.version}" if plan.python else "python"
    deps: Path | None = None
    if plan.uses_cache:
        deps = python.cache_entry(cache, plan)
        last = _last_build(api, project, environment)
        if deps is not None:
            if last is not None and f"({plan.key})" in last[1]:
                said = f"the virtualenv of {environment}'s last build ({last[0]})"
            else:
                said = f"the virtualenv {environment} built for these requirements"
        else:
            why = (
                f"the requirements differ from {environment}'s last build ({last[0]})"
                if last is not None
                else f"{environment} has no build yet"
            )
            path = api.home / "dev" / project / environment / "install.log"
            private_mkdirs(path.parent)
            path.unlink(missing_ok=True)
            progress(f"tristage dev: {why}: installing its dependencies (log: {path})")
            log = BuildLog(path, api.variables.redactor(project))
            try:
                deps = python.installed(_context(api, cfg, environment, root, log), plan)
            except BuildFailed as exc:
                raise _failed(exc, path) from None
            finally:
                log.close()
            said = f"a virtualenv built now for this working copy ({why})"
    else:
        said = "a virtualenv without dependencies (none are listed)"
    where = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    venv = api.home / "dev" / project / environment / where / "venv"
    private_mkdirs(venv.parent)
    done = subprocess.run(
        [plan.interpreter, "-c", python.venv_script(), str(venv), str(deps or ""), str(root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise UsageError(
            f"tristage dev: could not make the virtualenv {venv}: {done.stderr.strip()[-300:]}",
            "run 'tristage doctor'",
        )
    return venv, f"{interpreter}, {said}: {venv}"


def _node(
    api: Tristage, project: str, environment: str, root: Path, progress: Progress
) -> tuple[Path, str]:
    modules = root / "node_modules"
    if modules.is_dir():
        return modules / ".bin", f"node, the working copy's node_modules ({modules})"
    try:
        plan = node.Plan.of(root)
    except BuildFailed as exc:
        raise _failed(exc) from None
    cache = environment_cache(api, project, environment)
    cached = cache / "node" / f"{plan.lock_hash}.node_modules"
    if plan.lockfile and (cached / ".tristage-complete").is_file():
        progress(f"tristage dev: copying the node_modules of {environment}'s last build")
        shutil.copytree(cached, modules, symlinks=True)
        (modules / ".tristage-complete").unlink(missing_ok=True)
        return modules / ".bin", (
            f"node {plan.version}, node_modules copied from {environment}'s last build ({modules})"
        )
    manager = shutil.which(plan.manager)
    if manager is None:
        raise UsageError(
            f"tristage dev: the working copy has no node_modules and {plan.manager} is not on PATH",
            f"install {plan.manager}, or run the install yourself",
        )
    title, argv = node.install_argv(plan, [manager])
    progress(f"tristage dev: no node_modules for this lock file: {title}")
    done = subprocess.run(
        argv,
        cwd=root,
        env={**base_env(), "npm_config_cache": str(cache / "npm")},
        timeout=900,
    )
    if done.returncode != 0:
        raise UsageError(
            f"tristage dev: {title} failed with exit code {done.returncode}",
            "see its output above",
        )
    return modules / ".bin", f"node {plan.version}, node_modules installed now ({modules})"
