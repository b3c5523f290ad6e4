"""Builders: turn an artifact directory into something runnable.

Detection order: Python (pyproject.toml / requirements.txt / setup.py, or a
`python` web command), Node (package.json); both may apply. Then the `build`
command of tristage.toml runs in the artifact with the build-time variables.
The web command is tristage.toml's `web`, else the Procfile's `web:` line,
else `npm start` for Node apps.
"""

from __future__ import annotations

from ...domain.config import procfile_web
from . import node, python
from .base import BuildContext, BuildFailed, BuildLog, BuildResult

__all__ = ["BuildContext", "BuildFailed", "BuildLog", "BuildResult", "build"]


def build(ctx: BuildContext, web: str | None, build_cmd: str | None) -> BuildResult:
    root = ctx.artifact
    web = web or procfile_web(root)
    prefix: list[str] = []
    kinds: list[str] = []
    is_python = python.detect(root) or (web or "").split(" ", 1)[0].startswith("python")
    if is_python:
        kinds.append("python")
        prefix.extend(python.build(ctx))
    if node.detect(root):
        kinds.append("node")
        node_prefix, node_web = node.build(ctx)
        prefix.extend(node_prefix)
        web = web or node_web
    if build_cmd:
        path = ":".join([*prefix, ctx.env.get("PATH", "")])
        ctx.step(f"build: {build_cmd}", [build_cmd], env={**ctx.env, "PATH": path}, shell=True)
    if not web:
        raise BuildFailed(
            "no web command",
            "set `web` in tristage.toml's [app], or add a Procfile with a `web:` line",
        )
    return BuildResult(kind="+".join(kinds) or "static", web=web, path_prefix=tuple(prefix))
