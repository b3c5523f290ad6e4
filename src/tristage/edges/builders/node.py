"""Node apps: the lock file names the package manager (`package-lock.json`: `npm ci`;
`yarn.lock`: yarn; `pnpm-lock.yaml`: pnpm; none: `npm install`), then `build` runs.

The installed Node must satisfy `engines.node` of package.json (else `.nvmrc`), or the
build fails naming both. yarn and pnpm run from PATH, else through corepack (shipped
with Node), which fetches the version `packageManager` names into the environment's
cache. `node_modules` is reused between builds of the same lock file (and Node and
package manager), and so is Next.js's build cache (`.next/cache`, per lock file): both
are copied from the environment's cache (CACHE/node) into the artifact, and back after
a build that succeeded. npm's download cache belongs to the environment too.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...domain.semver import parse_version, satisfies
from ...paths import private_mkdirs, private_tree
from ..runtime import Mount
from .base import BuildContext, BuildFailed

LOCKS = (("pnpm-lock.yaml", "pnpm"), ("yarn.lock", "yarn"), ("package-lock.json", "npm"))


def detect(root: Path) -> bool:
    return (root / "package.json").is_file()


def _package(root: Path) -> dict[str, Any]:
    try:
        data = json.loads((root / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BuildFailed(f"package.json is not valid JSON: {exc}", "fix package.json") from None
    return data if isinstance(data, dict) else {}


def node_version() -> str | None:
    node = shutil.which("node")
    if node is None:
        return None
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().removeprefix("v") or None


def _required(root: Path, pkg: dict[str, Any]) -> tuple[str, str] | None:
    engines = pkg.get("engines")
    if isinstance(engines, dict) and isinstance(engines.get("node"), str):
        return engines["node"], f"package.json engines.node ({engines['node']})"
    nvmrc = root / ".nvmrc"
    if nvmrc.is_file() and not nvmrc.is_symlink():
        text = nvmrc.read_text(errors="replace").strip()
        if text:
            return text, f".nvmrc ({text})"
    return None


def check_node(root: Path, pkg: dict[str, Any], installed: str | None) -> str:
    """The installed Node's version when it satisfies what the app asks for."""
    if installed is None:
        raise BuildFailed("package.json found but node is not on PATH", "install Node.js and npm")
    asked = _required(root, pkg)
    if asked is None:
        return installed
    spec, source = asked
    version = parse_version(installed)
    try:
        ok = version is not None and satisfies(version, spec)
    except ValueError:
        raise BuildFailed(f"{source}: {spec!r} is not a version range",
                          "write a range like 20, >=18 or ^20.11") from None  # fmt: skip
    if not ok:
        raise BuildFailed(
            f"Node {spec} (asked for in {source}) is not installed on this machine "
            f"(installed: {installed})",
            f"install a Node that satisfies {spec} on the machine running tristage (nodejs.org, "
            "nvm, or the distribution's package), or change the range",
        )
    return installed


@dataclass(frozen=True)
class Plan:
    scripts: dict[str, str]
    lockfile: bool
    manager: str = "npm"  # npm | yarn | pnpm
    version: str | None = None  # the installed Node (checked against the app's request)
    lock_hash: str = ""  # of the lock file, package.json, Node and the manager
    package_manager: str | None = None  # package.json's `packageManager` (yarn@4.1.0)
    berry: bool = False  # yarn 2+ (its lock file has __metadata)

    @classmethod
    def of(cls, root: Path) -> Plan:
        pkg = _package(root)
        scripts = pkg.get("scripts") or {}
        scripts = {str(k): str(v) for k, v in scripts.items()} if isinstance(scripts, dict) else {}
        version = check_node(root, pkg, node_version())
        manager, lock = "npm", None
        for name, kind in LOCKS:
            if (root / name).is_file() and not (root / name).is_symlink():
                manager, lock = kind, root / name
                break
        pm = pkg.get("packageManager")
        h = hashlib.sha256(f"{version}|{manager}|{pm}".encode())
        if lock is not None:
            h.update(lock.read_bytes())
        berry = manager == "yarn" and lock is not None and b"__metadata:" in lock.read_bytes()
        return cls(scripts, lock is not None, manager, version, h.hexdigest()[:20],
                   pm if isinstance(pm, str) else None, berry)  # fmt: skip


def _manager(ctx: BuildContext, plan: Plan) -> list[str]:
    """How to run the plan's package manager: from PATH, else through corepack."""
    path = ctx.env.get("PATH")
    if plan.manager == "npm":
        npm = shutil.which("npm", path=path)
        if npm is None:
            raise BuildFailed(
                "package.json found but npm is not on PATH", "install Node.js and npm"
            )
        return [npm]
    own = shutil.which(plan.manager, path=path)
    if own is not None:
        return [own]
    corepack = shutil.which("corepack", path=path)
    if corepack is None:
        raise BuildFailed(
            f"{plan.manager} is asked for by its lock file but neither {plan.manager} nor "
            "corepack is on PATH",
            f"install {plan.manager} ('npm install -g {plan.manager}') or corepack "
            "('npm install -g corepack') on the machine running tristage",
        )
    return [corepack, plan.manager]


def _install_argv(plan: Plan, pm: list[str]) -> tuple[str, list[str]]:
    if plan.manager == "yarn":
        flag = "--immutable" if plan.berry else "--frozen-lockfile"
        return f"yarn install {flag}", [*pm, "install", flag]
    if plan.manager == "pnpm":
        return "pnpm install --frozen-lockfile", [*pm, "install", "--frozen-lockfile"]
    if plan.lockfile:
        return "npm ci", [*pm, "ci", "--prefer-offline", "--no-audit"]
    return "npm install", [*pm, "install", "--prefer-offline", "--no-audit"]


def install_argv(plan: Plan, pm: list[str]) -> tuple[str, list[str]]:
    """(title, argv) of the install the plan's lock file asks for."""
    return _install_argv(plan, pm)


def _copy(ctx: BuildContext, title: str, src: Path, dst: Path, mounts: tuple[Mount, ...]) -> None:
    ctx.step(title, ["/bin/sh", "-c", 'rm -rf "$2" && mkdir -p "$(dirname "$2")" && '
                     'cp -a --reflink=auto "$1" "$2"', "copy", str(src), str(dst)],
             mounts=mounts)  # fmt: skip


def build(ctx: BuildContext, plan: Plan) -> tuple[tuple[str, ...], str | None]:
    """Install and build; returns (PATH prefix, web command from `npm start` if any)."""
    root = ctx.artifact
    pm = _manager(ctx, plan)
    ctx.log.line(f"> node {plan.version} ({plan.manager}"
                 f"{' from its lock file' if plan.lockfile else ''})")  # fmt: skip
    cache = ctx.cache / "npm"
    private_mkdirs(cache)
    store = ctx.cache / "node"
    private_mkdirs(store)
    corepack_home = ctx.cache / "corepack"
    private_mkdirs(corepack_home)
    env = {
        **ctx.env, "npm_config_cache": str(cache), "npm_config_fund": "false",
        "npm_config_update_notifier": "false", "COREPACK_HOME": str(corepack_home),
        "COREPACK_ENABLE_DOWNLOAD_PROMPT": "0", "COREPACK_DEFAULT_TO_LATEST": "0",
        "YARN_CACHE_FOLDER": str(cache / "yarn"),
    }  # fmt: skip
    if plan.manager == "pnpm":  # npm warns about a setting it does not know
        env["npm_config_store_dir"] = str(cache / "pnpm-store")
    # the install and the build see the download caches; only the copy steps see the
    # cache of installed node_modules (read-only to reuse it, writable to save it)
    mounts = (Mount(cache, writable=True), Mount(corepack_home, writable=True))
    reading, saving = (Mount(store),), (Mount(store, writable=True),)
    modules = store / f"{plan.lock_hash}.node_modules"
    if plan.lockfile and (modules / ".tristage-complete").is_file():
        _copy(ctx, "node_modules: cache hit", modules, root / "node_modules", reading)
    else:
        title, argv = _install_argv(plan, pm)
        try:
            ctx.step(title, argv, env=env, mounts=mounts)
        finally:
            private_tree(corepack_home)  # the tools write their caches with their own modes
            private_tree(cache)
        if plan.lockfile and (root / "node_modules").is_dir():
            partial = store / f"{plan.lock_hash}.partial"
            _copy(ctx, "node_modules: saved for the next build", root / "node_modules", partial,
                  saving)  # fmt: skip
            (partial / ".tristage-complete").touch()
            private_tree(partial)
            shutil.rmtree(modules, ignore_errors=True)
            partial.rename(modules)
    next_cache = store / f"{plan.lock_hash}.next-cache"
    if "build" in plan.scripts:
        if next_cache.is_dir():
            _copy(ctx, ".next/cache: reused", next_cache, root / ".next" / "cache", reading)
        ctx.step(f"{plan.manager} run build", [*pm, "run", "build"], env=env, mounts=mounts)
        if (root / ".next" / "cache").is_dir():
            _copy(ctx, ".next/cache: saved", root / ".next" / "cache", next_cache, saving)
    web = "npm start" if "start" in plan.scripts else None
    return (str(root / "node_modules" / ".bin"),), web
