"""Which Python an app is built and run with: the version it asks for in
`.python-version`, `runtime.txt` (`python-3.12.1`) or pyproject's `requires-python`,
found among the interpreters of this machine (tristage's own first when it fits, then
`/usr/bin/python3.N`, pyenv's versions, then what `uv python find` knows). No request:
tristage's own interpreter. A request nothing here satisfies is a build error naming
the version, where it was asked for, what is installed and how to get it.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from .base import BuildFailed

_PROBE = "import sys; print('%d.%d.%d' % sys.version_info[:3]); print(sys.base_prefix)"


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: str  # 3.12.1
    prefix: str  # its installation (mounted read-only into the sandbox when outside /usr)
    source: str  # where the version was asked for ("default": nothing asked)

    def describe(self) -> str:
        return f"python {self.version} ({self.path}; {self.source})"


def default_python() -> str:
    return str(getattr(sys, "_base_executable", None) or sys.executable)


def requested(root: Path) -> tuple[SpecifierSet, str] | None:
    """The version the app asks for, and in which file; None when it asks for none."""
    pv = root / ".python-version"
    if pv.is_file() and not pv.is_symlink():
        lines = [x.strip() for x in pv.read_text(errors="replace").splitlines()]
        first = next((x for x in lines if x and not x.startswith("#")), "")
        if first:
            return _spec(first, ".python-version"), f".python-version ({first})"
    rt = root / "runtime.txt"
    if rt.is_file() and not rt.is_symlink():
        text = rt.read_text(errors="replace").strip()
        if text:
            return _spec(text.removeprefix("python-"), "runtime.txt"), f"runtime.txt ({text})"
    pp = root / "pyproject.toml"
    if pp.is_file() and not pp.is_symlink():
        try:
            req = tomllib.loads(pp.read_text(errors="replace")).get("project", {})
        except tomllib.TOMLDecodeError:
            return None
        rp = req.get("requires-python") if isinstance(req, dict) else None
        if isinstance(rp, str) and rp.strip():
            try:
                return SpecifierSet(rp), f"pyproject.toml requires-python ({rp})"
            except InvalidSpecifier:
                raise BuildFailed(
                    f"pyproject.toml: requires-python {rp!r} is not a version specifier",
                    'e.g. requires-python = ">=3.11"',
                ) from None
    return None


def _spec(text: str, where: str) -> SpecifierSet:
    """`3.12` -> ==3.12.*, `3.12.1` -> ==3.12.1; anything else is an error."""
    m = re.fullmatch(r"(?:cpython-|python)?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if m is None:
        raise BuildFailed(
            f"{where}: {text!r} is not a CPython version",
            "write a version like 3.12 or 3.12.1",
        )
    major, minor, patch = m.groups()
    return SpecifierSet(f"=={major}.{minor}.{patch}" if patch else f"=={major}.{minor}.*")


_PROBED: dict[tuple[str, int, int, int], tuple[str, str]] = {}


def _probe(path: str) -> tuple[str, str] | None:
    """(version, base prefix) of the interpreter at `path`, asked once per version of
    its file (its inode, size and modification time)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _PROBED:
        found = _ask(path)
        if found is None:
            return None
        _PROBED[key] = found
    return _PROBED[key]


def _ask(path: str) -> tuple[str, str] | None:
    try:
        out = subprocess.run([path, "-I", "-c", _PROBE], capture_output=True, text=True,
                             timeout=10, check=True).stdout.split("\n")  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return (out[0], out[1]) if len(out) >= 2 else None


def candidates() -> list[str]:
    """Interpreters of this machine, tristage's own first."""
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = [
        default_python(),
        *sorted(glob.glob("/usr/bin/python3.[0-9]*"), reverse=True),
        *sorted(glob.glob("/usr/local/bin/python3.[0-9]*"), reverse=True),
        *sorted(glob.glob(os.path.join(pyenv, "versions", "*", "bin", "python3")), reverse=True),
    ]
    out: list[str] = []
    for p in found:
        if re.search(r"python3\.\d+$|python3$", p) and os.access(p, os.X_OK) and p not in out:
            out.append(p)
    return out


def _uv_find(spec: SpecifierSet) -> str | None:
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if not os.access(uv, os.X_OK):
        return None
    try:
        r = subprocess.run([uv, "python", "find", "--no-python-downloads", str(spec)],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    path = r.stdout.strip()
    return path if r.returncode == 0 and path else None


def choose(root: Path, search: list[str] | None = None) -> Interpreter:
    """The interpreter for the app in `root` (see the module's docstring)."""
    asked = requested(root)
    default = default_python()
    if asked is None:
        probed = _probe(default)
        version, prefix = probed or (".".join(map(str, sys.version_info[:3])), sys.base_prefix)
        return Interpreter(default, version, prefix, "default")
    spec, source = asked
    seen: dict[str, tuple[str, str]] = {}
    for path in search if search is not None else candidates():
        probed = _probe(path)
        if probed is None:
            continue
        seen[path] = probed
        if _fits(spec, probed[0]):
            return Interpreter(path, probed[0], probed[1], source)
    if search is None:
        found = _uv_find(spec)
        probed = _probe(found) if found else None
        if found and probed and _fits(spec, probed[0]):
            return Interpreter(found, probed[0], probed[1], source)
    versions = sorted({v for v, _ in seen.values()}, key=Version)
    raise BuildFailed(
        f"Python {spec} (asked for in {source}) is not installed on this machine "
        f"(installed: {', '.join(versions) or 'none found'})",
        f"install it ('uv python install {_plain(spec)}' or 'pyenv install {_plain(spec)}' "
        "on the machine running tristage), or ask for an installed version",
    )


def _fits(spec: SpecifierSet, version: str) -> bool:
    try:
        return Version(version) in spec
    except InvalidVersion:
        return False


def _plain(spec: SpecifierSet) -> str:
    text = str(spec)
    m = re.fullmatch(r"==(\d+\.\d+(?:\.\d+)?)(?:\.\*)?", text)
    return m.group(1) if m else text
