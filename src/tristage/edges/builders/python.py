"""Python apps: a virtualenv per artifact whose dependencies come from a cache.

Dependencies are installed once per distinct set of dependency files into a cached
virtualenv under `CACHE/python/<hash>`, where CACHE belongs to one environment of
one project: a build of another environment (a feature branch's, say) can neither
read nor write it. Each artifact gets a tiny venv of its own (`--without-pip`,
~50 ms) with a `.pth` file naming the artifact's code first and the cached
site-packages second, and a copy of each of the dependencies' console scripts
(`gunicorn`, `flask`, `pip`) whose interpreter is the artifact's venv: they run
with the app's code, and `pip` in a build command installs into the artifact.
Redeploying unchanged dependencies therefore costs one venv creation instead of
an install.

In the sandbox, an install runs in a fresh directory mounted at the cache entry's
final path (a venv is not relocatable) and is renamed into place only when it
succeeded; afterwards the entry is only ever mounted read-only, so no later build
(nor a release) can change what a deployment that uses it runs.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import secrets
import shutil
import sys
import types
import venv as venv_module
from dataclasses import dataclass
from pathlib import Path

from ...paths import private_mkdirs, private_tree
from ..runtime import Mount
from . import pythons
from .base import BuildContext, BuildFailed

DEP_FILES = (
    "requirements.txt",
    "pyproject.toml",
    "uv.lock",
    "poetry.lock",
    "setup.py",
    "setup.cfg",
)
COMPLETE = ".complete"


def _finish_venv(venv_dir: str, deps: str, ver: str, root: str = "") -> None:
    """The artifact's .pth files and the dependencies' console scripts (gunicorn, flask,
    pip), run by the venv's own python; the app's code is `root` (default: the venv's
    parent). Self-contained: it also runs inside the sandbox (`_VENV_SCRIPT`), by the
    app's interpreter."""
    import os

    root = root or os.path.dirname(venv_dir)
    site = os.path.join(venv_dir, "lib", ver, "site-packages")
    code = os.path.join(root, "src") if os.path.isdir(os.path.join(root, "src")) else root
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    with os.fdopen(os.open(os.path.join(site, "00-tristage-app.pth"), flags, 0o644), "w") as f:
        f.write(code + "\n")
    if not deps:
        return
    with os.fdopen(os.open(os.path.join(site, "10-tristage-deps.pth"), flags, 0o644), "w") as f:
        f.write(os.path.join(deps, "lib", ver, "site-packages") + "\n")
    ours = os.path.join(venv_dir, "bin", "python").encode()
    theirs = os.path.join(deps, "bin", "python").encode()
    bin_dir = os.path.join(deps, "bin")
    for name in sorted(os.listdir(bin_dir)):
        src, dst = os.path.join(bin_dir, name), os.path.join(venv_dir, "bin", name)
        if os.path.islink(src) or not os.path.isfile(src) or os.path.lexists(dst):
            continue
        if os.path.getsize(src) > 1 << 20:  # not a console script
            continue
        with open(src, "rb") as fh:
            body = fh.read()
        lines = body.split(b"\n", 2)  # a long path puts the interpreter on line 2
        head = [i for i, line in enumerate(lines[:2]) if theirs in line]
        if not body.startswith(b"#!") or not head:
            continue
        lines[head[0]] = lines[head[0]].replace(theirs, ours)
        with os.fdopen(os.open(dst, flags, 0o755), "wb") as fh:
            fh.write(b"\n".join(lines))


# Runs inside the sandbox: the artifact's own venv and its .pth files.
_VENV_SCRIPT = (
    "import os, sys, venv\n"
    "venv_dir, deps = sys.argv[1], sys.argv[2]\n"
    "root = sys.argv[3] if len(sys.argv) > 3 else ''\n"
    "venv.EnvBuilder(with_pip=False, clear=True, symlinks=True).create(venv_dir)\n"
    + inspect.getsource(_finish_venv)
    + '_finish_venv(venv_dir, deps, "python%d.%d" % sys.version_info[:2], root)\n'
)


def write_venv(venv: Path, python: pythons.Interpreter, deps: Path | None) -> bool:
    """Write the artifact's venv for `python` from here, without starting an
    interpreter in the sandbox (about 0.3 s of a cached build on a busy machine): the
    layout, `pyvenv.cfg` and activation scripts `venv` writes, with symlinks to the
    interpreter. Only while nothing is in the way: `.venv` absent from the artifact as
    git gave it (no step has run in it yet), so nothing planted redirects a write;
    False leaves it to the sandboxed step."""
    m = re.fullmatch(r"(\d+)\.(\d+)\.\d+.*", python.version)
    if m is None or os.path.lexists(venv) or venv.parent.is_symlink():
        return False
    ver = f"python{m.group(1)}.{m.group(2)}"
    exe = venv / "bin" / "python"
    try:
        venv.mkdir(mode=0o755)  # fails when something appeared meanwhile
        for sub in ("bin", "include", f"lib/{ver}/site-packages"):
            (venv / sub).mkdir(parents=True)
        if sys.maxsize > 2**32:
            os.symlink("lib", venv / "lib64")
        cfg = (
            f"home = {os.path.dirname(python.path)}\ninclude-system-site-packages = false\n"
            f"version = {python.version}\nexecutable = {os.path.realpath(python.path)}\n"
        )
        fd = os.open(venv / "pyvenv.cfg", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW)
        with os.fdopen(fd, "w") as f:
            f.write(cfg)
        os.symlink(python.path, exe)
        for alias in ("python3", ver):
            os.symlink("python", venv / "bin" / alias)
        context = types.SimpleNamespace(
            env_dir=str(venv), env_name=venv.name, prompt=f"({venv.name}) ",
            bin_name="bin", bin_path=str(venv / "bin"), env_exe=str(exe),
        )  # fmt: skip
        venv_module.EnvBuilder(symlinks=True).setup_scripts(context)
        _finish_venv(str(venv), str(deps or ""), ver)
    except OSError:
        shutil.rmtree(venv, ignore_errors=True)
        return False
    return True


def detect(root: Path) -> bool:
    return any((root / f).is_file() for f in ("requirements.txt", "pyproject.toml", "setup.py"))


def uv_binary() -> str | None:
    """uv (a dependency of tristage, next to its interpreter), else one on PATH."""
    own = Path(sys.executable).with_name("uv")
    if own.is_file() and os.access(own, os.X_OK):
        return str(own.resolve())
    found = shutil.which("uv")
    return str(Path(found).resolve()) if found else None


def base_python() -> str:
    return pythons.default_python()


def deps_key(root: Path, python: pythons.Interpreter | None = None) -> str:
    h = hashlib.sha256()
    if python is None:
        h.update(f"{sys.version_info[:3]}|{base_python()}".encode())
    else:
        h.update(f"{python.version}|{python.path}".encode())
    for name in DEP_FILES:
        p = root / name
        if p.is_file():
            h.update(name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:20]


def _has_entries(root: Path) -> bool:
    """False for a requirements.txt with nothing but comments (and no pyproject)."""
    if (root / "pyproject.toml").is_file() or (root / "setup.py").is_file():
        return True
    req = root / "requirements.txt"
    return any(
        line.split("#", 1)[0].strip() for line in req.read_text(encoding="utf-8").splitlines()
    )


@dataclass(frozen=True)
class Plan:
    """What the builder decided from the artifact as git gave it, before any step ran."""

    uses_cache: bool
    key: str
    has_entries: bool
    requirements: bool  # requirements.txt (else the project itself is installed)
    python: pythons.Interpreter | None = None  # None: tristage's own (tests of old plans)

    @classmethod
    def of(cls, root: Path) -> Plan:
        uses = detect(root)
        python = pythons.choose(root)
        return cls(
            uses_cache=uses,
            key=deps_key(root, python) if uses else "",
            has_entries=_has_entries(root) if uses else False,
            requirements=(root / "requirements.txt").is_file(),
            python=python,
        )

    @property
    def interpreter(self) -> str:
        return self.python.path if self.python else base_python()

    @property
    def interpreter_mounts(self) -> tuple[Mount, ...]:
        """The interpreter's installation when the sandbox does not show it already."""
        if self.python is None or _shown(Path(self.python.prefix)):
            return ()
        return (Mount(Path(self.python.prefix)),)


def _shown(prefix: Path) -> bool:
    prefix = prefix.resolve()
    return (
        prefix == Path("/usr")
        or Path("/usr") in prefix.parents
        or (prefix == Path(sys.base_prefix).resolve())
    )


def _install(ctx: BuildContext, plan: Plan, venv: Path, mount: Mount) -> None:
    py = str(venv / "bin" / "python")
    pip_cache = ctx.cache / "pip"
    private_mkdirs(pip_cache)
    env = {
        **ctx.env,
        "VIRTUAL_ENV": str(venv),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_CACHE_DIR": str(pip_cache),
    }
    mounts = (mount, Mount(pip_cache, writable=True), *plan.interpreter_mounts)
    if not plan.has_entries:
        ctx.step(
            "python -m venv (no dependencies listed)",
            [plan.interpreter, "-m", "venv", "--without-pip", str(venv)],
            env=env,
            mounts=mounts,
        )
    else:
        what = ["-r", "requirements.txt"] if plan.requirements else ["."]
        installed = False
        title = "requirements.txt" if plan.requirements else "the project's dependencies"
        uv = uv_binary()
        if uv is not None:
            uv_cache = ctx.cache / "uv"
            private_mkdirs(uv_cache)
            uv_env = {
                **env, "UV_CACHE_DIR": str(uv_cache), "UV_PYTHON_DOWNLOADS": "never",
                # copies, never hard links into the cache: a sealed entry shares no inode
                # with what a later build may write
                "UV_LINK_MODE": "copy", "UV_NO_CONFIG": "1",
                # the entry is read-only to every release: without .pyc files each process
                # of each release compiles its dependencies again when it starts
                "UV_COMPILE_BYTECODE": "1",
            }  # fmt: skip
            uv_mounts = (*mounts, Mount(Path(uv)), Mount(uv_cache, writable=True))
            try:
                ctx.step("uv venv", [uv, "venv", "--seed", "-q", "--python", plan.interpreter,
                                     str(venv)], env=uv_env, mounts=uv_mounts)  # fmt: skip
                ctx.step(f"uv pip install {title}", [uv, "pip", "install", "--python", py, *what],
                         env=uv_env, mounts=uv_mounts)  # fmt: skip
                installed = True
            except BuildFailed as exc:
                if ctx.canceled:
                    raise
                ctx.log.line(f"  uv could not install ({exc.message}); trying pip")
            finally:
                private_tree(uv_cache)  # uv writes its cache with its own modes
        if not installed:
            ctx.step("python -m venv", [plan.interpreter, "-m", "venv", "--clear", str(venv)],
                     env=env, mounts=mounts)  # fmt: skip
            installer = [py, "-m", "pip", "install", "--no-input", "--progress-bar", "off"]
            # the project's own code is taken from the artifact (first on sys.path)
            ctx.step(f"pip install {title}", [*installer, *what], env=env, mounts=mounts)
    ctx.step("seal the dependencies", ["/bin/sh", "-c", f"touch {venv}/{COMPLETE}"], env=env,
             mounts=mounts)  # fmt: skip


def cache_entry(cache: Path, plan: Plan) -> Path | None:
    """The installed cache entry of the plan's dependencies, None when there is none."""
    cached = cache / "python" / plan.key
    return cached if (cached / COMPLETE).is_file() else None


def venv_script() -> str:
    """The script that makes a venv over a cache entry: `python -c SCRIPT VENV DEPS
    [CODE_ROOT]` (the code root defaults to the venv's parent)."""
    return _VENV_SCRIPT


def installed(ctx: BuildContext, plan: Plan) -> Path:
    """The cache entry of the plan's dependencies, installed if it is not there yet."""
    return _cached(ctx, plan)


def _cached(ctx: BuildContext, plan: Plan) -> Path:
    """The cache entry of the plan's dependencies, installed if it is not there yet."""
    cached = ctx.cache / "python" / plan.key
    if (cached / COMPLETE).is_file():
        ctx.log.line(f"> dependencies: cache hit ({plan.key})")
        return cached
    ctx.log.line(f"> dependencies: cache miss ({plan.key}), installing")
    private_mkdirs(cached.parent)
    if not ctx.sandboxed:  # no mount namespace: build at the final path
        shutil.rmtree(cached, ignore_errors=True)
        cached.mkdir()
        try:
            _install(ctx, plan, cached, Mount(cached, writable=True))
        except BuildFailed:
            shutil.rmtree(cached, ignore_errors=True)
            raise
        return cached
    partial = cached.with_name(f"{plan.key}.partial-{secrets.token_hex(4)}")
    partial.mkdir(mode=0o700)
    partial.chmod(0o700)
    try:
        _install(ctx, plan, cached, Mount(partial, target=cached, writable=True))
        if (partial / COMPLETE).is_file() and not (partial / COMPLETE).is_symlink():
            try:
                partial.rename(cached)
            except OSError:  # another build of the same environment got there first
                pass
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    if not (cached / COMPLETE).is_file():
        raise BuildFailed("the dependencies could not be installed", "see the build log above")
    return cached


def build(ctx: BuildContext, plan: Plan) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Prepare `.venv` in the artifact; returns (PATH prefix, read-only layers)."""
    if plan.python is not None:
        ctx.log.line(f"> {plan.python.describe()}")
    deps = _cached(ctx, plan) if plan.uses_cache else None
    venv = ctx.artifact / ".venv"
    # the release needs the interpreter's installation too when the sandbox hides it
    layers = tuple(str(p) for p in ((deps,) if deps else ())) + tuple(
        str(m.source) for m in plan.interpreter_mounts
    )
    ctx.log.line("> virtualenv")
    if plan.python is None or not write_venv(venv, plan.python, deps):
        ctx.step(
            "virtualenv (in the sandbox)",
            [plan.interpreter, "-c", _VENV_SCRIPT, str(venv), str(deps or "")],
            mounts=tuple(Mount(Path(p)) for p in layers),
        )
    ctx.log.line(
        f"> virtualenv ready ({'cached dependencies' if deps else 'standard library only'})"
    )
    return (str(venv / "bin"),), layers
