"""Node apps: `npm ci` (or `npm install` without a lockfile), then `npm run build`.

npm's download cache belongs to the environment (CACHE/npm), like Python's."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ...paths import private_dir
from ..runtime import Mount
from .base import BuildContext, BuildFailed


def detect(root: Path) -> bool:
    return (root / "package.json").is_file()


def _scripts(root: Path) -> dict[str, str]:
    try:
        data = json.loads((root / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BuildFailed(f"package.json is not valid JSON: {exc}", "fix package.json") from None
    scripts = data.get("scripts") or {} if isinstance(data, dict) else {}
    return {str(k): str(v) for k, v in scripts.items()} if isinstance(scripts, dict) else {}


@dataclass(frozen=True)
class Plan:
    scripts: dict[str, str]
    lockfile: bool

    @classmethod
    def of(cls, root: Path) -> Plan:
        return cls(_scripts(root), (root / "package-lock.json").is_file())


def build(ctx: BuildContext, plan: Plan) -> tuple[tuple[str, ...], str | None]:
    """Install and build; returns (PATH prefix, web command from `npm start` if any)."""
    root = ctx.artifact
    npm = shutil.which("npm", path=ctx.env.get("PATH"))
    if npm is None:
        raise BuildFailed("package.json found but npm is not on PATH", "install Node.js and npm")
    cache = ctx.cache / "npm"
    private_dir(cache)
    env = {**ctx.env, "npm_config_cache": str(cache), "npm_config_fund": "false"}
    env["npm_config_update_notifier"] = "false"
    mounts = (Mount(cache, writable=True),)
    if plan.lockfile:
        ctx.step("npm ci", [npm, "ci", "--prefer-offline", "--no-audit"], env=env, mounts=mounts)
    else:
        ctx.step("npm install", [npm, "install", "--prefer-offline", "--no-audit"], env=env,
                 mounts=mounts)  # fmt: skip
    if "build" in plan.scripts:
        ctx.step("npm run build", [npm, "run", "build"], env=env, mounts=mounts)
    web = "npm start" if "start" in plan.scripts else None
    return (str(root / "node_modules" / ".bin"),), web
