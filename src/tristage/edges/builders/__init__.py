"""Builders: turn an artifact directory into something runnable.

Detection order: Python (pyproject.toml / requirements.txt / setup.py, or a
`python` web command), Node (package.json); both may apply. Then the `build`
command of tristage.toml runs in the artifact with the build-time variables.
The web command is tristage.toml's `web`, else the Procfile's `web:` line,
else `npm start` for Node apps; a `release:` line is the migration step (read by
the control plane from git); every other process type runs beside the web
process (the build log names them; `docs/processes.md`).

Everything the builders need to know from the artifact is read before the first
step runs: after that, the artifact holds what the deployment's code made of it.
"""

from __future__ import annotations

from pathlib import Path

from ...domain.config import procfile_entries, procfile_web
from ..runtime import Mount
from . import node, python
from .base import BuildContext, BuildFailed, BuildLog, BuildResult

__all__ = ["BuildContext", "BuildFailed", "BuildLog", "BuildResult", "build"]


def build(ctx: BuildContext, web: str | None, build_cmd: str | None) -> BuildResult:
    root = ctx.artifact
    procfile = root / "Procfile"
    if procfile.is_file() and not procfile.is_symlink():
        types = list(procfile_entries(procfile.read_text(encoding="utf-8", errors="replace")))
        if types:
            ctx.log.line(f"> Procfile process types: {', '.join(types)}")
    web = web or procfile_web(root)
    is_python = python.detect(root) or (web or "").split(" ", 1)[0].startswith("python")
    py_plan = python.Plan.of(root) if is_python else None
    node_plan = node.Plan.of(root) if node.detect(root) else None
    prefix: list[str] = []
    kinds: list[str] = []
    layers: tuple[str, ...] = ()
    if py_plan is not None:
        kinds.append("python")
        py_prefix, layers = python.build(ctx, py_plan)
        prefix.extend(py_prefix)
    if node_plan is not None:
        kinds.append("node")
        node_prefix, node_web = node.build(ctx, node_plan)
        prefix.extend(node_prefix)
        web = web or node_web
    if build_cmd:
        path = ":".join([*prefix, ctx.env.get("PATH", "")])
        env = {**ctx.env, "PATH": path}
        if py_plan is not None:  # the artifact's venv is the active one (pip, uv, poetry)
            env["VIRTUAL_ENV"] = str(root / ".venv")
        ctx.step(
            f"build: {build_cmd}",
            build_cmd,
            env=env,
            mounts=tuple(Mount(Path(p)) for p in layers),
        )
    if not web:
        raise BuildFailed(
            "no web command",
            "set `web` in tristage.toml's [app], or add a Procfile with a `web:` line",
        )
    runtimes = []
    if py_plan is not None and py_plan.python is not None:
        runtimes.append(f"python {py_plan.python.version}")
    if node_plan is not None and node_plan.version:
        runtimes.append(f"node {node_plan.version}")
    return BuildResult(
        kind="+".join(kinds) or "static", web=web, path_prefix=tuple(prefix), layers=layers,
        runtime=" + ".join(runtimes) or None,
    )  # fmt: skip
