"""Python apps: a virtualenv per artifact whose dependencies come from a shared cache.

Dependencies are installed once per distinct set of dependency files into a cached
virtualenv under `CACHE/python/<hash>`; each artifact gets a tiny venv of its own
(`--without-pip`, ~50 ms) with a `.pth` file naming the artifact's code first and
the cached site-packages second. Redeploying unchanged dependencies therefore
costs one venv creation instead of an install.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from .base import BuildContext, BuildFailed

DEP_FILES = (
    "requirements.txt",
    "pyproject.toml",
    "uv.lock",
    "poetry.lock",
    "setup.py",
    "setup.cfg",
)


def detect(root: Path) -> bool:
    return any((root / f).is_file() for f in ("requirements.txt", "pyproject.toml", "setup.py"))


def base_python() -> str:
    return str(getattr(sys, "_base_executable", None) or sys.executable)


def deps_key(root: Path) -> str:
    h = hashlib.sha256()
    h.update(f"{sys.version_info[:3]}|{base_python()}".encode())
    for name in DEP_FILES:
        p = root / name
        if p.is_file():
            h.update(name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:20]


def _site_packages(venv: Path) -> Path:
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / ver / "site-packages"


def _uses_cache(root: Path) -> bool:
    return any((root / f).is_file() for f in ("requirements.txt", "pyproject.toml", "setup.py"))


def _has_entries(root: Path) -> bool:
    """False for a requirements.txt with nothing but comments (and no pyproject)."""
    if (root / "pyproject.toml").is_file() or (root / "setup.py").is_file():
        return True
    req = root / "requirements.txt"
    return any(
        line.split("#", 1)[0].strip() for line in req.read_text(encoding="utf-8").splitlines()
    )


def _install(ctx: BuildContext, root: Path, venv: Path) -> None:
    uv = shutil.which("uv", path=ctx.env.get("PATH"))
    py = str(venv / "bin" / "python")
    env = {**ctx.env, "VIRTUAL_ENV": str(venv), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    if uv:
        ctx.step("uv venv", [uv, "venv", "-q", "--python", base_python(), str(venv)], env=env)
        installer = [uv, "pip", "install", "--python", py]
    else:
        ctx.step("python -m venv", [base_python(), "-m", "venv", str(venv)], env=env)
        installer = [py, "-m", "pip", "install", "--no-input"]
    if (root / "requirements.txt").is_file():
        ctx.step("install requirements.txt", [*installer, "-r", "requirements.txt"], env=env)
    elif (root / "pyproject.toml").is_file() or (root / "setup.py").is_file():
        # the project's own code is taken from the artifact (first on sys.path)
        ctx.step("install the project's dependencies", [*installer, "."], env=env)


def build(ctx: BuildContext) -> tuple[str, ...]:
    """Prepare `.venv` in the artifact; returns the PATH prefix for the release."""
    root = ctx.artifact
    deps = None
    if _uses_cache(root):
        key = deps_key(root)
        cached = ctx.cache / "python" / key
        if (cached / ".complete").is_file():
            ctx.log.line(f"> dependencies: cache hit ({key})")
        else:
            ctx.log.line(f"> dependencies: cache miss ({key}), installing")
            cached.parent.mkdir(parents=True, exist_ok=True)
            # a venv is not relocatable: build it at its final path, mark it complete last
            shutil.rmtree(cached, ignore_errors=True)
            try:
                if _has_entries(root):
                    _install(ctx, root, cached)
                else:
                    ctx.step(
                        "python -m venv (no dependencies listed)",
                        [base_python(), "-m", "venv", "--without-pip", str(cached)],
                    )
            except BuildFailed:
                shutil.rmtree(cached, ignore_errors=True)
                raise
            (cached / ".complete").write_text(key)
        deps = _site_packages(cached)
    venv = root / ".venv"
    proc = subprocess.run(
        [base_python(), "-m", "venv", "--without-pip", str(venv)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BuildFailed(f"could not create the virtualenv: {proc.stderr.strip()}")
    site = _site_packages(venv)
    code = root / "src" if (root / "src").is_dir() else root
    (site / "00-tristage-app.pth").write_text(f"{code}\n")
    if deps is not None:
        (site / "10-tristage-deps.pth").write_text(f"{deps}\n")
    ctx.log.line(
        f"> virtualenv ready ({'cached dependencies' if deps else 'standard library only'})"
    )
    return (str(venv / "bin"),)
