"""The bulk paths of the data area: COPY text clones, server-built snapshot lines,
direct COPY imports, SQLite clones in SQL, and restores verified while they load."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import sqlite3
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from test_data import Env, rewrite
from tristage.api import Tristage
from tristage.domain.sanitize import Transformer
from tristage.domain.snapshot import JsonValue
from tristage.edges.datastores import open_datastore
from tristage.edges.datastores.postgres import DUMP_MEMBER
from tristage.errors import TristageError
from tristage.services.data import BackupDamaged

ODD_TEXT = "tab\there\nnew line\\back\\\\slash\r\u2028 é 🚀 \\N"
RULES = {
    "odd.email": "email",
    "odd.card": "hash",
    "odd.note": "keep",
    "odd.ratio": "keep",
    "odd.span": "keep",
    "odd.tags": "keep",
    "odd.ref": "keep",
    "odd.day": "keep",
    "odd.at": "keep",
    "odd.at_tz": "keep",
    "odd.doc": "keep",
    "odd.blob": "keep",
    "odd.flag": "keep",
    "plain.email": "email",
    "plain.note": "keep",
    "plain.ratio": "keep",
    "plain.doc": "keep",
    "plain.blob": "keep",
}
ODD_DDL = (
    "CREATE TABLE odd (id bigint PRIMARY KEY, email text, card bytea, note text,"
    " ratio double precision, span interval, tags integer[], ref uuid, day date,"
    " at time, at_tz timetz, doc json, blob bytea, flag boolean)"
)
PLAIN_DDL = (
    "CREATE TABLE plain (id bigint PRIMARY KEY, email text, note text,"
    " ratio double precision, doc jsonb, blob bytea)"
)


@pytest.fixture
def pg(api: Tristage, repo: Path) -> Iterator[Env]:
    e = Env(api, repo, "postgres", secrets.token_hex(4))
    e.configure(RULES)
    yield e
    e.cleanup()


def _seed_odd(env: Env) -> None:
    rows: list[tuple[Any, ...]] = []
    ratios = [float("nan"), float("inf"), float("-inf"), -0.0, 1e300, 0.1]
    for i in range(1, 13):
        rows.append(
            (
                i,
                f"odd{i % 5}@real-mail.test\t" if i % 4 else None,
                bytes([i, 0, 255]),
                ODD_TEXT + str(i) if i % 3 else None,
                ratios[i % len(ratios)],
                dt.timedelta(days=-i, seconds=5, microseconds=7),
                [i, None, -i] if i % 2 else [],
                uuid.UUID(int=i),
                dt.date(2024, 2, 29),
                dt.time(23, 59, 59, 999999),
                dt.time(1, 2, 3, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
                '{"k": "line\\nbreak \\\\ quote\\"", "n": [1, 2.5, null]}',
                b"\\x00\t\n" * i,
                i % 2 == 0,
            )
        )
    with psycopg.connect(env.url("production")) as conn:
        conn.execute(ODD_DDL)
        conn.execute(PLAIN_DDL)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO odd VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", rows
            )
            cur.executemany(
                "INSERT INTO plain VALUES (%s,%s,%s,%s,%s::jsonb,%s)",
                [(r[0], r[1], r[3], r[4], r[11], r[12]) for r in rows],
            )


def _rows(env: Env, name: str) -> dict[str, list[tuple[Any, ...]]]:
    store = open_datastore(env.url(name))
    with store.read() as r:
        return {t.name: list(r.rows(t)) for t in r.tables()}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and a != a:
        return b != b
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def test_postgres_clone_rewrites_only_ruled_fields_of_copy_rows(pg: Env) -> None:
    _seed_odd(pg)
    prod = _rows(pg, "production")
    report = pg.api.data.clone("shop", "production", "preview")
    assert report.rows == {"odd": 12, "plain": 12}
    clone = _rows(pg, "preview")
    t = Transformer(pg.api.project_salt("shop"))
    for table, email_at in (("odd", 1), ("plain", 1)):
        for before, after in zip(prod[table], clone[table], strict=True):
            for i, (x, y) in enumerate(zip(before, after, strict=True)):
                if i == email_at:
                    # the same keyed transform as every other path, tabs and all
                    assert y == t.apply("email", x)
                    assert x is None or "real-mail" not in y
                elif table == "odd" and i == 2:
                    assert y == t.apply("hash", x) and y != x
                else:
                    assert _same(x, y), (table, i, x, y)
    # keys were built after the load
    tables = {tb.name: tb for tb in pg.api.data.tables("shop", "preview")}
    assert tables["odd"].primary_key == ("id",)


def test_postgres_odd_values_round_trip_through_both_export_paths(pg: Env, tmp_path: Path) -> None:
    _seed_odd(pg)
    pg.api.data.clone("shop", "production", "preview")
    snap = tmp_path / "snap"
    pg.api.data.export("shop", "preview", snap)
    # `plain` is built by the server, `odd` (interval, array) in Python
    line = (snap / "tables" / "plain.jsonl").read_text().splitlines()[0]
    assert '"ratio":{"$float":"nan"}' in (snap / "tables" / "odd.jsonl").read_text()
    assert line.startswith('{"id":1,"email":"user-')
    pg.api.data.import_snapshot("shop", "development", snap)
    src, dst = _rows(pg, "preview"), _rows(pg, "development")
    for table in ("odd", "plain"):
        assert _same(src[table], dst[table]), table
    assert dst["odd"][0][3] == ODD_TEXT + "1"
    assert isinstance(dst["plain"][0][4], JsonValue)
    # the server builds the same bytes from the same values
    pg.api.data.export("shop", "development", tmp_path / "again")
    assert (tmp_path / "again" / "tables" / "plain.jsonl").read_bytes() == (
        snap / "tables" / "plain.jsonl"
    ).read_bytes()


def test_restore_of_a_backup_damaged_inside_a_valid_zip_changes_nothing(pg: Env) -> None:
    pg.seed("production", users=30)
    info = pg.api.data.backup("shop", "production")
    # a PostgreSQL backup is its archive: one byte of its data flipped
    pg.alter_backup(info.id, DUMP_MEMBER, lambda d: d[:-9] + bytes([d[-9] ^ 1]) + d[-8:])
    pg.execute("production", ["DELETE FROM payments"])
    before = pg.dump("production")
    n_backups = len(pg.api.data.backups("shop", "production"))
    with pytest.raises(BackupDamaged, match="sha256"):
        pg.api.data.restore("shop", "production", info.id, yes=True)
    assert pg.dump("production") == before
    assert len(pg.api.data.backups("shop", "production")) == n_backups


def test_sqlite_clone_matches_the_generic_transforms(api: Tristage, repo: Path) -> None:
    env = Env(api, repo, "sqlite", "")
    env.configure()
    env.seed("production", users=30)
    path = env.url("production")[len("sqlite://") :]
    with sqlite3.connect(path) as conn:  # odd values: tabs, NULs, big ints, blobs as email
        conn.execute("UPDATE users SET name = 'a\tb\nc\\d' WHERE id = 1")
        conn.execute("UPDATE users SET email = x'00ff' WHERE id = 2")
        conn.execute("UPDATE users SET phone = 12345678901234 WHERE id = 3")
    prod = env.dump("production")
    env.api.data.clone("shop", "production", "preview")
    clone = env.dump("preview")
    t = Transformer(api.project_salt("shop"))
    rules = {1: "email", 2: "name", 3: "phone", 6: "null"}
    for before, after in zip(prod["users"], clone["users"], strict=True):
        for i, (x, y) in enumerate(zip(before, after, strict=True)):
            assert y == (t.apply(rules[i], x) if i in rules else x), (i, x, y)
    for before, after in zip(prod["payments"], clone["payments"], strict=True):
        assert after[2] == t.apply("email", before[2])
        assert after[3] == t.apply("hash", before[3])
        assert (after[0], after[1], after[4], after[5]) == (
            before[0],
            before[1],
            before[4],
            before[5],
        )
    assert Decimal(str(clone["users"][0][7])) == Decimal("12.30")


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_import_names_the_refused_line_across_batches(
    engine: str, api: Tristage, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tristage.edges.datastores import postgres, sqlite

    monkeypatch.setattr(postgres, "_BLOCK", 64)  # a write per row or two
    monkeypatch.setattr(postgres, "_COPY_ROWS", 2)  # a new COPY every few rows
    monkeypatch.setattr(sqlite, "BATCH_ROWS", 2)  # a batch every two rows
    env = Env(api, repo, engine, secrets.token_hex(4))
    env.configure()
    try:
        _refused_lines_are_named(env, tmp_path)
    finally:
        env.cleanup()


def _refused_lines_are_named(env: Env, tmp_path: Path) -> None:
    env.seed("development", users=12)
    env.seed("preview", users=2)
    before = env.dump("preview")
    out = tmp_path / "snap"
    env.api.data.export("shop", "development", out)
    path = out / "tables" / "users.jsonl"
    good = path.read_text().splitlines()
    cases: list[tuple[int, dict[str, Any], str]] = [
        (9, {"email": None}, "NOT NULL" if env.engine == "sqlite" else "null value"),
        (7, {"created_at": {"$ts": 5}}, "column 'created_at'"),
        (4, {"avatar": {"$b64": "%%%"}}, "column 'avatar'"),
    ]
    if env.engine == "postgres":
        cases.append((11, {"balance": {"$dec": "not a number"}}, "numeric"))
    for lineno, patch, expected in cases:
        lines = list(good)
        row = json.loads(lines[lineno - 1])
        row.update(patch)
        lines[lineno - 1] = json.dumps(row)
        rewrite(path, "\n".join(lines) + "\n")
        with pytest.raises(TristageError) as exc:
            env.api.data.import_snapshot("shop", "preview", out, mode="replace")
        assert f"users.jsonl:{lineno}" in exc.value.message, exc.value.message
        assert expected in exc.value.message, exc.value.message
        assert env.dump("preview") == before
    rewrite(path, "\n".join(good) + "\n")
    env.api.data.import_snapshot("shop", "preview", out, mode="replace")
    assert env.dump("preview") == env.dump("development")
