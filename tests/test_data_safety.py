"""Keys and files of the data layer: the pseudonymization key sealed in the secrets box
(an earlier plain one sealed in place), production backups encrypted by default, imports
checked against their manifest before they commit, a Convex ZIP sanitized on its way
into a non-production environment."""

from __future__ import annotations

import json
import secrets
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_data import Env, config_text
from tristage.api import Tristage
from tristage.edges.secrets import MAGIC
from tristage.edges.snapshot_io import ENC_MAGIC, SnapshotError
from tristage.errors import UsageError
from tristage.services.data_records import SanitizeRefused


@pytest.fixture
def sq(api: Tristage, repo: Path) -> Iterator[Env]:
    e = Env(api, repo, "sqlite", secrets.token_hex(4))
    e.configure()
    yield e


def test_the_pseudonymization_key_is_sealed_in_the_state_store(sq: Env) -> None:
    key = sq.api.project_salt("shop")
    row = sq.api.store.query_one("SELECT key_salt FROM projects WHERE name='shop'")
    assert row is not None
    stored = bytes(row["key_salt"])
    assert stored.startswith(MAGIC) and key not in stored and len(key) == 32
    assert key not in (sq.api.home / "state.db").read_bytes()
    assert sq.api.project_salt("shop") == key  # stable


def test_a_plain_key_of_an_earlier_version_is_sealed_in_place(sq: Env) -> None:
    plain = secrets.token_bytes(32)
    sq.api.store.execute("UPDATE projects SET key_salt=? WHERE name='shop'", (plain,))
    assert sq.api.project_salt("shop") == plain  # the same pseudonyms as before
    row = sq.api.store.query_one("SELECT key_salt FROM projects WHERE name='shop'")
    assert row is not None and bytes(row["key_salt"]).startswith(MAGIC)
    assert sq.api.project_salt("shop") == plain
    assert [e.action for e in sq.api.audit.events(action="project.key.sealed")] == [
        "project.key.sealed"
    ]
    # opening the project (any command) seals one too
    sq.api.store.execute("UPDATE projects SET key_salt=? WHERE name='shop'", (plain,))
    sq.api.open_project(sq.repo)
    row = sq.api.store.query_one("SELECT key_salt FROM projects WHERE name='shop'")
    assert row is not None and bytes(row["key_salt"]).startswith(MAGIC)


def test_production_backups_are_encrypted_unless_told_otherwise(sq: Env) -> None:
    text = config_text("sqlite", sq.token, {}).replace("encrypt = false\n", "")
    (sq.repo / "tristage.toml").write_text(text)
    sq.api.open_project(sq.repo)
    sq.seed("production", users=3)
    info = sq.api.data.backup("shop", "production")
    path = next((sq.api.home / "backups").rglob(f"{info.id}*"))
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        member = next(n for n in zf.namelist() if n.startswith("tables/"))
        assert manifest["encrypted"] is True and zf.read(member).startswith(ENC_MAGIC)
    assert path.stat().st_mode & 0o077 == 0


def test_import_checks_the_manifest_before_it_commits(sq: Env, tmp_path: Path) -> None:
    sq.seed("development", users=5)
    out = tmp_path / "dev.zip"
    sq.api.data.export("shop", "development", out, "zip")
    before = sq.dump("preview")

    def altered(change: str) -> Path:
        bad = tmp_path / f"{change}.zip"
        with zipfile.ZipFile(out) as src, zipfile.ZipFile(bad, "w") as dst:
            for item in src.infolist():
                data = src.read(item)
                if item.filename == "tables/users.jsonl":
                    lines = data.splitlines(keepends=True)
                    if change == "row":  # one row changed: same count, other sha256
                        lines[0] = lines[0].replace(b"person1@", b"person9@")
                    else:  # one row dropped
                        lines = lines[1:]
                    data = b"".join(lines)
                dst.writestr(item, data)
        return bad

    with pytest.raises(SnapshotError, match="sha256 differs"):
        sq.api.data.import_snapshot("shop", "preview", altered("row"))
    with pytest.raises(SnapshotError, match="4 rows, the manifest says 5"):
        sq.api.data.import_snapshot("shop", "preview", altered("count"))
    assert sq.dump("preview") == before
    failed = sq.api.audit.events(action="db.import.failed")
    assert len(failed) == 2 and all(e.details == {"error": "SnapshotError"} for e in failed)
    rows = sq.api.data.import_snapshot("shop", "preview", out).rows
    assert rows == {t: len(r) for t, r in sq.dump("development").items()}


def _convex_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        docs = [{"_id": f"k{i}", "_creationTime": 1714000000000.0 + i,
                 "email": f"real{i}@person.test", "age": 30 + i} for i in range(5)]  # fmt: skip
        zf.writestr("users/documents.jsonl", "".join(json.dumps(d) + "\n" for d in docs))
    return path


def test_a_convex_zip_goes_to_preview_only_sanitized(sq: Env, tmp_path: Path) -> None:
    z = _convex_zip(tmp_path / "convex.zip")
    sq.configure({})
    with pytest.raises(SanitizeRefused) as caught:
        sq.api.data.import_snapshot("shop", "preview", z)
    assert "users.email" in str(caught.value) and "import refused" in str(caught.value)
    assert "real0@person.test" not in str(caught.value)
    assert sq.dump("preview") == {}
    sq.configure({"users.email": "email", "users.age": "keep", "users._id": "keep",
                  "users._creationTime": "keep"})  # fmt: skip
    result = sq.api.data.import_snapshot("shop", "preview", z)
    assert result.rows == {"users": 5}
    emails = [r[2] for r in sq.dump("preview")["users"]]
    assert all(e.endswith("@example.invalid") for e in emails), emails
    (event,) = sq.api.audit.events(action="db.import")
    assert event.details["sanitized"] is True
    # production takes it as it is; --not-production is an explicit, audited choice
    sq.api.data.import_snapshot("shop", "development", z, not_production=True)
    assert any("real0@person.test" in str(r) for r in sq.dump("development")["users"])


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_convex_import_empty_tables_special_floats_and_stored_files(
    engine: str, api: Tristage, repo: Path, tmp_path: Path
) -> None:
    import base64
    import math
    import struct

    e = Env(api, repo, engine, secrets.token_hex(4))
    e.configure({})
    try:
        z = tmp_path / "convex.zip"
        nan = base64.b64encode(struct.pack("<d", math.nan)).decode()
        inf = base64.b64encode(struct.pack("<d", -math.inf)).decode()
        with zipfile.ZipFile(z, "w") as zf:
            zf.writestr("empty/documents.jsonl", "")
            docs = [{"_id": "a", "_creationTime": 1.5, "x": {"$float": nan}},
                    {"_id": "b", "_creationTime": 2.5, "x": {"$float": inf}},
                    {"_id": "c", "_creationTime": 3.5, "x": 1.25}]  # fmt: skip
            zf.writestr("m/documents.jsonl", "".join(json.dumps(d) + "\n" for d in docs))
            zf.writestr("_storage/documents.jsonl", '{"_id": "kg2abc", "size": 5}\n')
            zf.writestr("_storage/kg2abc", b"\x89PNG!")
        result = api.data.import_snapshot("shop", "development", z, not_production=True)
        assert result.rows == {"empty": 0, "m": 3}
        xs = [r[2] for r in e.dump("development")["m"]]
        # SQLite has no NaN (it stores NULL); PostgreSQL keeps it
        assert xs[0] is None if engine == "sqlite" else math.isnan(xs[0])
        assert xs[1] == -math.inf and xs[2] == 1.25
        stored = api.data.data_dir("shop", "development") / "convex-storage" / "kg2abc"
        assert stored.read_bytes() == b"\x89PNG!" and stored.stat().st_mode & 0o077 == 0
        # sanitized into preview: the stored files (personal data, perhaps) stay out
        e.configure({"m.x": "keep", "m._id": "keep", "m._creationTime": "keep",
                     "empty._id": "keep", "empty._creationTime": "keep"})  # fmt: skip
        api.data.import_snapshot("shop", "preview", z)
        assert not (api.data.data_dir("shop", "preview") / "convex-storage").exists()
        event = api.audit.events(action="db.import")[0]
        assert event.details["storage_skipped"] == 1
    finally:
        e.cleanup()


def test_convex_component_tables_are_refused_by_name_never_dropped(sq: Env, tmp_path: Path) -> None:
    z = _convex_zip(tmp_path / "convex.zip")
    with zipfile.ZipFile(z, "a") as zf:  # convex-backend's layout of component tables
        zf.writestr("_components/ratelimiter/limits/documents.jsonl", '{"_id": "r1"}\n')
        zf.writestr("_components/auth/_components/otp/codes/documents.jsonl", "")
    with pytest.raises(UsageError, match="ratelimiter:limits") as caught:
        sq.api.data.import_snapshot("shop", "development", z, not_production=True)
    assert "auth/otp:codes" in str(caught.value) and "nothing was imported" in str(caught.value)
    assert "--table" in (caught.value.hint or "")
    assert sq.dump("development") == {}
    # the app's own tables, named: imported, the components' left as said
    result = sq.api.data.import_snapshot(
        "shop", "development", z, tables=["users"], not_production=True
    )
    assert result.rows == {"users": 5}


# What `npx convex import` accepts of a snapshot ZIP (convex-backend: table names are
# identifiers not starting with "_", field names identifiers of at most 64 characters
# starting neither with "$" nor "_", object keys not starting with "$", and only the
# tagged values $integer, $float and $bytes).
_CONVEX_IDENT = r"[A-Za-z][A-Za-z0-9_]{0,63}"


def _convex_accepts(value: object, top: bool = False) -> bool:
    import re

    if isinstance(value, dict):
        if len(value) == 1 and next(iter(value)) in ("$integer", "$float", "$bytes"):
            return isinstance(next(iter(value.values())), str)
        for k, v in value.items():
            ok = re.fullmatch(_CONVEX_IDENT, k) if top else not k.startswith("$")
            if not ok or not _convex_accepts(v):
                return False
        return True
    if isinstance(value, list):
        return all(_convex_accepts(v) for v in value)
    return value is None or isinstance(value, bool | int | float | str)


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_export_as_convex_follows_what_convex_import_accepts(
    engine: str, api: Tristage, repo: Path, tmp_path: Path
) -> None:
    import re

    e = Env(api, repo, engine, secrets.token_hex(4))
    e.configure()
    try:
        e.seed("development", users=5)
        e.execute("development", ['CREATE TABLE "_odd.name" ("_id" integer, "$x" text)',
                                  "INSERT INTO \"_odd.name\" VALUES (1, 'a')"])  # fmt: skip
        out = tmp_path / "dev-convex.zip"
        result = api.data.export("shop", "development", out, "convex")
        assert result.manifest.total_rows == 5 + 10 + 1
        with zipfile.ZipFile(out) as zf:
            names = zf.namelist()
            folders = {n.split("/")[0] for n in names}
            assert all(n.endswith("/documents.jsonl") for n in names)
            mine = {f for f in folders if not f.startswith("_")}
            (odd_table,) = mine - {"users", "payments"}  # odd_name, public__odd_name on PG
            assert odd_table.endswith("odd_name")
            for member in names:
                table = member.split("/")[0]
                if table != "_tables":
                    assert re.fullmatch(_CONVEX_IDENT, table) and not table.startswith("_")
                for line in zf.read(member).decode().splitlines():
                    doc = json.loads(line)
                    assert _convex_accepts(doc, top=table != "_tables"), (member, doc)
            odd = json.loads(zf.read(f"{odd_table}/documents.jsonl"))
            assert odd == {"id_": 1, "x_": "a"}  # _id and $x are the system's
            user = json.loads(zf.read("users/documents.jsonl").splitlines()[0])
            assert user["email"] == "person1@real-mail.test" and isinstance(user["id"], int)
        assert out.stat().st_mode & 0o077 == 0
        # and tristage reads it back as a Convex ZIP
        assert (
            api.data.import_snapshot("shop", "preview", out, not_production=True).rows["users"] == 5
        )
    finally:
        e.cleanup()


def test_leftovers_of_killed_operations_are_swept(sq: Env) -> None:
    """A partial backup, a downloaded copy and a drill's scratch copy left by processes
    that died are removed by the next backup (once older than an hour)."""
    import os

    sq.seed("production", users=2)
    sq.api.data.backup("shop", "production")
    tmp = sq.api.home / "tmp"
    (tmp / "backup-downloads").mkdir(parents=True, exist_ok=True)
    left = [
        sq.api.home / "backups" / "shop" / "production" / ".partial-x-1234",
        tmp / "backup-downloads" / ".partial-y.tsbackup.zip",
        tmp / "drill-shop-production-abcd1234.sqlite3",
    ]
    fresh = tmp / "drill-shop-production-beefbeef.sqlite3"  # a drill running right now
    for p in [*left, fresh]:
        p.write_bytes(b"production rows")
    for p in left:
        os.utime(p, (1, 1))
    sq.api.data.backup("shop", "production")
    assert [p.exists() for p in left] == [False, False, False] and fresh.exists()
    (event,) = sq.api.audit.events(action="db.sweep")
    assert event.details == {"removed": 3}
