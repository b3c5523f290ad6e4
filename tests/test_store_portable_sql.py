"""The platform's SQL outside the state store edge is in the subset SQLite and
PostgreSQL share: no PRAGMA, no INSERT OR REPLACE/IGNORE, no REPLACE INTO."""

from __future__ import annotations

import re
from pathlib import Path

import tristage

SRC = Path(tristage.__file__).parent
# The SQLite state store sets its PRAGMAs; the data stores speak each app database's own engine.
ENGINE_SPECIFIC = (SRC / "edges" / "store", SRC / "edges" / "datastores")
# SQL is written in capitals here, so prose ("insert or update", "pragma: no cover") passes.
SQLITE_ONLY = re.compile(
    r"\bPRAGMA\s+\w+|\bINSERT\s+OR\s+(?:REPLACE|IGNORE|ABORT|FAIL|ROLLBACK)\b|\bREPLACE\s+INTO\b"
)


def sqlite_only(text: str) -> list[str]:
    return [m.group(0) for m in SQLITE_ONLY.finditer(text)]


def test_the_check_finds_sqlite_only_statements() -> None:
    planted = 'store.execute("INSERT OR REPLACE INTO t (a) VALUES (?)")\nq("PRAGMA x=1")'
    assert sqlite_only(planted) == ["INSERT OR REPLACE", "PRAGMA x"]
    assert sqlite_only('"INSERT INTO t (a) VALUES (?) ON CONFLICT (a) DO NOTHING"') == []


def test_no_sqlite_only_sql_outside_the_store_edge() -> None:
    found = {
        str(path.relative_to(SRC)): hits
        for path in sorted(SRC.rglob("*.py"))
        if not any(root in path.parents for root in ENGINE_SPECIFIC)
        and (hits := sqlite_only(path.read_text(encoding="utf-8")))
    }
    assert found == {}, "use INSERT ... ON CONFLICT, and Store methods instead of PRAGMA"
