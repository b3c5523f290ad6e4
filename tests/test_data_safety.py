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
