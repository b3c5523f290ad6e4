"""The layers hold: read from every module's imports (parsed, never executed).

- the faces (`cli/`, `http/`) import only `tristage.api`, `tristage.errors`,
  `tristage.domain`, the package root (its version) and their own package;
- `domain/` imports only `domain/` and `tristage.errors`.

The standard library and third-party packages are open to every layer. Imports under
`if TYPE_CHECKING:` and inside functions count like any other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import tristage

SRC = Path(tristage.__file__).parent

FACES = ("cli", "http")
FACE_MAY_IMPORT = {"", "api", "errors", "domain"}  # "" is the package root (__version__)
DOMAIN_MAY_IMPORT = {"domain", "errors"}

# (importing module, imported module) -> why it cannot move yet. Keep it short (it is
# empty: everything could move); an entry that no longer matches an import fails the
# test, so it is removed when it is fixed.
ALLOWED: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    imported: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.imported}"


def module_name(root: Path, path: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(
    module: str, is_package: bool, tree: ast.AST, modules: set[str]
) -> list[tuple[int, str]]:
    """Every (line, absolute module name) that `module`'s source imports; `modules`
    tells a submodule (`from . import views`) from an attribute (`from .. import x`)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            if node.module:
                out.append((node.lineno, target))
            else:
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    out.append((node.lineno, sub if sub in modules else target))
    return out


def layer(name: str, top: str) -> str | None:
    """The layer of module `name` inside package `top` ("" for the root), else None."""
    parts = name.split(".")
    if parts[0] != top:
        return None
    return parts[1] if len(parts) > 1 else ""


def violations(root: Path, allowed: dict[tuple[str, str], str] | None = None) -> list[Violation]:
    """The imports of the package at `root` that break the rules (minus `allowed`)."""
    allowed = ALLOWED if allowed is None else allowed
    top = root.name
    modules = {module_name(root, p) for p in root.rglob("*.py")}
    found: list[Violation] = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(root, path)
        own = layer(module, top)
        if own in FACES:
            may = FACE_MAY_IMPORT | {own}
        elif own == "domain":
            may = DOMAIN_MAY_IMPORT
        else:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for line, name in imported(module, path.name == "__init__.py", tree, modules):
            target = layer(name, top)
            if target is None or target in may:
                continue
            if (module, name) not in allowed:
                found.append(Violation(module, line, name))
    return found


def test_faces_see_only_the_api_and_the_domain_is_pure() -> None:
    assert [str(v) for v in violations(SRC)] == []


def stale(root: Path, allowed: dict[tuple[str, str], str]) -> set[tuple[str, str]]:
    """The allowed exceptions that match no import any more."""
    modules = {module_name(root, p) for p in root.rglob("*.py")}
    used = {
        (module_name(root, path), name)
        for path in root.rglob("*.py")
        for _, name in imported(
            module_name(root, path),
            path.name == "__init__.py",
            ast.parse(path.read_text(encoding="utf-8")),
            modules,
        )
    }
    return set(allowed) - used


def test_every_allowed_exception_is_still_needed() -> None:
    assert stale(SRC, ALLOWED) == set()


def test_the_checker_reads_the_real_tree() -> None:
    # the rules only mean something if the checker sees the modules they are about
    modules = {module_name(SRC, p) for p in SRC.rglob("*.py")}
    assert {"tristage.cli.main", "tristage.http.app", "tristage.domain.config"} <= modules
    app = SRC / "http" / "app.py"
    seen = {n for _, n in imported("tristage.http.app", False, ast.parse(app.read_text()), modules)}
    assert {"tristage.api", "tristage.errors", "tristage.http.auth", "starlette.routing"} <= seen


def plant(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "tristage"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return pkg


def test_the_checker_fails_on_planted_violations(tmp_path: Path) -> None:
    pkg = plant(
        tmp_path,
        {
            "__init__.py": '__version__ = "0"\n',
            "api.py": "from .services.deploys import DeployService\n",  # the API may
            "cli/__init__.py": "",
            "cli/ok.py": (
                "import json\nimport typer\nfrom .. import __version__\nfrom ..api import X\n"
                "from ..errors import E\nfrom ..domain.config import C\nfrom . import ok\n"
            ),
            "cli/bad.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from ..services.deploys import Switch\n"
                "def f():\n"
                "    from ..http.auth import csrf_ok\n"
            ),
            "http/__init__.py": "",
            "http/bad.py": "import tristage.edges.git\nfrom tristage.services import audit\n",
            "http/sub/__init__.py": "from ... import edges\nfrom ...paths import home\n",
            "domain/__init__.py": "",
            "domain/ok.py": "import re\nimport pydantic\nfrom .config import C\n"
            "from ..errors import E\n",
            "domain/rules/__init__.py": "from ..config import C\nfrom ...services import x\n",
            "domain/bad.py": "from ..api import Tristage\n",
            "services/x.py": "from ..http.app import build_app\n",  # not a face: not checked
            "edges/__init__.py": "",
        },
    )
    assert {str(v) for v in violations(pkg, allowed={})} == {
        "tristage.cli.bad:3 imports tristage.services.deploys",
        "tristage.cli.bad:5 imports tristage.http.auth",
        "tristage.http.bad:1 imports tristage.edges.git",
        "tristage.http.bad:2 imports tristage.services",
        "tristage.http.sub:1 imports tristage.edges",
        "tristage.http.sub:2 imports tristage.paths",
        "tristage.domain.rules:2 imports tristage.services",
        "tristage.domain.bad:1 imports tristage.api",
    }
    allowed = {("tristage.http.bad", "tristage.edges.git"): "planted"}
    assert "tristage.http.bad:1 imports tristage.edges.git" not in {
        str(v) for v in violations(pkg, allowed)
    }
    gone = {("tristage.cli.ok", "tristage.edges.git"): "fixed long ago"}
    assert stale(pkg, {**allowed, **gone}) == set(gone)


def test_the_api_reexports_what_the_faces_use_without_loading_it_early() -> None:
    code = (
        "import sys, tristage.api as api\n"
        "early = sorted(m for m in set(api.LAZY.values()) if 'tristage' + m in sys.modules)\n"
        "missing = [n for n in api.__all__ if getattr(api, n, None) is None]\n"
        "print(early, missing, sorted(set(api.LAZY) - set(api.__all__)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[] [] []"
