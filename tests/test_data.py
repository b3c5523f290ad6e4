"""Data stores on both engines: export/import, backups, restore, drill, clone, scheduler."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conftest import PG_SERVER, require_pg
from tristage.api import Tristage
from tristage.domain.snapshot import JsonValue
from tristage.edges import snapshot_io
from tristage.edges.datastores import open_datastore
from tristage.edges.datastores.postgres import DUMP_MEMBER, drop_role, drop_with_copies
from tristage.edges.snapshot_io import SnapshotError
from tristage.errors import TristageError, UsageError
from tristage.services.data import BackupDamaged, ConfirmationRequired, SanitizeRefused

SANITIZE = {
    "users.email": "email",
    "users.name": "name",
    "users.phone": "phone",
    "users.profile": "keep",
    "users.avatar": "null",
    "users.balance": "keep",
    "users.score": "keep",
    "users.is_admin": "keep",
    "payments.customer_email": "email",
    "payments.amount_cents": "keep",
    "payments.card_number": "hash",
    "payments.meta": "keep",
}


def rewrite(path: Path, text: str | bytes) -> None:
    """Change a table file of a snapshot directory and its manifest entry with it (a
    snapshot that is consistent but holds a line the import must refuse)."""
    data = text.encode() if isinstance(text, str) else text
    path.write_bytes(data)
    manifest = path.parent.parent / "manifest.json"
    m = json.loads(manifest.read_text())
    for entry in m["files"].values():
        if entry["path"] == f"tables/{path.name}":
            entry["bytes"] = len(data)
            entry["sha256"] = hashlib.sha256(data).hexdigest()
            entry["rows"] = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    manifest.write_text(json.dumps(m))


def toml_value(v: Any) -> str:
    """A string, bool or table of them as TOML (inline tables for tables)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(v)


def config_text(engine: str, token: str, sanitize: dict[str, Any], encrypt: bool = False) -> str:
    def db(env: str) -> str:
        if engine == "sqlite":
            return ""
        return (
            f'\n[environments.{env}.database]\nengine = "postgres"\n'
            f'url = "{PG_SERVER}"\nname = "tristage_t{token}_{env}"\n'
        )

    rules = "\n".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in sanitize.items())
    return f"""
[project]
name = "shop"

[environments.development]
tier = "development"
branches = ["dev"]
{db("development")}
[environments.preview]
tier = "preview"
branches = ["test"]
{db("preview")}
[environments.production]
tier = "production"
branches = ["main"]
{db("production")}
[environments.production.backups]
schedule = "0 2 * * *"
encrypt = {"true" if encrypt else "false"}
keep = {{ daily = 2, weekly = 1, monthly = 1 }}

[sanitize]
{rules}
"""


SQLITE_DDL = [
    "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, name TEXT,"
    " phone TEXT, profile JSON, created_at TIMESTAMP, avatar BLOB, balance NUMERIC,"
    " score REAL, is_admin BOOLEAN)",
    "CREATE TABLE payments (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL REFERENCES"
    " users(id), customer_email TEXT, card_number TEXT, amount_cents INTEGER, meta JSON)",
    "CREATE INDEX payments_user ON payments (user_id)",
]
PG_DDL = [
    "CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE, name text,"
    " phone text, profile jsonb, created_at timestamptz, avatar bytea, balance numeric(12,2),"
    " score double precision, is_admin boolean)",
    "CREATE TABLE payments (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES"
    " users(id), customer_email text, card_number text, amount_cents integer, meta jsonb)",
    "CREATE INDEX payments_user ON payments (user_id)",
]


def user_rows(n: int) -> list[tuple[Any, ...]]:
    rows = []
    for i in range(1, n + 1):
        rows.append(
            (
                i,
                f"person{i}@real-mail.test",
                "Zoë Ünïcødé 🚀" if i == 1 else f"Person {i}",
                f"+4477009{i:05d}",
                None
                if i == 2
                else {"plan": "pro", "tags": ["a", "b"], "n": i, "nested": {"x": None}},
                dt.datetime(2024, 5, 3, 12, 30, i % 60, 123456, tzinfo=dt.UTC),
                None if i == 3 else bytes([0, 1, 2, 255, i % 256]),
                Decimal("12.30") if i % 2 else Decimal("-0.05"),
                1.5 * i,
                i % 3 == 0,
            )
        )
    return rows


def payment_rows(n_users: int) -> list[tuple[Any, ...]]:
    rows = []
    for i in range(1, n_users * 2 + 1):
        u = (i % n_users) + 1
        rows.append(
            (i, u, f"person{u}@real-mail.test", f"4111 1111 1111 {i:04d}", 100 * i, {"i": i})
        )
    return rows


def flip_one_email(data: bytes) -> bytes:
    return data.replace(b"person1@", b"person9@", 1)


class Env:
    """A project `shop` with three environments on one engine."""

    def __init__(self, api: Tristage, repo: Path, engine: str, token: str) -> None:
        if engine == "postgres":
            require_pg()
        self.api, self.repo, self.engine, self.token = api, repo, engine, token

    def configure(self, sanitize: dict[str, Any] | None = None, encrypt: bool = False) -> None:
        text = config_text(self.engine, self.token, SANITIZE if sanitize is None else sanitize,
                           encrypt)  # fmt: skip
        (self.repo / "tristage.toml").write_text(text)
        self.api.open_project(self.repo)

    def url(self, env: str) -> str:
        return self.api.data.database_url("shop", env)

    def execute(self, env: str, statements: list[str], params: list[tuple[Any, ...]] | None = None,
                sql: str | None = None) -> None:  # fmt: skip
        url = self.url(env)
        if self.engine == "sqlite":
            conn = sqlite3.connect(url[len("sqlite://") :])
            for s in statements:
                conn.execute(s)
            if sql:
                conn.executemany(sql, [_sqlite(p) for p in params or []])
            conn.commit()
            conn.close()
        else:
            with psycopg.connect(url) as pg:
                for s in statements:
                    pg.execute(s)  # type: ignore[arg-type]
                if sql:
                    with pg.cursor() as cur:
                        cur.executemany(sql.replace("?", "%s"), [_pg(p) for p in params or []])  # type: ignore[arg-type]

    def seed(self, env: str, users: int = 20) -> None:
        self.execute(env, SQLITE_DDL if self.engine == "sqlite" else PG_DDL)
        self.execute(env, [], user_rows(users), "INSERT INTO users VALUES (?,?,?,?,?,?,?,?,?,?)")
        self.execute(env, [], payment_rows(users), "INSERT INTO payments VALUES (?,?,?,?,?,?)")

    def alter_backup(self, backup_id: str, member: str, change: Callable[[bytes], bytes]) -> None:
        """Rewrite one member of a production backup ZIP, keeping its manifest."""
        path = self.api.data.target("shop", "production").local_path(backup_id)
        assert path is not None
        tmp = path.with_suffix(".tmp")
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w") as dst:
            for item in src.infolist():
                data = src.read(item)
                dst.writestr(item, change(data) if item.filename == member else data)
        os.replace(tmp, path)

    def dump(self, env: str) -> dict[str, list[tuple[Any, ...]]]:
        store = open_datastore(self.url(env))
        with store.read() as r:
            return {t.name: list(r.rows(t)) for t in r.tables()}

    def cleanup(self) -> None:
        if self.engine == "postgres":
            for env in ("development", "preview", "production"):
                drop_with_copies(PG_SERVER, f"tristage_t{self.token}_{env}")
                drop_role(PG_SERVER, f"tristage_t{self.token}_{env}")


def _sqlite(p: tuple[Any, ...]) -> tuple[Any, ...]:
    out: list[Any] = []
    for v in p:
        if isinstance(v, dict):
            v = json.dumps(v)
        elif isinstance(v, dt.datetime):
            v = v.isoformat()
        elif isinstance(v, Decimal):
            v = str(v)
        out.append(v)
    return tuple(out)


def _pg(p: tuple[Any, ...]) -> tuple[Any, ...]:
    from psycopg.types.json import Jsonb

    return tuple(Jsonb(v) if isinstance(v, dict) else v for v in p)


@pytest.fixture(params=["sqlite", "postgres"])
def env(request: pytest.FixtureRequest, api: Tristage, repo: Path) -> Iterator[Env]:
    e = Env(api, repo, request.param, secrets.token_hex(4))
    e.configure()
    yield e
    e.cleanup()


# ---------------------------------------------------------------------------


def test_database_url_forms_and_shares(env: Env, api: Tristage, repo: Path) -> None:
    url = env.url("production")
    if env.engine == "sqlite":
        assert url.startswith("sqlite:////") and Path(url[len("sqlite://") :]).is_file()
    else:  # the environment's own role (and password) on the configured server
        role = f"tristage_t{env.token}_production"
        server = PG_SERVER.rsplit("@", 1)[-1]
        assert url.startswith(f"postgresql://{role}:") and url.endswith(f"@{server}/{role}")
        with psycopg.connect(url) as conn:  # the database was created, owned by the role
            assert conn.execute("SELECT current_user").fetchone() == (role,)
            owner = conn.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (role,)
            ).fetchone()
            assert owner == (role,)
    # the simple preset: preview shares development's store
    api.init_project(repo, "simple", name="simpleapp", force=True)
    assert api.data.database_url("simpleapp", "preview") == api.data.database_url(
        "simpleapp", "development"
    )


def test_export_import_round_trips_every_type(env: Env, tmp_path: Path) -> None:
    env.seed("development")
    for fmt in ("dir", "zip"):
        out = tmp_path / f"snap-{fmt}"
        result = env.api.data.export("shop", "development", out, fmt)  # type: ignore[arg-type]
        assert result.manifest.files["users"].rows == 20
        assert result.manifest.files["payments"].rows == 40
        target = "preview"
        env.api.data.import_snapshot("shop", target, out, mode="replace" if fmt == "zip" else None)
        assert env.dump(target) == env.dump("development")
    # values survive exactly (spot checks on the tricky ones)
    users = {r[0]: r for r in env.dump("preview")["users"]}
    assert users[1][2] == "Zoë Ünïcødé 🚀"
    assert users[2][4] is None and users[3][6] is None
    if env.engine == "postgres":
        assert users[1][4].value == {
            "plan": "pro",
            "tags": ["a", "b"],
            "n": 1,
            "nested": {"x": None},
        }
        assert users[1][6] == bytes([0, 1, 2, 255, 1])
        assert users[1][7] == Decimal("12.30") and users[2][7] == Decimal("-0.05")
        assert users[1][5] == dt.datetime(2024, 5, 3, 12, 30, 1, 123456, tzinfo=dt.UTC)
        # identity counters follow the imported ids
        with psycopg.connect(env.url("preview")) as conn:
            conn.execute("INSERT INTO users (email) VALUES ('new@x.test')")
            row = conn.execute("SELECT max(id) FROM users").fetchone()
            assert row == (21,)


def test_import_into_missing_tables_creates_them_with_keys(env: Env, tmp_path: Path) -> None:
    env.seed("development", users=5)
    env.api.data.export("shop", "development", tmp_path / "s")
    env.api.data.import_snapshot("shop", "preview", tmp_path / "s")
    tables = {t.name: t for t in env.api.data.tables("shop", "preview")}
    assert tables["users"].primary_key == ("id",)
    assert tables["payments"].foreign_keys[0].ref_table == "users"


def test_corrupt_line_fails_with_file_and_line_and_changes_nothing(
    env: Env, tmp_path: Path
) -> None:
    env.seed("development", users=10)
    env.seed("preview", users=3)
    before = env.dump("preview")
    out = tmp_path / "snap"
    env.api.data.export("shop", "development", out)
    path = out / "tables" / "users.jsonl"
    lines = path.read_text().splitlines()
    good = list(lines)
    lines[2] = lines[2][:-5]  # cut: invalid JSON on line 3
    rewrite(path, "\n".join(lines) + "\n")
    with pytest.raises(SnapshotError) as exc:
        env.api.data.import_snapshot("shop", "preview", out, mode="replace")
    assert "tables/users.jsonl:3" in exc.value.message and "not valid JSON" in exc.value.message
    assert env.dump("preview") == before
    # a line the database rejects (NOT NULL email) is named too
    row = json.loads(good[4])
    row["email"] = None
    good[4] = json.dumps(row)
    rewrite(path, "\n".join(good) + "\n")
    with pytest.raises(TristageError) as exc2:
        env.api.data.import_snapshot("shop", "preview", out, mode="replace")
    assert "users.jsonl:5" in exc2.value.message
    assert env.dump("preview") == before


def test_import_refuses_nonempty_without_mode_and_production_exports(
    env: Env, tmp_path: Path
) -> None:
    env.seed("development", users=3)
    env.seed("preview", users=3)
    env.api.data.export("shop", "development", tmp_path / "dev")
    with pytest.raises(UsageError, match="already hold rows"):
        env.api.data.import_snapshot("shop", "preview", tmp_path / "dev")
    env.seed("production", users=3)
    env.api.data.export("shop", "production", tmp_path / "prod")
    with pytest.raises(UsageError, match="unsanitized production data"):
        env.api.data.import_snapshot("shop", "preview", tmp_path / "prod", mode="replace")


def test_convex_snapshot_zip_imports(env: Env, tmp_path: Path) -> None:
    z = tmp_path / "convex.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("README.md", "convex export")
        zf.writestr("_tables/documents.jsonl", '{"name":"users","id":1}\n')
        docs = [
            {"_id": "k1", "_creationTime": 1714000000000.5, "email": "a@b.test",
             "profile": {"x": [1, 2]}, "age": 31},
            {"_id": "k2", "_creationTime": 1714000000001.0, "email": "c@d.test",
             "profile": None, "age": 40, "extra": "only here"},
        ]  # fmt: skip
        zf.writestr("users/documents.jsonl", "".join(json.dumps(d) + "\n" for d in docs))
    result = env.api.data.import_snapshot("shop", "development", z, not_production=True)
    assert result.rows == {"users": 2}
    rows = env.dump("development")["users"]
    assert [r[0] for r in rows] == ["k1", "k2"]
    profile = rows[0][3]
    value = profile.value if isinstance(profile, JsonValue) else json.loads(profile)
    assert value == {"x": [1, 2]}


def test_backup_restore_and_safety_backup(env: Env) -> None:
    env.seed("production", users=15)
    original = env.dump("production")
    info = env.api.data.backup("shop", "production")
    assert info.rows == 45 and info.tables == 2 and info.size > 0
    env.execute("production", ["DELETE FROM payments", "UPDATE users SET name = 'changed'"])
    with pytest.raises(ConfirmationRequired):
        env.api.data.restore("shop", "production", info.id)
    result = env.api.data.restore("shop", "production", info.id, yes=True)
    assert env.dump("production") == original
    ids = [b.id for b in env.api.data.backups("shop", "production")]
    assert info.id in ids
    if env.engine == "sqlite":
        assert result.safety_backup in ids
        kinds = {b.id: b.kind for b in env.api.data.backups("shop", "production")}
        assert kinds[result.safety_backup] == "safety"
    else:  # no second dump: the replaced database is kept for an undo
        assert result.safety_backup is None and len(ids) == 1
        copies = env.api.data.undo_copies("shop", "production")
        assert [c.database for c in copies] == [result.undo]
    actions = [e.action for e in env.api.audit.events(project="shop")]
    assert "db.restore" in actions and "db.backup" in actions


def test_truncated_backup_fails_verification_and_is_never_restored(env: Env) -> None:
    env.seed("production", users=50)
    info = env.api.data.backup("shop", "production")
    path = env.api.data.target("shop", "production").local_path(info.id)
    assert path is not None
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    env.execute("production", ["DELETE FROM payments"])
    before = env.dump("production")
    n_backups = len(env.api.data.backups("shop", "production"))
    with pytest.raises(BackupDamaged):
        env.api.data.restore("shop", "production", info.id, yes=True)
    assert env.dump("production") == before
    assert len(env.api.data.backups("shop", "production")) == n_backups  # no safety backup
    report = env.api.data.drill("shop", "production", info.id)
    assert not report.passed and report.problems


def test_flipped_byte_inside_table_fails_verification(env: Env) -> None:
    env.seed("production", users=30)
    info = env.api.data.backup("shop", "production")
    if env.engine == "sqlite":
        env.alter_backup(
            info.id, "tables/users.jsonl", lambda d: d.replace(b"person1@", b"person9@", 1)
        )
    else:  # a PostgreSQL backup is its pg_dump archive
        env.alter_backup(info.id, DUMP_MEMBER, lambda d: d[:-9] + bytes([d[-9] ^ 1]) + d[-8:])
    with pytest.raises(BackupDamaged, match="sha256"):
        env.api.data.verify("shop", "production", info.id)


def test_member_larger_than_its_manifest_entry_is_not_read_past_it(sqlite_env: Env) -> None:
    env = sqlite_env
    env.seed("production", users=30)
    info = env.api.data.backup("shop", "production")
    # a member that inflates far past what the manifest lists (as a ZIP bomb would)
    env.alter_backup(info.id, "tables/users.jsonl", lambda d: d + b" " * (8 << 20))
    env.execute("production", ["DELETE FROM payments"])
    before = env.dump("production")
    with pytest.raises(BackupDamaged, match=r"more than the \d+ bytes the manifest lists"):
        env.api.data.restore("shop", "production", info.id, yes=True)
    assert env.dump("production") == before


def test_import_stops_at_an_overlong_line_and_changes_nothing(
    sqlite_env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = sqlite_env
    env.seed("development", users=5)
    env.seed("preview", users=3)
    before = env.dump("preview")
    out = tmp_path / "snap"
    env.api.data.export("shop", "development", out)
    monkeypatch.setattr(snapshot_io, "MAX_LINE", 4096)  # 256 MB otherwise: too slow to write
    users = out / "tables" / "users.jsonl"
    rewrite(users, users.read_bytes() + b'{"id": 6, "email": "' + b"x" * 10_000 + b'"}')
    with pytest.raises(SnapshotError, match=r"snap:tables/users.jsonl: a line longer than"):
        env.api.data.import_snapshot("shop", "preview", out, mode="replace")
    assert env.dump("preview") == before


def test_encrypted_backup_hides_values_and_restores(env: Env) -> None:
    env.configure(encrypt=True)
    env.seed("production", users=10)
    original = env.dump("production")
    info = env.api.data.backup("shop", "production")
    assert info.encrypted
    path = env.api.data.target("shop", "production").local_path(info.id)
    assert path is not None
    with zipfile.ZipFile(path) as zf:
        blob = b"".join(zf.read(n) for n in zf.namelist())
    assert b"real-mail.test" not in blob
    env.execute("production", ["DELETE FROM payments"])
    env.api.data.restore("shop", "production", info.id, yes=True)
    assert env.dump("production") == original
    assert env.api.data.drill("shop", "production").passed


def test_drill_passes_on_a_good_backup(env: Env) -> None:
    env.seed("production", users=25)
    env.api.data.backup("shop", "production")
    report = env.api.data.drill("shop", "production")
    assert report.passed, report
    # on PostgreSQL the schema pg_restore rebuilt is compared with the dump's as well
    # and the files archive is read through (empty here)
    extra = {"(files)"} | ({"schema"} if env.engine == "postgres" else set())
    assert {c.table for c in report.checks} == {"users", "payments"} | extra
    assert all(c.checksum_ok and c.expected_rows == c.actual_rows for c in report.checks)


def test_clone_refuses_unruled_pii_columns_and_lists_them(env: Env) -> None:
    rules = {k: v for k, v in SANITIZE.items() if k not in ("users.email", "payments.card_number")}
    env.configure(sanitize=rules)
    env.seed("production", users=5)
    with pytest.raises(SanitizeRefused) as exc:
        env.api.data.clone("shop", "production", "preview")
    cols = {f"{p.table}.{p.column}" for p in exc.value.problems}
    assert cols == {"users.email", "payments.card_number"}
    assert "users.email" in exc.value.message
    assert env.dump("preview") == {}
    # a column added since the rules were written stops it too
    env.configure()
    env.execute("production", ["ALTER TABLE users ADD COLUMN bio TEXT"])
    with pytest.raises(SanitizeRefused) as exc2:
        env.api.data.clone("shop", "production", "preview")
    assert [f"{p.table}.{p.column}" for p in exc2.value.problems] == ["users.bio"]
    with pytest.raises(UsageError, match="production"):
        env.api.data.clone("shop", "preview", "production")


def test_sanitized_clone_leaks_no_pii_and_keeps_joins(env: Env) -> None:
    env.seed("production", users=40)
    prod = env.dump("production")
    report = env.api.data.clone("shop", "production", "preview")
    assert report.sanitized and report.rows == {"users": 40, "payments": 80}
    assert set(report.transformed["users"]) == {"email", "name", "phone", "avatar"}
    clone = env.dump("preview")
    secrets_ = {u[1] for u in prod["users"]} | {u[3] for u in prod["users"]}
    secrets_ |= {p[3] for p in prod["payments"]} | {p[2] for p in prod["payments"]}
    for table in clone.values():
        for row in table:
            for cell in row:
                text = cell if isinstance(cell, str) else json.dumps(cell, default=str)
                for s in secrets_:
                    assert s not in text
    # joins still match: the payment's customer email equals its user's sanitized email
    emails = {u[0]: u[1] for u in clone["users"]}
    assert len(set(emails.values())) == 40  # unique stays unique
    for p in clone["payments"]:
        assert p[2] == emails[p[1]]
    # deterministic: a second clone gives the same values
    again = env.api.data.clone("shop", "production", "preview", yes=True)
    assert again.safety_backup is not None
    assert env.dump("preview") == clone
    events = env.api.audit.events(project="shop", action="db.clone")
    assert events and events[0].details["sanitized"] is True


def test_clone_needs_yes_to_replace_data(env: Env) -> None:
    env.seed("production", users=3)
    env.seed("preview", users=2)
    before = env.dump("preview")
    with pytest.raises(ConfirmationRequired):
        env.api.data.clone("shop", "production", "preview")
    assert env.dump("preview") == before


def test_pre_migration_snapshot(env: Env) -> None:
    env.seed("production", users=4)
    bid = env.api.data.snapshot_before_migration("shop", "production", "dep_123")
    (info,) = [b for b in env.api.data.backups("shop", "production") if b.id == bid]
    assert info.kind == "pre-migration" and info.note == "dep_123"


# -- engine-independent ---------------------------------------------------------


@pytest.fixture
def sqlite_env(api: Tristage, repo: Path) -> Env:
    e = Env(api, repo, "sqlite", "x")
    e.configure()
    return e


def test_killed_backup_is_never_listed(sqlite_env: Env, tmp_path: Path) -> None:
    env = sqlite_env
    env.seed("production", users=200)
    script = (
        "import os, signal\n"
        "from pathlib import Path\n"
        "from tristage.api import Tristage\n"
        "api = Tristage(Path(os.environ['TRISTAGE_HOME']))\n"
        "def progress(table, done, total):\n"
        "    if table == 'payments':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "api.data.backup('shop', 'production', progress=progress)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    root = env.api.home / "backups" / "shop" / "production"
    assert any(p.name.startswith(".partial-") for p in root.iterdir())  # the half-written file
    assert env.api.data.backups("shop", "production") == []
    with pytest.raises(TristageError):
        env.api.data.drill("shop", "production")
    assert env.api.data.target("shop", "production").sweep(older_than=-1) == 1


def test_scheduler_runs_due_backups_and_catches_up_once(sqlite_env: Env) -> None:
    env = sqlite_env
    env.seed("production", users=3)
    tz = dt.datetime.now().astimezone().tzinfo
    day = dt.datetime(2030, 1, 10, 1, 0, tzinfo=tz)
    assert env.api.data.run_due_backups(day) == []  # first sight: a baseline
    assert env.api.data.run_due_backups(day + dt.timedelta(minutes=30)) == []
    ran = env.api.data.run_due_backups(day + dt.timedelta(hours=1, minutes=1))
    assert len(ran) == 1
    assert env.api.data.run_due_backups(day + dt.timedelta(hours=1, minutes=2)) == []
    # down for three days: one catch-up run, not three
    ran = env.api.data.run_due_backups(day + dt.timedelta(days=3, hours=5))
    assert len(ran) == 1
    kinds = {b.kind for b in env.api.data.backups("shop", "production")}
    assert kinds == {"scheduled"}
    state = env.api.data.schedule_state("shop")
    assert state[0]["last_backup"] == ran[0] and state[0]["last_error"] is None
    # a schedule that changed starts over: a new baseline, the last outcome forgotten
    env.api.store.execute("UPDATE data_backup_schedule SET schedule='0 3 * * *', last_error='x'")
    later = day + dt.timedelta(days=4)
    assert env.api.data.run_due_backups(later) == []
    (state,) = env.api.data.schedule_state("shop")
    assert state["schedule"] == "0 2 * * *" and state["last_run"] == later.timestamp()
    assert state["last_backup"] is None and state["last_error"] is None


def test_prune_keeps_by_policy_and_dry_run_deletes_nothing(sqlite_env: Env) -> None:
    env = sqlite_env
    env.seed("production", users=2)
    ids = [env.api.data.backup("shop", "production", kind="scheduled").id for _ in range(4)]
    # spread them over days by rewriting the catalog times
    for i, bid in enumerate(ids):
        at = dt.datetime(2030, 1, 1 + i * 10, tzinfo=dt.UTC).timestamp()
        env.api.store.execute("UPDATE data_backups SET created_at=? WHERE id=?", (at, bid))
    dry = env.api.data.prune("shop", "production", dry_run=True)
    assert len(env.api.data.backups("shop", "production")) == 4
    # keep daily=2, weekly=1, monthly=1: the two newest days (monthly/weekly overlap)
    assert set(dry.keep) == {ids[3], ids[2]} and set(dry.delete) == {ids[0], ids[1]}
    assert any("daily" in r for r in dry.keep[ids[3]])
    done = env.api.data.prune("shop", "production")
    assert {b.id for b in env.api.data.backups("shop", "production")} == set(done.keep)
