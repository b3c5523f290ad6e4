"""Node apps: `npm ci` (or `npm install` without a lockfile), then `npm run build`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .base import BuildContext, BuildFailed


def detect(root: Path) -> bool:
    return (root / "package.json").is_file()


def _scripts(root: Path) -> dict[str, str]:
    try:
        data = json.loads((root / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BuildFailed(f"package.json is not valid JSON: {exc}", "fix package.json") from None
    scripts = data.get("scripts") or {}
    return {str(k): str(v) for k, v in scripts.items()} if isinstance(scripts, dict) else {}


def build(ctx: BuildContext) -> tuple[tuple[str, ...], str | None]:
    """Install and build; returns (PATH prefix, web command from `npm start` if any)."""
    root = ctx.artifact
    npm = shutil.which("npm", path=ctx.env.get("PATH"))
    if npm is None:
        raise BuildFailed("package.json found but npm is not on PATH", "install Node.js and npm")
    scripts = _scripts(root)
    env = {**ctx.env, "npm_config_cache": str(ctx.cache / "npm"), "npm_config_fund": "false"}
    env["npm_config_update_notifier"] = "false"
    if (root / "package-lock.json").is_file():
        ctx.step("npm ci", [npm, "ci", "--prefer-offline", "--no-audit"], env=env)
    else:
        ctx.step("npm install", [npm, "install", "--prefer-offline", "--no-audit"], env=env)
    if "build" in scripts:
        ctx.step("npm run build", [npm, "run", "build"], env=env)
    web = "npm start" if "start" in scripts else None
    return (str(root / "node_modules" / ".bin"),), web
