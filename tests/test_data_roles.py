"""PostgreSQL environments: a login role and password of their own per environment.

Run against a cluster the tests start (`pgcluster.scram_pg`, scram-sha-256), since
the shared server trusts loopback connections and would accept any password; the
`tristage check` probe is also run against that trusting server.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from conftest import PG_SERVER, require_pg
from pgcluster import PgCluster, scram_pg_fixture  # noqa: F401 - the scram_pg fixture
from tristage.api import Tristage
from tristage.edges.datastores import DataStoreError
from tristage.edges.datastores.postgres import (
    database_of,
    drop_role,
    drop_with_copies,
    with_credentials,
    with_database,
)
from tristage.services.data_stores import role_name

ENVS = ("development", "preview", "production")


def config(project: str, server: str) -> str:
    dbs = "".join(
        f'\n[environments.{e}.database]\nengine = "postgres"\nurl = "{server}"\n' for e in ENVS
    )
    return f"""
[project]
name = "{project}"

[environments.development]
tier = "development"
branches = ["dev"]

[environments.preview]
tier = "preview"
branches = ["test"]

[environments.production]
tier = "production"
branches = ["main"]
{dbs}
[sanitize]
"notes.email" = "email"
"notes.body" = "redact"
"""


class Project:
    def __init__(self, api: Tristage, repo: Path, server: str) -> None:
        self.api, self.server = api, server
        self.name = f"shop-{secrets.token_hex(3)}"
        (repo / "tristage.toml").write_text(config(self.name, server))
        api.open_project(repo)

    def db(self, env: str) -> str:
        return f"tristage_{self.name}_{env}".replace("-", "_")

    def url(self, env: str) -> str:
        return self.api.data.database_url(self.name, env)

    def admin(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(with_database(self.server, database), autocommit=True)

    def cleanup(self) -> None:
        for env in ENVS:
            drop_with_copies(self.server, self.db(env))  # and the undo copies of restores
            drop_role(self.server, role_name(self.db(env)))


@pytest.fixture
def shop(api: Tristage, repo: Path, scram_pg: PgCluster) -> Iterator[Project]:
    p = Project(api, repo, scram_pg.admin_url)
    yield p
    p.cleanup()


@pytest.fixture
def trusting(api: Tristage, repo: Path) -> Iterator[Project]:
    """The same project on the shared server, which trusts loopback connections."""
    require_pg()
    p = Project(api, repo, PG_SERVER)
    yield p
    p.cleanup()


def user_of(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT current_user").fetchone()
    assert row is not None
    return str(row[0])


# -- a role per environment ----------------------------------------------------------


def test_each_environment_connects_as_its_own_role_with_no_power(shop: Project) -> None:
    urls = {e: shop.url(e) for e in ENVS}
    for env, url in urls.items():
        assert database_of(url) == shop.db(env)
        assert user_of(url) == role_name(shop.db(env)) == shop.db(env)
    assert len(set(urls.values())) == 3
    with shop.admin() as conn:
        for env in ENVS:
            row = conn.execute(
                "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication,"
                " rolbypassrls, (SELECT pg_get_userbyid(datdba) FROM pg_database"
                " WHERE datname = %s) FROM pg_roles WHERE rolname = %s",
                (shop.db(env), shop.db(env)),
            ).fetchone()
            assert row == (True, False, False, False, False, False, shop.db(env))


def test_preview_cannot_open_production_and_a_wrong_password_is_refused(shop: Project) -> None:
    preview, production = shop.url("preview"), shop.url("production")
    assert user_of(preview) == shop.db("preview")  # its own database: yes
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(with_database(preview, shop.db("production")))
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(with_credentials(production, shop.db("production"), "not-the-password"))
    # nor with preview's password for production's role
    preview_pw = preview.split("@", 1)[0].rsplit(":", 1)[1]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(with_credentials(production, shop.db("production"), preview_pw))


def test_the_password_is_generated_once_and_kept_sealed(
    shop: Project, api: Tristage, home: Path
) -> None:
    url = shop.url("production")
    password = url.split("@", 1)[0].rsplit(":", 1)[1]
    assert len(password) >= 40
    again = Tristage(home, actor="tester")  # another process: same password, re-provisioned
    try:
        assert again.data.database_url(shop.name, "production") == url
    finally:
        again.close()
    assert user_of(url) == shop.db("production")
    raw = b"".join(p.read_bytes() for p in home.glob("state.db*"))
    assert password.encode() not in raw
    db = sqlite3.connect(home / "state.db")
    rows = db.execute("SELECT environment FROM data_roles WHERE project=?", (shop.name,))
    assert sorted(r[0] for r in rows) == sorted(ENVS)
    db.close()
    # redacted wherever secrets are
    assert password not in api.variables.redactor(shop.name)(f"DATABASE_URL={url}")
    events = [e for e in api.audit.events(project=shop.name) if e.action == "db.role"]
    assert {e.environment for e in events} == set(ENVS)


def test_an_existing_database_is_handed_to_its_role_and_locked_down(shop: Project) -> None:
    # databases made before roles existed: objects owned by the admin, PUBLIC may connect
    for env in ("preview", "production"):
        with shop.admin() as conn:
            conn.execute(f'CREATE DATABASE "{shop.db(env)}"')
        with shop.admin(shop.db(env)) as conn:
            conn.execute("CREATE SCHEMA app")
            conn.execute("CREATE TYPE app.mood AS ENUM ('ok', 'meh')")
            conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text, mood app.mood)")
            conn.execute("CREATE SEQUENCE tickets")
            conn.execute("CREATE VIEW note_bodies AS SELECT body FROM notes")
            conn.execute(
                "CREATE FUNCTION note_count() RETURNS bigint LANGUAGE sql"
                " AS 'SELECT count(*) FROM notes'"
            )
            conn.execute("INSERT INTO notes (body, mood) VALUES ('before', 'ok')")
    # the first use of preview provisions it, and locks production's database too
    preview = shop.url("preview")
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(with_database(preview, shop.db("production")))
    with psycopg.connect(preview) as app:  # the app owns everything in its database
        app.execute("INSERT INTO notes (body, mood) VALUES ('after', 'meh')")
        app.execute("ALTER TABLE notes ADD COLUMN tag text")
        app.execute("ALTER TYPE app.mood ADD VALUE 'great'")
        assert app.execute("SELECT nextval('tickets')").fetchone() == (1,)
        assert app.execute("SELECT note_count()").fetchone() == (2,)
        assert app.execute("SELECT count(*) FROM note_bodies").fetchone() == (2,)
    with shop.admin(shop.db("production")) as conn:
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class"
            " WHERE relnamespace = 'public'::regnamespace"
        ).fetchall()
    assert owners == [(shop.db("production"),)]
    with shop.admin() as conn:  # no other role of the server may connect to either
        conn.execute("CREATE ROLE bystander LOGIN")
        try:
            for env in ("preview", "production"):
                allowed = conn.execute(
                    "SELECT has_database_privilege('bystander', %s, 'CONNECT')", (shop.db(env),)
                ).fetchone()
                assert allowed == (False,), env
        finally:
            conn.execute("DROP ROLE bystander")


def test_restores_and_clones_leave_tables_owned_by_the_environment_role(shop: Project) -> None:
    with psycopg.connect(shop.url("production")) as app:
        app.execute("CREATE TABLE notes (id bigserial PRIMARY KEY, email text, body text)")
        app.execute("INSERT INTO notes (email, body) VALUES ('a@real.test', 'private')")
    backup = shop.api.data.backup(shop.name, "production")
    shop.api.data.restore(shop.name, "production", backup.id, yes=True)
    shop.api.data.clone(shop.name, "production", "preview")
    for env in ("production", "preview"):
        with psycopg.connect(shop.url(env)) as app:  # the app can still change its tables
            app.execute("INSERT INTO notes (email, body) VALUES ('b@x.test', 'new')")
            app.execute("ALTER TABLE notes ADD COLUMN extra int")
            row = app.execute(
                "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'notes'"
            ).fetchone()
            assert row == (shop.db(env),), env
    assert shop.api.data.drill(shop.name, "production").passed


def test_an_admin_that_cannot_create_roles_gets_a_clear_error(
    api: Tristage, repo: Path, scram_pg: PgCluster
) -> None:
    with psycopg.connect(scram_pg.url("postgres", scram_pg.password, "postgres"),
                         autocommit=True) as conn:  # fmt: skip
        conn.execute("CREATE ROLE weak LOGIN CREATEDB PASSWORD 'weak-pw'")
    try:
        p = Project(api, repo, scram_pg.url("weak", "weak-pw"))
        with pytest.raises(DataStoreError, match="cannot give database") as info:
            p.url("production")
        assert "CREATEROLE" in (info.value.hint or "")
        assert "weak-pw" not in str(info.value)
    finally:
        with psycopg.connect(scram_pg.url("postgres", scram_pg.password, "postgres"),
                             autocommit=True) as conn:  # fmt: skip
            for row in conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'tristage_shop_%'"
                " AND pg_get_userbyid(datdba) = 'weak'"
            ).fetchall():
                conn.execute(f'DROP DATABASE "{row[0]}"')
            conn.execute("DROP ROLE weak")


def test_a_createrole_admin_that_is_not_superuser_provisions_roles(
    api: Tristage, repo: Path, scram_pg: PgCluster
) -> None:
    superuser = scram_pg.url("postgres", scram_pg.password, "postgres")
    with psycopg.connect(superuser, autocommit=True) as conn:
        conn.execute("CREATE ROLE deployer LOGIN CREATEDB CREATEROLE PASSWORD 'deploy-pw'")
    p = Project(api, repo, scram_pg.url("deployer", "deploy-pw"))
    try:
        preview, production = p.url("preview"), p.url("production")
        assert user_of(preview) == p.db("preview") and user_of(production) == p.db("production")
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(with_database(preview, p.db("production")))
        with psycopg.connect(preview) as app:
            app.execute("CREATE TABLE notes (id bigserial PRIMARY KEY, email text, body text)")
            app.execute("INSERT INTO notes (email, body) VALUES ('a@real.test', 'x')")
        backup = api.data.backup(p.name, "preview")
        api.data.restore(p.name, "preview", backup.id, yes=True)
        with psycopg.connect(preview) as app:
            assert app.execute("SELECT count(*) FROM notes").fetchone() == (1,)
    finally:
        p.cleanup()
        with psycopg.connect(superuser, autocommit=True) as conn:
            conn.execute("DROP ROLE deployer")


# -- tristage check: does the server check passwords? -------------------------------


def test_check_flags_a_server_that_trusts(trusting: Project) -> None:
    facts = trusting.api.data.stores.auth_facts(trusting.name)
    assert {e: f.outcome for e, f in facts.items()} == dict.fromkeys(ENVS, "trust")
    found = {
        (f.environment, f.severity)
        for f in trusting.api.variables.check(trusting.name)
        if f.rule == "database.no-password"
    }
    assert found == {("production", "error"), ("preview", "warning"), ("development", "warning")}
    message = next(
        f.message for f in trusting.api.variables.check(trusting.name, "production")
        if f.rule == "database.no-password"
    )  # fmt: skip
    assert "pg_hba.conf" in message and "scram-sha-256" in message
    assert "127.0.0.1:5432" in message or PG_SERVER.rsplit("@", 1)[-1] in message
    with pytest.raises(Exception, match=r"database\.no-password"):
        trusting.api.variables.enforce(trusting.name, "production")
    assert any("database.no-password" in w for w in trusting.api.variables.enforce(
        trusting.name, "preview"))  # fmt: skip


def test_check_passes_a_server_that_checks_passwords(shop: Project) -> None:
    facts = shop.api.data.stores.auth_facts(shop.name)
    assert {e: f.outcome for e, f in facts.items()} == dict.fromkeys(ENVS, "password")
    assert not [f for f in shop.api.variables.check(shop.name) if f.rule.startswith("database.")]
    assert shop.api.variables.enforce(shop.name, "production") == []


def test_check_reports_a_server_it_cannot_reach(api: Tristage, repo: Path) -> None:
    from pgcluster import free_port

    p = Project(api, repo, f"postgresql://postgres:pw@127.0.0.1:{free_port()}")
    found = [f for f in api.variables.check(p.name) if f.rule.startswith("database.")]
    assert {(f.rule, f.environment, f.severity) for f in found} == {
        ("database.unreachable", e, "warning") for e in ENVS
    }
    assert all("pw@" not in f.message for f in found)
