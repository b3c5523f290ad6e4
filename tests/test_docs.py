"""The documentation covers the code: every config key, rule id, HTTP operation, CLI
command and `TRISTAGE_*` environment variable is documented in docs/ or the README, and
the generated key reference of docs/configuration.md is current.

Each kind has a collector that reads the code (the schema, the rule modules' source, the
OpenAPI document, the Typer app, the source tree) and one checker that looks the names up
in the text; the planted tests show each checker flags what is missing.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import BaseModel, Field

from tristage.domain import config_doc
from tristage.domain.config import PipelineConfig

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "tristage"
DOCS = ROOT / "docs"
CONFIG_PAGE = DOCS / "configuration.md"
REGENERATE = "bash scripts/gen-docs.sh"


def docs_text() -> str:
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    return "\n".join(p.read_text(encoding="utf-8") for p in pages)


def missing(names: Iterable[str], text: str, pattern: Callable[[str], str]) -> list[str]:
    """The names for which `pattern(name)` finds nothing in `text`, sorted."""
    return sorted({n for n in names if not re.search(pattern(n), text)})


# ---------------------------------------------------------------------------
# Config keys: described in the schema, and the page generated from it is current


def config_keys_missing(model: type[BaseModel], page: str) -> list[str]:
    """Key paths of `model` that have no row under their table's heading in `page`."""
    out: list[str] = []
    for table in config_doc.tables(model):
        head = f"### {config_doc.heading(table.path)}\n"
        start = page.find(head)
        section = "" if start < 0 else page[start + len(head) :].split("\n### ", 1)[0]
        out += [k.path for k in table.keys if f"| `{k.name}` |" not in section]
    return out


def test_every_config_key_has_a_description() -> None:
    assert config_doc.undocumented() == [], (
        "give these keys a Field(description=...) (and tables a docstring) in "
        f"src/tristage/domain/config.py, then run '{REGENERATE}'"
    )


def test_configuration_md_is_generated_from_the_schema() -> None:
    page = CONFIG_PAGE.read_text(encoding="utf-8")
    fresh = config_doc.splice(page, config_doc.reference())
    diff = "".join(
        difflib.unified_diff(
            page.splitlines(keepends=True),
            fresh.splitlines(keepends=True),
            "docs/configuration.md (committed)",
            "docs/configuration.md (from the schema)",
        )
    )
    assert page == fresh, f"docs/configuration.md is stale: run '{REGENERATE}'\n{diff}"
    assert config_keys_missing(PipelineConfig, page) == []


def test_a_planted_config_key_is_flagged() -> None:
    class Planted(PipelineConfig):
        """The top-level tables of `tristage.toml`."""

        planted_knob: int = 3

    page = CONFIG_PAGE.read_text(encoding="utf-8")
    assert config_doc.undocumented(Planted) == ["planted_knob"]
    assert config_keys_missing(Planted, page) == ["planted_knob"]
    assert config_doc.splice(page, config_doc.reference(Planted)) != page

    class Described(PipelineConfig):
        """The top-level tables of `tristage.toml`."""

        planted_knob: int = Field(default=3, description="A knob.")

    assert config_doc.undocumented(Described) == []
    assert config_keys_missing(Described, page) == ["planted_knob"]


# ---------------------------------------------------------------------------
# Rule ids: the first argument of every Finding(...) in domain/rules/


def _finding_ids(tree: ast.AST) -> Iterator[ast.expr]:
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name != "Finding":
            continue
        if node.args:
            yield node.args[0]
        yield from (k.value for k in node.keywords if k.arg == "rule")


def rule_ids(files: Iterable[Path], prefixes: Iterable[str]) -> list[str]:
    """Every rule id the rule modules can report.

    A literal id is taken as is; an f-string id such as `f"{p}.mixed-modes"` (the
    rules every key family shares) is expanded over `prefixes`. Any other expression
    is an error: rule ids must be readable from the source.
    """
    ids: set[str] = set()
    for path in files:
        for expr in _finding_ids(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
                ids.add(expr.value)
                continue
            parts = expr.values if isinstance(expr, ast.JoinedStr) else []
            if (
                len(parts) == 2
                and isinstance(parts[0], ast.FormattedValue)
                and isinstance(parts[1], ast.Constant)
            ):
                ids.update(f"{p}{parts[1].value}" for p in prefixes)
                continue
            raise AssertionError(
                f"{path}:{expr.lineno}: a rule id that is neither a string "
                "nor f'{provider}.rest'; write it so it can be read from the source"
            )
    return sorted(ids)


def real_rule_ids() -> list[str]:
    from tristage.domain import rules
    from tristage.domain.rules import _keys

    rules.modules()  # imports every provider module, which registers its key family
    files = sorted((SRC / "domain" / "rules").glob("*.py"))
    return rule_ids(files, [f.provider for f in _keys.FAMILIES.values()])


def rule_pattern(rule: str) -> str:
    return rf"`{re.escape(rule)}`"


def test_every_rule_id_is_documented() -> None:
    ids = real_rule_ids()
    assert {"isolation.database", "stripe.mixed-modes", "clerk.live-outside-production"} <= set(ids)
    gaps = missing(ids, docs_text(), rule_pattern)
    assert not gaps, f"add these rule ids to the table in docs/variables.md: {', '.join(gaps)}"


def test_a_planted_rule_id_is_flagged(tmp_path: Path) -> None:
    module = tmp_path / "planted.py"
    module.write_text(
        "def check(ctx):\n"
        "    yield Finding('planted.never-documented', ERROR, 'e', None, 'm')\n"
        "    yield _base.Finding(f'{p}.planted-shared', WARNING, 'e', None, 'm')\n"
        "    yield Finding(rule='isolation.database', severity=ERROR)\n"
    )
    ids = rule_ids([module], ["stripe", "acme"])
    assert ids == [
        "acme.planted-shared",
        "isolation.database",
        "planted.never-documented",
        "stripe.planted-shared",
    ]
    assert missing(ids, docs_text(), rule_pattern) == [
        "acme.planted-shared",
        "planted.never-documented",
        "stripe.planted-shared",
    ]
    module.write_text("def check(ctx):\n    yield Finding(RULE_ID, ERROR, 'e', None, 'm')\n")
    with pytest.raises(AssertionError, match="neither a string"):
        rule_ids([module], [])


# ---------------------------------------------------------------------------
# HTTP operations: every method and path of the OpenAPI document


def operations(doc: dict[str, Any], prefix: str) -> list[str]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options"}
    return sorted(
        f"{method.upper()} {path.removeprefix(prefix) or '/'}"
        for path, item in doc["paths"].items()
        for method in item
        if method in methods
    )


def operation_pattern(prefix: str) -> Callable[[str], str]:
    def pattern(op: str) -> str:
        method, path = op.split(" ", 1)
        return rf"{method} (?:{re.escape(prefix)})?{re.escape(path)}(?![\w/{{}}-])"

    return pattern


def real_operations() -> tuple[list[str], str]:
    from tristage.http.openapi import API, openapi
    from tristage.http.ops import OPS

    return operations(openapi(OPS), API), API


def test_every_http_operation_is_documented() -> None:
    ops, prefix = real_operations()
    assert "POST /projects/{project}/rollback" in ops and len(ops) >= 10
    gaps = missing(ops, docs_text(), operation_pattern(prefix))
    assert not gaps, f"add these operations to docs/http-api.md: {'; '.join(gaps)}"


def test_a_planted_http_operation_is_flagged() -> None:
    doc = {
        "paths": {
            "/api/v1/projects/{project}/rollback": {"post": {}, "parameters": []},
            "/api/v1/projects/{project}/planted": {"get": {}, "delete": {}},
            "/api/v1/projects": {"patch": {}},
        }
    }
    ops = operations(doc, "/api/v1")
    assert missing(ops, docs_text(), operation_pattern("/api/v1")) == [
        "DELETE /projects/{project}/planted",
        "GET /projects/{project}/planted",
        "PATCH /projects",
    ]


# ---------------------------------------------------------------------------
# CLI commands: every command of the Typer app, by its full name


def commands(app: typer.Typer, name: str = "tristage") -> list[str]:
    """The full name of every visible command (`tristage db backup`), groups excluded."""
    out: list[str] = []

    def walk(cmd: Any, path: str) -> None:
        subs = getattr(cmd, "commands", None)  # a group (Typer ships its own click)
        if subs is None:
            out.append(path)
            return
        for sub_name, sub in subs.items():
            if not sub.hidden:
                walk(sub, f"{path} {sub_name}")

    walk(typer.main.get_command(app), name)
    return sorted(out)


def command_pattern(command: str) -> str:
    return rf"(?<![\w-]){re.escape(command)}(?![\w-])"


def test_every_cli_command_is_documented() -> None:
    from tristage.cli.main import app

    names = commands(app)
    assert {"tristage up", "tristage env set", "tristage db backup"} <= set(names)
    gaps = missing(names, docs_text(), command_pattern)
    assert not gaps, f"document these commands in the README or docs/: {', '.join(gaps)}"


def test_a_planted_cli_command_is_flagged() -> None:
    app = typer.Typer()
    db = typer.Typer()
    app.add_typer(db, name="db")

    @app.command("frobnicate")
    def frobnicate() -> None: ...

    @app.command("secret-knob", hidden=True)
    def hidden() -> None: ...

    @db.command("backup")
    def backup() -> None: ...

    @db.command("back")
    def back() -> None: ...

    names = commands(app)
    assert names == ["tristage db back", "tristage db backup", "tristage frobnicate"]
    # `tristage db back` is a prefix of the documented `tristage db backup`: still missing
    assert missing(names, docs_text(), command_pattern) == [
        "tristage db back",
        "tristage frobnicate",
    ]


# ---------------------------------------------------------------------------
# TRISTAGE_* environment variables: every one the source names


ENV_RE = re.compile(r"\bTRISTAGE_[A-Z0-9_]*[A-Z0-9]\b")


def environment_variables(files: Iterable[Path]) -> list[str]:
    """Every `TRISTAGE_*` name in the string literals (docstrings and f-strings included)
    and keyword arguments (`dict(TRISTAGE_ENV=...)`) of `files`."""
    names: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.update(ENV_RE.findall(node.value))
            elif isinstance(node, ast.keyword) and node.arg:
                names.update(ENV_RE.findall(node.arg))
    return sorted(names)


def env_pattern(name: str) -> str:
    return rf"\b{re.escape(name)}(?![A-Z0-9_])"


def test_every_environment_variable_is_documented() -> None:
    names = environment_variables(sorted(SRC.rglob("*.py")))
    assert {"TRISTAGE_HOME", "TRISTAGE_ACTOR", "TRISTAGE_MASTER_KEY_FILE"} <= set(names)
    gaps = missing(names, docs_text(), env_pattern)
    assert not gaps, f"add these variables to docs/environment.md: {', '.join(gaps)}"


def test_a_planted_environment_variable_is_flagged(tmp_path: Path) -> None:
    source = tmp_path / "planted.py"
    source.write_text(
        "import os\n"
        "knob = os.environ.get('TRISTAGE_PLANTED_KNOB')\n"
        "env = dict(TRISTAGE_PLANTED_CHILD='1', OTHER='2')\n"
        "msg = f'TRISTAGE_HOME_X={knob!r} is bad; see TRISTAGE_HOME'\n"
        "prefix = 'TRISTAGE_'\n"
    )
    names = environment_variables([source])
    assert names == [
        "TRISTAGE_HOME",
        "TRISTAGE_HOME_X",
        "TRISTAGE_PLANTED_CHILD",
        "TRISTAGE_PLANTED_KNOB",
    ]
    assert missing(names, docs_text(), env_pattern) == [
        "TRISTAGE_HOME_X",
        "TRISTAGE_PLANTED_CHILD",
        "TRISTAGE_PLANTED_KNOB",
    ]


# ---------------------------------------------------------------------------
# Modules and tests named by the architecture and extending pages exist

REF_RE = re.compile(r"`([\w./-]+\.py(?:::\w+)?|[a-z_]+(?:/[a-z_]+)*/)`")


def broken_references(page: str, src: Path = SRC, tests: Path = ROOT / "tests") -> list[str]:
    """Backticked module paths (`edges/router/routes.py`, `edges/runtime/`) that do not
    exist under `src`, and `test_x.py::test_name` references to tests that do not exist."""
    out: list[str] = []
    for ref in sorted(set(REF_RE.findall(page))):
        path, _, test = ref.partition("::")
        if path.startswith(("tests/", "src/", "scripts/", "bench/")):
            base = ROOT / path
        elif Path(path).name.startswith("test_") or path == "conftest.py":
            base = tests / path
        else:
            base = src / path
        if not base.exists() or (test and not _defines(base, test)):
            out.append(ref)
    return out


def _defines(module: Path, function: str) -> bool:
    text = module.read_text(encoding="utf-8")
    return re.search(rf"^(?:async )?def {re.escape(function)}\(", text, re.M) is not None


@pytest.mark.parametrize("page", ["architecture.md", "extending.md"])
def test_the_modules_and_tests_a_page_names_exist(page: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    assert REF_RE.search(text), f"docs/{page} names no module"
    gaps = broken_references(text)
    assert not gaps, f"docs/{page} names what does not exist (moved or renamed?): {gaps}"


def test_a_planted_broken_reference_is_flagged() -> None:
    page = (
        "`edges/router/routes.py` and `edges/runtime/` exist, "
        "`test_router.py::test_hop_by_hop_headers_are_dropped` too; "
        "`services/gone.py`, `edges/nowhere/`, `test_router.py::test_never_written` "
        "and `test_missing.py::test_x` do not"
    )
    assert broken_references(page) == [
        "edges/nowhere/",
        "services/gone.py",
        "test_missing.py::test_x",
        "test_router.py::test_never_written",
    ]


# ---------------------------------------------------------------------------
# The changelog


def changelog_problems(text: str, version: str) -> list[str]:
    """What is wrong with a Keep a Changelog file for the package at `version`."""
    heads = re.findall(r"^## (.+)$", text, re.M)
    problems = []
    if not heads or heads[0].strip() != "Unreleased":
        problems.append("the first section must be '## Unreleased'")
    released = [h.split(" - ")[0].strip() for h in heads[1:]]
    if version not in released:
        problems.append(f"no '## {version} - YYYY-MM-DD' section for the package version")
    for head in heads[1:]:
        if not re.fullmatch(r"\d+\.\d+\.\d+ - \d{4}-\d{2}-\d{2}", head.strip()):
            problems.append(f"'## {head}' is not '## X.Y.Z - YYYY-MM-DD'")
    return problems


def test_the_changelog_has_unreleased_and_the_current_version() -> None:
    from tristage import __version__

    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert changelog_problems(text, __version__) == []


def test_a_changelog_without_the_version_is_flagged() -> None:
    text = "# Changelog\n\n## 0.1.0 - 2026-11-27\n\n### Added\n\n- x\n\n## 0.0.9\n"
    assert changelog_problems(text, "0.2.0") == [
        "the first section must be '## Unreleased'",
        "no '## 0.2.0 - YYYY-MM-DD' section for the package version",
        "'## 0.0.9' is not '## X.Y.Z - YYYY-MM-DD'",
    ]
