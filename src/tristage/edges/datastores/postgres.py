"""PostgreSQL data stores (psycopg 3): one database per environment on a server.

Reads run in one REPEATABLE READ, READ ONLY transaction through server-side cursors
and COPY (constant memory); writes run in one transaction and load rows with COPY.
Snapshot lines of tables whose columns all have a SQL encoding are built by the
server (`jsonl`); a clone between two PostgreSQL stores streams COPY text rows
(`copy_rows` -> `copy_text`) and rewrites only the sanitized fields.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import quote as urlquote
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql as pgsql

from ...domain.snapshot import (
    Column,
    ForeignKey,
    JsonValue,
    SnapshotFormatError,
    Table,
    compact_json,
    decode_value,
)
from . import pg_text
from .base import BATCH_ROWS, DataStoreError, LoadError, SourcedRow, batched, quote

ENGINE = "postgres"
SCHEMA = "public"
# a table's snapshot name: `name` in the public schema, `schema.name` in another one
# (and for a public table whose name holds a dot)
_QUALIFIED = (
    "CASE WHEN {n}.nspname = 'public' AND strpos({c}.relname, '.') = 0 THEN {c}.relname::text"
    " ELSE {n}.nspname || '.' || {c}.relname END"
)


def qualified(name: str) -> str:
    """The SQL of a snapshot table name (`table` or `schema.table`)."""
    schema, dot, rel = name.partition(".")
    return f"{quote(schema)}.{quote(rel)}" if dot else quote(name)


def schema_of(name: str) -> str:
    schema, dot, _rel = name.partition(".")
    return schema if dot else SCHEMA


KIND_TYPES = {
    "integer": "bigint",
    "real": "double precision",
    "numeric": "numeric",
    "boolean": "boolean",
    "text": "text",
    "blob": "bytea",
    "json": "jsonb",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "date": "date",
    "time": "time",
    "interval": "interval",
    "uuid": "uuid",
}

_TYPNAME_KIND = {
    "int2": "integer",
    "int4": "integer",
    "int8": "integer",
    "float4": "real",
    "float8": "real",
    "numeric": "numeric",
    "bool": "boolean",
    "text": "text",
    "varchar": "text",
    "bpchar": "text",
    "name": "text",
    "citext": "text",
    "bytea": "blob",
    "json": "json",
    "jsonb": "json",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "date": "date",
    "time": "time",
    "timetz": "time",
    "interval": "interval",
    "uuid": "uuid",
}


def with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def database_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(url, connect_timeout=10, **kwargs)
    except psycopg.OperationalError as exc:
        safe = _redact(url)
        raise DataStoreError(
            f"cannot connect to PostgreSQL at {safe}: {str(exc).strip().splitlines()[0]}",
            "check the server is running and environments.<env>.database.url",
        ) from None


def _redact(url: str) -> str:
    parts = urlsplit(url)
    netloc = re.sub(r":[^@/]*@", ":****@", parts.netloc)
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def ensure_database(server_url: str, dbname: str) -> str:
    """Create `dbname` on the server if it does not exist; returns its URL."""
    with _connect(with_database(server_url, "postgres"), autocommit=True) as conn:
        _create_database(conn, dbname)
    return with_database(server_url, dbname)


def _create_database(conn: psycopg.Connection[Any], dbname: str) -> None:
    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname=%s", (dbname,)).fetchone()
    if not exists:
        try:
            conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(dbname)))
        except psycopg.errors.DuplicateDatabase:
            pass


def drop_database(server_url: str, dbname: str) -> None:
    with _connect(with_database(server_url, "postgres"), autocommit=True) as conn:
        conn.execute(
            pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(dbname))
        )


def drop_with_copies(server_url: str, dbname: str) -> None:
    """Drop `dbname` and the databases kept or left beside it (undo copies of restores,
    scratch databases of drills and restores)."""
    with _connect(with_database(server_url, "postgres"), autocommit=True) as conn:
        kinds: tuple[ScratchKind, ...] = ("undo", "drill", "restore", "old")
        names = [n for kind in kinds for n in scratch_databases(conn, dbname, kind)]
        for name in [dbname, *names]:
            conn.execute(
                pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name))
            )


def drop_role(server_url: str, role: str) -> None:
    """Drop a login role (after the databases it owns are dropped)."""
    with _connect(with_database(server_url, "postgres"), autocommit=True) as conn:
        conn.execute(pgsql.SQL("DROP ROLE IF EXISTS {}").format(pgsql.Identifier(role)))


def with_credentials(url: str, user: str, password: str) -> str:
    """`url` with its user and password replaced (host, port, database, query kept)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    auth = f"{urlquote(user, safe='')}:{urlquote(password, safe='')}"
    return urlunsplit((parts.scheme, f"{auth}@{host}", parts.path, parts.query, parts.fragment))


def server_of(url: str) -> str:
    """host:port of a server URL, without credentials (for messages)."""
    parts = urlsplit(url)
    try:
        port = parts.port or 5432
    except ValueError:
        port = 5432
    return f"{parts.hostname or 'localhost'}:{port}"


_NOT_SYSTEM = "{n}.nspname !~ '^pg_' AND {n}.nspname <> 'information_schema'"
_NOT_EXTENSION = (
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{catalog}'::regclass"
    " AND d.objid = {oid} AND d.deptype = 'e')"
)
_REL_KINDS = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW",
              "f": "FOREIGN TABLE", "S": "SEQUENCE"}  # fmt: skip
# objects of an environment's database its role must own, as (SQL keyword, name) rows
_FOREIGN_OWNED = [
    (
        "SELECT 'SCHEMA', quote_ident(n.nspname) FROM pg_namespace n"
        f" WHERE {_NOT_SYSTEM.format(n='n')} AND n.nspowner <> %(role)s::regrole"
        " AND n.nspowner <> coalesce(to_regrole('pg_database_owner'), 0)"
        f" AND {_NOT_EXTENSION.format(catalog='pg_namespace', oid='n.oid')}"
    ),
    (
        "SELECT c.relkind::text, c.oid::regclass::text FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        f" WHERE {_NOT_SYSTEM.format(n='n')} AND c.relowner <> %(role)s::regrole"
        " AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')"
        f" AND {_NOT_EXTENSION.format(catalog='pg_class', oid='c.oid')}"
        # a sequence owned by a column changes owner with its table
        " AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d"
        "  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid"
        "  AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))"
        " ORDER BY c.relkind = 'S', c.oid"
    ),
    (
        "SELECT 'ROUTINE', p.oid::regprocedure::text FROM pg_proc p"
        " JOIN pg_namespace n ON n.oid = p.pronamespace"
        f" WHERE {_NOT_SYSTEM.format(n='n')} AND p.proowner <> %(role)s::regrole"
        f" AND {_NOT_EXTENSION.format(catalog='pg_proc', oid='p.oid')}"
    ),
    (
        "SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, t.oid::regtype::text"
        " FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
        f" WHERE {_NOT_SYSTEM.format(n='n')} AND t.typowner <> %(role)s::regrole"
        " AND (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND"
        "  (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c'))"
        f" AND {_NOT_EXTENSION.format(catalog='pg_type', oid='t.oid')}"
    ),
]


def provision(server_url: str, dbname: str, role: str, password: str, create: bool = True) -> bool:
    """Give database `dbname` its own login role (idempotent); False if the database does
    not exist and `create` is False.

    The role can log in with `password` (sent as a SCRAM verifier, never in the clear)
    and has no other power (no superuser, createdb, createrole, replication, bypassrls);
    it owns the database and every object in it (objects created before, e.g. by the
    admin, are handed over); PUBLIC loses CONNECT (and TEMPORARY) on the database, so
    no other role of the server can open it, the admin's own sessions aside.
    """
    ident = pgsql.Identifier(role)
    with _connect(with_database(server_url, "postgres"), autocommit=True) as conn:
        if create:
            _create_database(conn, dbname)
        elif not conn.execute("SELECT 1 FROM pg_database WHERE datname=%s", (dbname,)).fetchone():
            return False
        verifier = conn.pgconn.encrypt_password(
            password.encode(), role.encode(), b"scram-sha-256"
        ).decode()
        powers = conn.execute(
            "SELECT rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication OR rolbypassrls"
            " FROM pg_roles WHERE rolname=%s",
            (role,),
        ).fetchone()
        try:
            if powers is None:
                try:
                    conn.execute(
                        pgsql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                            ident, pgsql.Literal(verifier)
                        )
                    )
                except psycopg.errors.DuplicateObject:  # created meanwhile
                    powers = (False,)
            if powers is not None:
                conn.execute(
                    pgsql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                        ident, pgsql.Literal(verifier)
                    )
                )
                if powers[0]:
                    conn.execute(
                        pgsql.SQL(
                            "ALTER ROLE {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
                            " NOBYPASSRLS"
                        ).format(ident)
                    )
            # the admin must be a member of the role to hand it the database and to
            # write as it (a superuser is one implicitly)
            member = conn.execute(
                "SELECT rolsuper OR pg_has_role(current_user, %s, 'MEMBER')"
                " FROM pg_roles WHERE rolname = current_user",
                (role,),
            ).fetchone()
            if not (member and member[0]):
                conn.execute(pgsql.SQL("GRANT {} TO current_user").format(ident))
            db = pgsql.Identifier(dbname)
            conn.execute(pgsql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, ident))
            conn.execute(pgsql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise DataStoreError(
                f"cannot give database {dbname} its own role {role}: {_reason(exc)}",
                "the user of environments.<env>.database.url must be a superuser or have "
                "CREATEROLE (and own the database)",
            ) from None
    with _connect(with_database(server_url, dbname)) as conn, conn.transaction():
        for query in _FOREIGN_OWNED:
            for kind, name in conn.execute(query, {"role": role}).fetchall():
                keyword = _REL_KINDS.get(kind, kind)
                conn.execute(
                    pgsql.SQL("ALTER {} {} OWNER TO {}").format(
                        pgsql.SQL(keyword), pgsql.SQL(name), ident
                    )
                )
    return True


AuthOutcome = Literal["password", "trust", "other", "unreachable"]


def probe_auth(url: str, role: str) -> tuple[AuthOutcome, str]:
    """Does the server check `role`'s password? Connects with a wrong one.

    "trust": the connection was accepted anyway; "password": refused for the password;
    "other": refused for another reason (pg_hba.conf has no line for it, ident, ...);
    "unreachable": no answer. The second item says what the server said.
    """
    wrong = with_credentials(url, role, "wrong-" + secrets.token_urlsafe(18))
    try:
        psycopg.connect(wrong, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        said = text.split("FATAL:", 1)[-1].strip()
        if "password authentication failed" in text:
            return "password", said
        if "FATAL:" in text:
            return "other", said
        return "unreachable", said
    return "trust", "a wrong password was accepted"


def _dump(v: Any) -> Any:
    if isinstance(v, JsonValue):
        return v.dumps()
    return v


def _dump_json(v: Any) -> Any:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, JsonValue):
        return v.dumps()
    return json.dumps(v, default=str)


def _dump_bool(v: Any) -> Any:
    return bool(v) if isinstance(v, int) else v


def _json_expr(col: Column) -> str | None:
    """SQL giving the snapshot JSON of `col` (as `encode_value` would), or None."""
    q = quote(col.name)
    k = col.kind
    if k in ("integer", "boolean", "text"):
        e = f"to_json({q})::text"
    elif k == "real":
        e = (
            f"CASE WHEN {q} = 'NaN' THEN '{{\"$float\":\"nan\"}}'"
            f" WHEN {q} = 'Infinity' THEN '{{\"$float\":\"inf\"}}'"
            f" WHEN {q} = '-Infinity' THEN '{{\"$float\":\"-inf\"}}'"
            # a float stays a float in JSON ("-0" would read back as the integer 0)
            f" WHEN {q}::text ~ '[.e]' THEN {q}::text ELSE {q}::text || '.0' END"
        )
    elif k == "numeric":
        e = f"'{{\"$dec\":\"' || {q}::text || '\"}}'"
    elif k in ("timestamp", "timestamptz"):
        e = f"'{{\"$ts\":' || to_json({q})::text || '}}'"
    elif k == "date":
        e = f"'{{\"$date\":' || to_json({q})::text || '}}'"
    elif k == "time":
        e = f"'{{\"$time\":\"' || {q}::text || '\"}}'"
    elif k == "uuid":
        e = f"'{{\"$uuid\":\"' || {q}::text || '\"}}'"
    elif k == "blob":
        e = f"'{{\"$b64\":\"' || translate(encode({q}, 'base64'), E'\\n', '') || '\"}}'"
    elif k == "json":
        e = f"'{{\"$json\":' || {q}::jsonb::text || '}}'"
    elif k == "other":
        e = f"to_json({q}::text)::text"
    else:  # interval, array: encoded in Python
        return None
    return f"coalesce({e}, 'null')"


def _jsonl_query(table: Table, order: str, source: str) -> str | None:
    parts = []
    for i, c in enumerate(table.columns):
        e = _json_expr(c)
        if e is None:
            return None
        key = json.dumps(c.name, ensure_ascii=False)
        lead = "{" if i == 0 else ","
        parts.append(f"'{(lead + key).replace(chr(39), chr(39) * 2)}:' || {e}")
    body = " || ".join(parts) + " || '}'" if parts else "'{}'"
    return f"SELECT {body} FROM {source} AS {_ROW} ORDER BY {order}"


class PostgresDataStore:
    """A database, opened with `url` (tristage's admin credentials).

    With `role`, writes run as that role (`SET LOCAL ROLE`), so tables a restore,
    import or clone creates belong to the environment's role, as the app's own do.
    """

    engine = ENGINE

    def __init__(self, url: str, role: str | None = None) -> None:
        self.url = url
        self.role = role

    @contextmanager
    def read(self) -> Iterator[PostgresSession]:
        """A REPEATABLE READ, READ ONLY transaction that always ends: on an error or a
        signal the connection is closed at once (the server then ends the transaction),
        never rolled back through a COPY a reader left half-read."""
        conn = _connect(self.url)
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield PostgresSession(conn)
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextmanager
    def write(self) -> Iterator[PostgresSession]:
        conn = _connect(self.url)
        try:
            with conn.transaction():
                if self.role:
                    conn.execute(pgsql.SQL("SET LOCAL ROLE {}").format(pgsql.Identifier(self.role)))
                yield PostgresSession(conn)
        finally:
            conn.close()

    def close(self) -> None:
        pass


class PostgresSession:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._deferred: list[str] = []  # primary keys to add in `finish`
        self._sources: dict[str, str] = {}

    # -- reading ---------------------------------------------------------
    def tables(self) -> list[Table]:
        rows = self.conn.execute(
            f"SELECT c.oid, {_QUALIFIED.format(n='n', c='c')} FROM pg_class c"
            " JOIN pg_namespace n ON n.oid=c.relnamespace"
            f" WHERE {_NOT_SYSTEM.format(n='n')} AND c.relkind IN ('r','p')"
            " AND NOT c.relispartition"
            f" AND {_NOT_EXTENSION.format(catalog='pg_class', oid='c.oid')}"
            " ORDER BY n.nspname <> 'public', n.nspname, c.relname",
        ).fetchall()
        return [self._table(oid, name) for oid, name in rows]

    def _table(self, oid: int, name: str) -> Table:
        cols = []
        for attname, typ, notnull, default, ident, typname, typcat, gen in self.conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,"
            " pg_get_expr(d.adbin, d.adrelid), a.attidentity, t.typname, t.typcategory,"
            " a.attgenerated = 's'"
            " FROM pg_attribute a JOIN pg_type t ON t.oid=a.atttypid"
            " LEFT JOIN pg_attrdef d ON d.adrelid=a.attrelid AND d.adnum=a.attnum"
            " WHERE a.attrelid=%s AND a.attnum>0 AND NOT a.attisdropped ORDER BY a.attnum",
            (oid,),
        ).fetchall():
            identity = ident in ("a", "d") or bool(default and default.startswith("nextval("))
            kind = _TYPNAME_KIND.get(typname, "array" if typcat == "A" else "other")
            cols.append(
                Column(
                    name=attname,
                    type=typ,
                    kind=kind,
                    nullable=not notnull,
                    default=None if identity or gen else default,
                    identity=identity,
                    generated=default if gen else None,
                )
            )
        pk: tuple[str, ...] = ()
        fks: list[ForeignKey] = []
        extra: list[str] = []
        for contype, conname, ccols, ref_table, ref_cols, condef in self.conn.execute(
            "SELECT con.contype, con.conname,"
            " array(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n,o)"
            "  JOIN pg_attribute a ON a.attrelid=con.conrelid AND a.attnum=k.n ORDER BY k.o),"
            f" {_QUALIFIED.format(n='fn', c='fc')},"
            " array(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n,o)"
            "  JOIN pg_attribute a ON a.attrelid=con.confrelid AND a.attnum=k.n ORDER BY k.o),"
            " pg_get_constraintdef(con.oid)"
            " FROM pg_constraint con LEFT JOIN pg_class fc ON fc.oid=con.confrelid"
            " LEFT JOIN pg_namespace fn ON fn.oid=fc.relnamespace"
            " WHERE con.conrelid=%s AND con.contype IN ('p','f','u','c') ORDER BY con.conname",
            (oid,),
        ).fetchall():
            if contype == "p":
                pk = tuple(ccols)
            elif contype == "f":
                fks.append(ForeignKey(tuple(ccols), ref_table, tuple(ref_cols)))
            else:
                extra.append(
                    f"ALTER TABLE {qualified(name)} ADD CONSTRAINT {quote(conname)} {condef}"
                )
        for (indexdef,) in self.conn.execute(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i"
            " WHERE i.indrelid=%s AND NOT EXISTS"
            " (SELECT 1 FROM pg_constraint c WHERE c.conindid=i.indexrelid AND c.conrelid=%s)"
            " ORDER BY i.indexrelid",
            (oid, oid),
        ).fetchall():
            extra.append(indexdef)
        return Table(name, tuple(cols), pk, tuple(fks), None, tuple(extra))

    def source(self, name: str) -> str:
        """What a read of table `name` selects from: `ONLY` the table (the rows of
        inheritance children are read as their own tables), or a partitioned table
        as a whole (its partitions are not tables of the snapshot)."""
        cached = self._sources.get(name)
        if cached is None:
            row = self.conn.execute(
                "SELECT relkind::text FROM pg_class WHERE oid = to_regclass(%s)",
                (qualified(name),),
            ).fetchone()
            kind = row[0] if row else "r"
            cached = qualified(name) if kind == "p" else f"ONLY {qualified(name)}"
            self._sources[name] = cached
        return cached

    def export_snapshot(self) -> tuple[str, int]:
        """The id of this transaction's snapshot (for `pg_dump --snapshot`) and the
        server's major version."""
        row = self.conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        return str(row[0]), server_major(self.conn)

    def count(self, table: str) -> int:
        row = self.conn.execute(f"SELECT count(*) FROM {self.source(table)}").fetchone()
        return int(row[0]) if row else 0

    def counts(self, tables: Sequence[Table]) -> dict[str, int]:
        """The exact row count of each table, in one statement of this snapshot."""
        out: dict[str, int] = {}
        for i in range(0, len(tables), 1000):  # a select list holds at most 1664 entries
            part = tables[i : i + 1000]
            cols = ", ".join(f"(SELECT count(*) FROM {self.source(t.name)})" for t in part)
            row = self.conn.execute(f"SELECT {cols}").fetchone()
            assert row is not None
            out.update((t.name, int(n)) for t, n in zip(part, row, strict=True))
        return out

    def rows(self, table: Table) -> Iterator[tuple[Any, ...]]:
        cols = ", ".join(quote(c) for c in table.column_names)
        order = _order(table)
        name = "ts_" + secrets.token_hex(6)
        # JSON values are wrapped so a JSON string is never mistaken for plain text
        json_idx = [i for i, c in enumerate(table.columns) if c.kind == "json"]
        with self.conn.cursor(name=name) as cur:
            cur.itersize = BATCH_ROWS
            cur.execute(f"SELECT {cols} FROM {self.source(table.name)} AS {_ROW} ORDER BY {order}")
            while True:
                batch = cur.fetchmany(BATCH_ROWS)
                if not batch:
                    return
                if not json_idx:
                    yield from batch
                    continue
                for row in batch:
                    vals = list(row)
                    for i in json_idx:
                        if vals[i] is not None:
                            vals[i] = JsonValue(vals[i])
                    yield tuple(vals)

    def jsonl(self, table: Table) -> Iterator[bytes] | None:
        """Blocks of snapshot JSONL lines built by the server, or None if some column
        kind (interval, array) is encoded in Python (then use `rows`)."""
        query = _jsonl_query(table, _order(table), self.source(table.name))
        if query is None:
            return None
        return self._jsonl(query)

    def _jsonl(self, query: str) -> Iterator[bytes]:
        buf: list[Any] = []
        size = 0
        with self.conn.cursor() as cur, cur.copy(f"COPY ({query}) TO STDOUT") as cp:
            for row in cp:
                buf.append(row)
                size += len(row)
                if size >= _BLOCK:
                    # JSON holds no raw control characters: COPY only doubled backslashes
                    yield b"".join(buf).replace(b"\\\\", b"\\")
                    buf.clear()
                    size = 0
        if buf:
            yield b"".join(buf).replace(b"\\\\", b"\\")

    def copy_rows(self, table: Table) -> Iterator[bytes]:
        """Every row as one COPY text row (values in `table.columns` order), unordered."""
        cols = ", ".join(quote(c) for c in table.column_names)
        with (
            self.conn.cursor() as cur,
            cur.copy(f"COPY (SELECT {cols} FROM {self.source(table.name)}) TO STDOUT") as cp,
        ):
            for row in cp:
                yield bytes(row)

    def text_loaders(self, table: Table) -> list[pg_text.Loader]:
        """For each column, a function from its COPY text to the value `rows` gives."""
        cols = ", ".join(quote(c) for c in table.column_names)
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT {cols} FROM {qualified(table.name)} LIMIT 0")
            oids = [d.type_code for d in cur.description or ()]
        out: list[pg_text.Loader] = []
        for col, oid in zip(table.columns, oids, strict=True):
            out.append(self._text_loader(col, oid))
        return out

    def _text_loader(self, col: Column, oid: int) -> pg_text.Loader:
        if col.kind == "text":
            return pg_text.unescape
        if col.kind == "integer":
            return lambda b: int(b)
        loader = self.conn.adapters.get_loader(oid, psycopg.pq.Format.TEXT)
        if loader is None:
            return pg_text.unescape
        load = loader(oid, self.conn).load
        if col.kind == "json":

            def load_json(b: bytes) -> Any:
                v = load(pg_text.unescape(b).encode("utf-8"))
                return None if v is None else JsonValue(v)

            return load_json
        return lambda b: load(pg_text.unescape(b).encode("utf-8"))

    # -- writing ---------------------------------------------------------
    def drop(self, names: Sequence[str]) -> None:
        if names:
            self.conn.execute(
                f"DROP TABLE IF EXISTS {', '.join(qualified(n) for n in names)} CASCADE"
            )

    def create(self, table: Table, source_engine: str, defer_keys: bool = False) -> None:
        """Create `table`; with `defer_keys` (rows from a store that enforced the key)
        the primary key is built by `finish`, after the rows are loaded."""
        same = source_engine == ENGINE
        parts = []
        for c in table.columns:
            typ = c.type if same and c.type else KIND_TYPES.get(c.kind, "text")
            if c.generated and same:
                ddl = f"{quote(c.name)} {typ} GENERATED ALWAYS AS ({c.generated}) STORED"
            elif c.identity:
                if not same:
                    typ = "bigint"
                ddl = f"{quote(c.name)} {typ} GENERATED BY DEFAULT AS IDENTITY"
            else:
                ddl = f"{quote(c.name)} {typ}"
                if same and c.default is not None:
                    ddl += f" DEFAULT {c.default}"
            if not c.nullable:
                ddl += " NOT NULL"
            parts.append(ddl)
        if table.primary_key:
            pk = f"PRIMARY KEY ({', '.join(quote(c) for c in table.primary_key)})"
            if defer_keys:
                self._deferred.append(f"ALTER TABLE {qualified(table.name)} ADD {pk}")
            else:
                parts.append(pk)
        schema = schema_of(table.name)
        if schema != SCHEMA:
            self.conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
        self.conn.execute(f"CREATE TABLE {qualified(table.name)} ({', '.join(parts)})")

    def clear(self, tables: Sequence[Table]) -> None:
        if not tables:
            return
        names = ", ".join(qualified(t.name) for t in tables)
        try:
            with self.conn.transaction():
                self.conn.execute(f"TRUNCATE {names}")
        except psycopg.errors.FeatureNotSupported:
            # referenced from a table outside the set: delete children first
            for t in reversed(tables):
                try:
                    self.conn.execute(f"DELETE FROM {qualified(t.name)}")
                except psycopg.errors.IntegrityError as exc:
                    raise LoadError(
                        f"table {t.name}", f"rows of another table still refer to it ({exc})"
                    ) from None

    def insert(self, table: Table, columns: Sequence[str], rows: Iterable[SourcedRow]) -> int:
        columns, keep = _writable(table, columns)
        if keep is not None:
            rows = ((ref, [vals[i] for i in keep]) for ref, vals in rows)
        dumpers: list[Callable[[Any], Any]] = []
        for name in columns:
            col = table.column(name)
            kind = col.kind if col is not None else "other"
            dumpers.append(
                _dump_json if kind == "json" else _dump_bool if kind == "boolean" else _dump
            )
        copy_sql = (
            f"COPY {qualified(table.name)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
        )
        n = 0
        with self.conn.cursor() as cur:
            for batch in batched(rows, BATCH_ROWS * 2):
                try:
                    with cur.copy(copy_sql) as cp:
                        write = cp.write_row
                        for _ref, vals in batch:
                            write([d(v) for d, v in zip(dumpers, vals, strict=True)])
                except psycopg.Error as exc:
                    raise LoadError(_where(batch, exc), _reason(exc)) from None
                n += len(batch)
        return n

    def copy_text(self, table: Table, rows: Iterable[bytes], label: str) -> int:
        """Load COPY text rows (values in `table.columns` order); a failing row raises
        LoadError naming `label row N`."""
        names, keep = _writable(table, table.column_names)
        cols = ", ".join(quote(c) for c in names)
        if keep is not None:
            rows = map(pg_text.fields_function(keep), rows)
        n = 0
        buf: list[bytes] = []
        size = 0
        try:
            with (
                self.conn.cursor() as cur,
                cur.copy(f"COPY {qualified(table.name)} ({cols}) FROM STDIN") as cp,
            ):
                write = cp.write
                for row in rows:
                    buf.append(row)
                    size += len(row)
                    n += 1
                    if size >= _BLOCK:
                        write(b"".join(buf))
                        buf.clear()
                        size = 0
                if buf:
                    write(b"".join(buf))
        except psycopg.Error as exc:
            m = re.search(r"line (\d+)", exc.diag.context or "")
            where = f"{label} row {m.group(1)}" if m else label
            raise LoadError(where, _reason(exc)) from None
        return n

    def copy_records(
        self,
        table: Table,
        columns: Sequence[str],
        records: Iterable[tuple[int, list[Any]]],
        where: Callable[[int], str],
    ) -> int:
        """Load snapshot records (line number, JSON values in `columns` order) with COPY;
        a bad value or a row the database refuses raises naming `where(line)`."""
        columns, keep = _writable(table, columns)
        if keep is not None:
            records = ((n, [vals[i] for i in keep]) for n, vals in records)
        kinds = table.kinds(columns)
        encoders = [self._json_field(k) for k in kinds]
        plain_int = [k != "boolean" for k in kinds]
        names = list(columns)
        copy_sql = (
            f"COPY {qualified(table.name)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
        )
        escape = pg_text.escape_str
        n = 0
        lines: list[str] = []
        linenos: list[int] = []  # of the rows in the current COPY, to name a refused one
        size = 0
        with self.conn.cursor() as cur:
            cp_cm = cur.copy(copy_sql)
            cp = cp_cm.__enter__()
            active = True  # a COPY is open (its end is where the server reports errors)
            try:
                for lineno, vals in records:
                    parts = []
                    for i, j in enumerate(vals):
                        if j is None:
                            parts.append("\\N")
                        elif j.__class__ is str:
                            parts.append(escape(j))
                        elif j.__class__ is int and plain_int[i]:
                            parts.append(int.__repr__(j))
                        else:
                            try:
                                parts.append(encoders[i](j))
                            except SnapshotFormatError as exc:
                                raise LoadError(
                                    where(lineno), f"column {names[i]!r}: {exc}"
                                ) from None
                    line = "\t".join(parts)
                    lines.append(line)
                    linenos.append(lineno)
                    size += len(line)
                    n += 1
                    if size >= _BLOCK:
                        lines.append("")
                        cp.write("\n".join(lines).encode("utf-8"))
                        lines.clear()
                        size = 0
                        if len(linenos) >= _COPY_ROWS:
                            active = False
                            cp_cm.__exit__(None, None, None)
                            linenos.clear()
                            cp_cm = cur.copy(copy_sql)
                            cp = cp_cm.__enter__()
                            active = True
                if lines:
                    lines.append("")
                    cp.write("\n".join(lines).encode("utf-8"))
                active = False
                cp_cm.__exit__(None, None, None)
            except BaseException as exc:
                if active:  # end the COPY before the transaction rolls back
                    try:
                        cp_cm.__exit__(type(exc), exc, exc.__traceback__)
                    except psycopg.Error:
                        pass
                if not isinstance(exc, psycopg.Error):
                    raise
                m = re.search(r"line (\d+)", exc.diag.context or "")
                i = int(m.group(1)) - 1 if m else -1
                at = where(linenos[i]) if 0 <= i < len(linenos) else table.name
                raise LoadError(at, _reason(exc)) from None
        return n

    def _json_field(self, kind: str) -> Callable[[Any], str]:
        """Snapshot JSON value (not None, not a str) -> COPY text field, for a column kind."""
        escape = pg_text.escape_str
        text = pg_text.value_text
        compact = compact_json
        tx = psycopg.adapt.Transformer(self.conn)

        def slow(j: Any) -> str:
            v = decode_value(j) if isinstance(j, dict | list) else j
            if isinstance(v, list):
                data = tx.get_dumper(v, psycopg.adapt.PyFormat.TEXT).dump(v)
                return escape(bytes(data).decode("utf-8")) if data is not None else "\\N"
            if v is None:
                return "\\N"
            return escape(text(v))

        def plain(j: Any) -> str:
            if j.__class__ is dict and len(j) == 1:
                ((tag, payload),) = j.items()
                if tag in _TEXT_TAGS and payload.__class__ is str:
                    return escape(payload)  # already the database's input text
            return slow(j)

        if kind == "json":

            def as_json(j: Any) -> str:
                if j.__class__ is dict and len(j) == 1 and "$json" in j:
                    return escape(compact(j["$json"]))
                v = decode_value(j) if isinstance(j, dict | list) else j
                if isinstance(v, str):
                    return escape(v)
                if isinstance(v, JsonValue):
                    return escape(v.dumps())
                return escape(json.dumps(v, default=str))

            return as_json
        if kind == "boolean":

            def as_bool(j: Any) -> str:
                if isinstance(j, int):
                    return "t" if j else "f"
                return plain(j)

            return as_bool
        return plain

    def finish(self, created: Sequence[Table], loaded: Sequence[Table], source_engine: str) -> None:
        try:
            for stmt in self._deferred:
                self.conn.execute(stmt)
            self._deferred.clear()
            if source_engine == ENGINE:
                for t in created:
                    for stmt in t.indexes:
                        self.conn.execute(stmt)
            for t in created:
                for fk in t.foreign_keys:
                    self.conn.execute(
                        f"ALTER TABLE {qualified(t.name)} ADD FOREIGN KEY"
                        f" ({', '.join(quote(c) for c in fk.columns)}) REFERENCES"
                        f" {qualified(fk.ref_table)}"
                        f" ({', '.join(quote(c) for c in fk.ref_columns)})"
                    )
            for t in loaded:
                for c in t.columns:
                    if c.identity:
                        self.conn.execute(
                            "SELECT setval(pg_get_serial_sequence(%s, %s),"
                            f" coalesce((SELECT max({quote(c.name)})"
                            f" FROM {qualified(t.name)}), 0) + 1,"
                            " false)",
                            (qualified(t.name), c.name),
                        )
        except psycopg.Error as exc:
            raise LoadError("schema", _reason(exc)) from None


def _writable(table: Table, columns: Sequence[str]) -> tuple[list[str], list[int] | None]:
    """`columns` less the generated ones (the server computes those), and the indexes of
    the kept ones (None: all kept)."""
    generated = {c.name for c in table.columns if c.generated}
    if not generated.intersection(columns):
        return list(columns), None
    keep = [i for i, c in enumerate(columns) if c not in generated]
    return [columns[i] for i in keep], keep


def _order(table: Table) -> str:
    return ", ".join(quote(c) for c in table.primary_key) or f"{_ROW}::text"


_ROW = '"ts row"'  # the alias of the table read, for ordering by the whole row
_BLOCK = 1 << 18  # bytes of COPY data per write
_TEXT_TAGS = frozenset({"$ts", "$dec", "$date", "$time", "$uuid"})
_COPY_ROWS = 100_000  # rows per COPY statement of a snapshot load (bounds the line index)


def _reason(exc: psycopg.Error) -> str:
    msg = exc.diag.message_primary or str(exc)
    detail = exc.diag.message_detail
    return f"{msg}" + (f" ({detail})" if detail else "")


def _where(batch: list[SourcedRow], exc: psycopg.Error) -> str:
    context = exc.diag.context or ""
    m = re.search(r"line (\d+)", context)
    if m:
        i = int(m.group(1)) - 1
        if 0 <= i < len(batch):
            return batch[i][0]
    return f"{batch[0][0]}..{batch[-1][0].rsplit(':', 1)[-1]}"


# ---------------------------------------------------------------------------
# Full-fidelity dumps: pg_dump / pg_restore of the server's own major version

DUMP_MEMBER = "postgres/database.dump"  # the pg_dump custom-format member of a backup
_PIPE = 1 << 20


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """`url` without its password, and an environment carrying it (never in argv)."""
    parts = urlsplit(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        host = parts.netloc.rsplit("@", 1)[-1]
        user = f"{parts.username}@" if parts.username else ""
        url = urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))
    env["PGCONNECT_TIMEOUT"] = "10"
    return url, env


def pg_tool(name: str, server_major: int | None = None) -> str:
    """The path of a PostgreSQL client program, of `server_major` when installed."""
    if server_major is not None:
        p = Path(f"/usr/lib/postgresql/{server_major}/bin/{name}")
        if p.is_file():
            return str(p)
    found = shutil.which(name)
    if found is None:
        raise DataStoreError(
            f"{name} is not installed",
            "install the PostgreSQL client programs (e.g. apt-get install postgresql-client)",
        )
    return found


def server_major(conn: psycopg.Connection[Any]) -> int:
    return int(conn.info.server_version) // 10000


def _tool_error(name: str, stderr: bytes) -> str:
    lines = [ln for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    text = "; ".join(lines[-3:]) or "failed"
    return f"{name}: {text}"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def dump(
    url: str,
    out: IO[bytes],
    snapshot: str | None = None,
    major: int | None = None,
    schema_only: bool = False,
    started: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> tuple[str, int]:
    """Write `pg_dump --format=custom` of the database at `url` to `out` (at the exported
    `snapshot`, if given); returns (sha256, bytes). A failing write stops pg_dump at once;
    `started` receives the process (so another thread can stop it)."""
    dburl, env = _libpq(url)
    args = [pg_tool("pg_dump", major), "--format=custom", "--no-sync"]
    if snapshot:
        args.append(f"--snapshot={snapshot}")
    if schema_only:
        args.append("--schema-only")
    args += ["--dbname", dburl]
    h = hashlib.sha256()
    size = 0
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, env=env)
        assert proc.stdout is not None
        if started is not None:
            started(proc)
        try:
            while chunk := proc.stdout.read(_PIPE):
                out.write(chunk)
                h.update(chunk)
                size += len(chunk)
        except BaseException:
            _stop(proc)
            raise
        finally:
            proc.stdout.close()
        proc.wait()
        if proc.returncode != 0:
            err.seek(0)
            raise DataStoreError(
                _tool_error("pg_dump", err.read()[-4000:]),
                "nothing was written; check the database and try again",
            )
    return h.hexdigest(), size


def _feed(args: list[str], env: dict[str, str], chunks: Iterable[bytes]) -> bytes:
    """Run a program with `chunks` on its standard input; returns its standard output.
    An error while producing the chunks kills it."""
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as stdout:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=stdout, stderr=err, env=env)
        assert proc.stdin is not None
        try:
            for chunk in chunks:
                proc.stdin.write(chunk)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the program stopped; its exit status says why
        except BaseException:
            _stop(proc)
            raise
        proc.wait()
        if proc.returncode != 0:
            err.seek(0)
            raise DataStoreError(_tool_error(Path(args[0]).name, err.read()[-4000:]),
                                 "nothing was changed")  # fmt: skip
        stdout.seek(0)
        return stdout.read()


def dump_schema_text(chunks: Iterable[bytes], major: int | None = None) -> str:
    """The schema of a custom-format dump as SQL (`pg_restore --schema-only`), normalized."""
    args = [pg_tool("pg_restore", major), "--schema-only", "--no-owner", "--file=-"]
    _url, env = _libpq("postgresql:///")
    return normalize_schema(_feed(args, env, chunks).decode("utf-8", "replace"))


def schema_text(url: str, major: int | None = None) -> str:
    """The schema of a database as `pg_dump --schema-only` prints it, normalized."""
    dburl, env = _libpq(url)
    args = [pg_tool("pg_dump", major), "--schema-only", "--no-owner", "--dbname", dburl]
    return normalize_schema(_feed(args, env, ()).decode("utf-8", "replace"))


def normalize_schema(text: str) -> str:
    """SQL of a schema without comments, blank lines, the per-run restrict key and the
    refresh of materialized views (data, which an archive lists and a live schema not)."""
    skip = ("--", "\\restrict", "\\unrestrict", "REFRESH MATERIALIZED VIEW ")
    return "\n".join(
        line for line in text.splitlines() if line.strip() and not line.startswith(skip)
    )


def restore_dump(
    url: str, role: str | None, chunks: Iterable[bytes], swap: bool = True, keep: str = ""
) -> str:
    """Load a custom-format dump into a new database next to the one at `url` (owned by
    `role`, closed to PUBLIC), in one transaction; with `swap`, that database then takes
    the place of the live one (both renamed in one transaction; the replaced one is kept
    under the name `keep`, closed to connections, or else dropped), else its URL is
    returned for the caller to drop. An error leaves the live database as it was."""
    live = database_of(url)
    server = with_database(url, "postgres")
    fresh = scratch_name(live, "restore" if swap else "drill")
    with _connect(server, autocommit=True) as conn:
        major = server_major(conn)
        owner = pgsql.SQL(" OWNER {}").format(pgsql.Identifier(role)) if role else pgsql.SQL("")
        conn.execute(pgsql.SQL("CREATE DATABASE {}{}").format(pgsql.Identifier(fresh), owner))
        conn.execute(pgsql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(
            pgsql.Identifier(fresh)))  # fmt: skip
    fresh_url = with_database(url, fresh)
    try:
        dburl, env = _libpq(fresh_url)
        args = [pg_tool("pg_restore", major), "--exit-on-error", "--single-transaction",
                "--dbname", dburl]  # fmt: skip
        _feed(args, env, chunks)
        if swap:
            _swap(server, live, fresh, keep)
    except BaseException:
        drop_database(server, fresh)
        raise
    return with_database(url, live) if swap else fresh_url


ScratchKind = Literal["drill", "restore", "old", "undo"]


def scratch_name(live: str, kind: ScratchKind, token: str = "") -> str:
    """The name of a scratch database next to `live` (a drill's, a restore's new
    database, the replaced one, or the one a restore keeps for its undo), within
    PostgreSQL's 63 bytes."""
    suffix = f"_{kind}_"
    return f"{live[: 63 - len(suffix) - 8]}{suffix}{token or secrets.token_hex(4)}"


_SCRATCH_TOKEN = re.compile(r"[0-9a-f]{8}")


def scratch_databases(conn: psycopg.Connection[Any], live: str, kind: ScratchKind) -> list[str]:
    """The databases of the server named as scratch databases of `kind` next to `live`."""
    prefix = scratch_name(live, kind, "x")[:-1]
    names = [r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()]
    return sorted(
        n for n in names if n.startswith(prefix) and _SCRATCH_TOKEN.fullmatch(n[len(prefix) :])
    )


def undo_databases(url: str) -> list[str]:
    """The undo copies restores kept of the database at `url` (by name)."""
    with _connect(with_database(url, "postgres"), autocommit=True) as conn:
        return scratch_databases(conn, database_of(url), "undo")


@contextmanager
def exclusive(url: str) -> Iterator[None]:
    """Hold the lock of the restores and drills of the database at `url` (one at a
    time, across processes) and drop the scratch databases a killed one left (a killed
    process's session, and so its lock, is gone), before and again after (a database
    still being created by a killed one's session appears late), and open the live
    database to connections if an earlier version's swap was killed after closing it."""
    live = database_of(url)
    key = "tristage-restore:" + live
    with _connect(with_database(url, "postgres"), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        try:
            _sweep(conn, live)
            closed = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s AND NOT datallowconn", (live,)
            ).fetchone()
            if closed:
                conn.execute(
                    pgsql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(
                        pgsql.Identifier(live)
                    )
                )
            yield
            _sweep(conn, live)
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))


def _sweep(conn: psycopg.Connection[Any], live: str) -> None:
    kinds: tuple[ScratchKind, ...] = ("drill", "restore", "old")
    for kind in kinds:
        for name in scratch_databases(conn, live, kind):
            conn.execute(
                pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name))
            )


def swap_back(url: str, undo: str, keep: str) -> None:
    """Put the undo copy `undo` back in the place of the live database at `url`; the
    live one is kept as the undo copy `keep` (so the undo can be undone)."""
    _swap(with_database(url, "postgres"), database_of(url), undo, keep)


def drop_undo(url: str, name: str) -> None:
    """Drop an undo copy of the database at `url` (only a name of that form)."""
    live = database_of(url)
    prefix = scratch_name(live, "undo", "x")[:-1]
    if not (name.startswith(prefix) and _SCRATCH_TOKEN.fullmatch(name[len(prefix) :])):
        raise DataStoreError(f"{name} is not an undo copy of {live}")
    drop_database(with_database(url, "postgres"), name)


def _swap(server: str, live: str, fresh: str, keep: str = "") -> None:
    """Rename `live` away (to `keep`, else a scratch name, then dropped) and `fresh` to
    `live`, in one transaction that also ends the live database's sessions: a kill at
    any point leaves `live` whole and open to connections, old or new. The kept one is
    closed to connections; one put back in place is opened."""
    old = keep or scratch_name(live, "old")
    ident = pgsql.Identifier

    def sql(text: str, *names: str) -> None:
        conn.execute(pgsql.SQL(text).format(*(ident(n) for n in names)))

    with _connect(server, autocommit=True) as conn:
        for _ in range(100):
            try:
                with conn.transaction():
                    conn.execute(
                        "SELECT pg_terminate_backend(pid, 2000) FROM pg_stat_activity"
                        " WHERE datname = ANY(%s) AND pid <> pg_backend_pid()",
                        ([live, fresh],),
                    )
                    sql("ALTER DATABASE {} RENAME TO {}", live, old)
                    sql("ALTER DATABASE {} RENAME TO {}", fresh, live)
                    sql("ALTER DATABASE {} ALLOW_CONNECTIONS true", live)
                    sql("ALTER DATABASE {} ALLOW_CONNECTIONS false", old)
                break
            except psycopg.errors.ObjectInUse:  # a session came in meanwhile
                time.sleep(0.05)
        else:
            raise DataStoreError(
                f"database {live} is still in use; it was not replaced",
                "stop the sessions using it and restore again",
            )
        if not keep:
            sql("DROP DATABASE IF EXISTS {} WITH (FORCE)", old)


def clone_with_schema(
    reader: PostgresSession,
    source_url: str,
    target_url: str,
    role: str | None,
    fill: Callable[[PostgresSession], dict[str, int]],
    direct: Sequence[Table] = (),
) -> dict[str, int]:
    """Replace the database at `target_url` by a copy of the reader's: the schema from
    `pg_dump --schema-only` of the reader's snapshot (pre-data, then `fill` writes the
    rows, then post-data: keys, indexes, triggers, policies), sequence values set as
    the source's, in a new database owned by `role` that then takes the target's place.
    The rows of the `direct` tables (copied as they are) go by `pg_dump --data-only`
    of the same snapshot piped into `pg_restore`, while `fill` writes the others.
    An error leaves the target as it was."""
    snapshot, major = reader.export_snapshot()
    sequences = reader.conn.execute(
        "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences"
        " WHERE last_value IS NOT NULL"
    ).fetchall()
    live = database_of(target_url)
    server = with_database(target_url, "postgres")
    with tempfile.TemporaryFile() as archive, exclusive(target_url):
        dump(source_url, archive, snapshot, major, schema_only=True)
        fresh = scratch_name(live, "restore")
        with _connect(server, autocommit=True) as conn:
            owner = pgsql.SQL(" OWNER {}").format(pgsql.Identifier(role)) if role else pgsql.SQL("")
            conn.execute(pgsql.SQL("CREATE DATABASE {}{}").format(pgsql.Identifier(fresh), owner))
            conn.execute(
                pgsql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(pgsql.Identifier(fresh))
            )
        fresh_url = with_database(target_url, fresh)
        try:
            dburl, env = _libpq(fresh_url)
            args = [pg_tool("pg_restore", major), "--exit-on-error", "--single-transaction",
                    "--no-owner", "--dbname", dburl]  # fmt: skip
            if role:
                args.insert(-2, f"--role={role}")

            def section(name: str) -> None:
                archive.seek(0)
                _feed([*args[:1], f"--section={name}", *args[1:]], env, _read_all(archive))

            section("pre-data")
            with _DataPipe(reader, source_url, fresh_url, role, snapshot, major, direct) as pipe:
                with PostgresDataStore(fresh_url, role).write() as w:
                    counts = fill(w)
                    for name, value in sequences:
                        w.conn.execute("SELECT setval(%s::regclass, %s, true)", (name, value))
                counts.update(pipe.wait())
            section("post-data")
            _swap(server, live, fresh)
        except BaseException:
            drop_database(server, fresh)
            raise
    return counts


class _DataPipe:
    """`pg_dump --data-only` of some tables at an exported snapshot, piped into
    `pg_restore --single-transaction` of another database, running beside the caller;
    `wait` returns the tables' row counts (of the reader's snapshot) once it is done.
    Leaving the block before (an error, a signal) kills both programs."""

    def __init__(
        self,
        reader: PostgresSession,
        source_url: str,
        target_url: str,
        role: str | None,
        snapshot: str,
        major: int,
        tables: Sequence[Table],
    ) -> None:
        self.reader, self.tables = reader, list(tables)
        self.source_url, self.target_url, self.role = source_url, target_url, role
        self.snapshot, self.major = snapshot, major
        self.procs: list[subprocess.Popen[bytes]] = []
        self.errs: list[IO[bytes]] = []

    def _patterns(self) -> list[str]:
        """`--table` patterns of the tables: a partitioned one by its leaf partitions
        (whose rows pg_dump writes), every name quoted (no pattern characters)."""
        rows = self.reader.conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.oid IN (SELECT t.relid FROM unnest(%s::regclass[]) r(oid),"
            "  LATERAL (SELECT r.oid AS relid WHERE"
            "   (SELECT relkind FROM pg_class WHERE oid = r.oid) <> 'p'"
            "   UNION ALL SELECT p.relid FROM pg_partition_tree(r.oid) p WHERE p.isleaf) t)",
            ([qualified(t.name) for t in self.tables],),
        ).fetchall()

        def q(name: str) -> str:
            return '"' + name.replace('"', '""') + '"'

        return [f"--table={q(nsp)}.{q(rel)}" for nsp, rel in rows]

    def __enter__(self) -> _DataPipe:
        if not self.tables:
            return self
        patterns = self._patterns()
        if not patterns:
            return self
        src, src_env = _libpq(self.source_url)
        dst, dst_env = _libpq(self.target_url)
        dump_args = [pg_tool("pg_dump", self.major), "--data-only", "--format=custom",
                     "--compress=0", "--no-sync", f"--snapshot={self.snapshot}", *patterns,
                     "--dbname", src]  # fmt: skip
        restore_args = [pg_tool("pg_restore", self.major), "--data-only", "--exit-on-error",
                        "--single-transaction", "--no-owner", "--dbname", dst]  # fmt: skip
        if self.role:
            restore_args.insert(1, f"--role={self.role}")
        self.errs = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]
        try:
            dumping = subprocess.Popen(
                dump_args, stdout=subprocess.PIPE, stderr=self.errs[0], env=src_env
            )
            self.procs.append(dumping)
            assert dumping.stdout is not None
            restoring = subprocess.Popen(
                restore_args,
                stdin=dumping.stdout,
                stdout=subprocess.DEVNULL,
                stderr=self.errs[1],
                env=dst_env,
            )
            self.procs.append(restoring)
            dumping.stdout.close()
        except BaseException:
            self._stop()
            raise
        return self

    def wait(self) -> dict[str, int]:
        if not self.procs:
            return {t.name: 0 for t in self.tables}
        counts = self.reader.counts(self.tables)  # while the copy runs
        for proc, err, name in zip(self.procs, self.errs, ("pg_dump", "pg_restore"), strict=True):
            if proc.wait() != 0:
                err.seek(0)
                raise DataStoreError(_tool_error(name, err.read()[-4000:]), "nothing was changed")
        return counts

    def _stop(self) -> None:
        for proc in self.procs:
            _stop(proc)

    def __exit__(self, *exc: object) -> None:
        try:
            self._stop()
        finally:
            for err in self.errs:
                err.close()


def _read_all(f: IO[bytes]) -> Iterator[bytes]:
    while chunk := f.read(_PIPE):
        yield chunk
