"""Data benchmark: export, import, backup, restore and sanitized clone throughput.

Seeds production with an `events` table of --rows rows plus a users/payments pair
(rows/10 users, rows/5 payments with a foreign key), then times each operation in its
own process (so peak memory is per operation) against the engine's own tools:
`pg_dump -Fc` / `pg_restore` for PostgreSQL; for SQLite `sqlite3 .dump` piped into a
fresh `sqlite3` (a row-level copy, like a clone) and the backup API (a page copy).
Several --rows sizes print peak memory side by side (it should stay flat). It also
checks that the email transform keeps 1,000,000 distinct values distinct.

    .venv/bin/python bench/data.py --rows 1000000 --engine both
    .venv/bin/python bench/data.py --rows 250000 1000000 --engine postgres
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PG_SERVER = "postgresql://postgres@127.0.0.1:5432"

SANITIZE = """
[sanitize]
"users.email" = "email"
"users.name" = "name"
"users.phone" = "phone"
"payments.card_number" = "hash"
"events.payload" = "keep"
"events.user_id" = "keep"
"events.kind" = "keep"
"events.amount" = "keep"
"payments.amount_cents" = "keep"
"""


def config(engine: str, token: str) -> str:
    def db(env: str) -> str:
        if engine == "sqlite":
            return ""
        return (
            f'[environments.{env}.database]\nengine = "postgres"\nurl = "{PG_SERVER}"\n'
            f'name = "tristage_bench{token}_{env}"\n'
        )

    return f"""
[project]
name = "bench"
[environments.preview]
tier = "preview"
branches = ["test"]
{db("preview")}
[environments.production]
tier = "production"
branches = ["main"]
{db("production")}
{SANITIZE}
"""


def seed(url: str, engine: str, rows: int) -> None:
    users, payments = max(rows // 10, 1), max(rows // 5, 1)
    if engine == "sqlite":
        conn = sqlite3.connect(url[len("sqlite://") :])
        conn.executescript(
            f"""
            CREATE TABLE events (id INTEGER PRIMARY KEY, user_id INTEGER, kind TEXT,
              payload TEXT, created_at TIMESTAMP, amount NUMERIC);
            CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT,
              phone TEXT, created_at TIMESTAMP);
            CREATE TABLE payments (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id),
              card_number TEXT, amount_cents INTEGER);
            WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < {rows})
            INSERT INTO events SELECT i, i % {users} + 1, 'kind' || (i % 7),
              '{{"n":' || i || ',"tag":"x"}}', '2024-05-03 12:00:00', i * 0.01 FROM s;
            WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < {users})
            INSERT INTO users SELECT i, 'user' || i || '@real.test', 'Name ' || i,
              '+4477' || i, '2024-05-03 12:00:00' FROM s;
            WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM s WHERE i < {payments})
            INSERT INTO payments SELECT i, i % {users} + 1, '4111111111' || i, i FROM s;
            """
        )
        conn.commit()
        conn.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for stmt in (
            "CREATE TABLE events (id bigint PRIMARY KEY, user_id bigint, kind text,"
            " payload jsonb, created_at timestamptz, amount numeric(12,2))",
            "CREATE TABLE users (id bigint PRIMARY KEY, email text UNIQUE, name text,"
            " phone text, created_at timestamptz)",
            "CREATE TABLE payments (id bigint PRIMARY KEY, user_id bigint REFERENCES users(id),"
            " card_number text, amount_cents integer)",
            f"INSERT INTO events SELECT i, i % {users} + 1, 'kind' || (i % 7),"
            f" jsonb_build_object('n', i, 'tag', 'x'), '2024-05-03 12:00:00+00', i * 0.01"
            f" FROM generate_series(1, {rows}) i",
            f"INSERT INTO users SELECT i, 'user' || i || '@real.test', 'Name ' || i,"
            f" '+4477' || i, now() FROM generate_series(1, {users}) i",
            f"INSERT INTO payments SELECT i, i % {users} + 1, '4111111111' || i, i"
            f" FROM generate_series(1, {payments}) i",
            "ANALYZE",
        ):
            conn.execute(stmt)  # type: ignore[arg-type]


def child(op: str, home: str, arg: str) -> None:
    """Run one operation in this process and print its timing and peak memory."""
    from tristage.api import Tristage

    api = Tristage(Path(home), actor="bench")
    t0 = time.perf_counter()
    rows = 0
    if op == "export":
        r = api.data.export("bench", "production", Path(arg), "dir")
        rows = r.manifest.total_rows
    elif op == "import":
        res = api.data.import_snapshot("bench", "production", Path(arg), mode="replace")
        rows = sum(res.rows.values())
    elif op == "backup":
        rows = api.data.backup("bench", "production").rows
    elif op == "restore":
        rows = sum(api.data.restore("bench", "production", arg, yes=True).rows.values())
    elif op == "clone":
        rows = sum(api.data.clone("bench", "production", "preview", yes=True).rows.values())
    elif op == "sqlite-dump":
        src_path = api.data.database_url("bench", "production")[len("sqlite://") :]
        dump = subprocess.Popen(["sqlite3", src_path, ".dump"], stdout=subprocess.PIPE)
        subprocess.run(["sqlite3", arg], stdin=dump.stdout, check=True, capture_output=True)
        assert dump.stdout is not None
        dump.stdout.close()
        if dump.wait() != 0:
            raise SystemExit("sqlite3 .dump failed")
        rows = _sqlite_rows(sqlite3.connect(arg))
    elif op == "sqlite-backup":
        src = sqlite3.connect(api.data.database_url("bench", "production")[len("sqlite://") :])
        dst = sqlite3.connect(arg)
        src.backup(dst)
        dst.close()
        rows = _sqlite_rows(src)
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"op": op, "seconds": seconds, "rows": rows, "rss_mib": rss / 1024}))


def _sqlite_rows(conn: sqlite3.Connection) -> int:
    count = "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM users)"
    return int(conn.execute(count + " + (SELECT count(*) FROM payments)").fetchone()[0])


def run_child(op: str, home: Path, arg: str = "") -> dict[str, Any]:
    env = {**os.environ, "TRISTAGE_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", op, str(home), arg],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{op} failed: {proc.stderr.strip()[-2000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def bench_engine(engine: str, rows: int, work: Path) -> list[dict[str, Any]]:
    from tristage.api import Tristage

    token = secrets.token_hex(3)
    home = work / f"home-{engine}-{rows}"
    repo = work / f"repo-{engine}-{rows}"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "tristage.toml").write_text(config(engine, token))
    os.environ["TRISTAGE_HOME"] = str(home)
    api = Tristage(home, actor="bench")
    api.open_project(repo)
    prod_url = api.data.database_url("bench", "production")
    api.data.database_url("bench", "preview")
    t0 = time.perf_counter()
    seed(prod_url, engine, rows)
    print(
        f"\n== {engine}: seeded {rows} events + users/payments in {time.perf_counter() - t0:.1f}s"
    )
    results: list[dict[str, Any]] = []
    try:
        snap = work / f"snap-{engine}-{rows}"
        results.append(run_child("export", home, str(snap)))
        results.append(run_child("import", home, str(snap)))
        if engine == "postgres":
            # each baseline runs right before the operation it is compared with, so a
            # shared machine's load drifts less between the two
            from tristage.edges.datastores.postgres import drop_database, ensure_database

            dump = work / f"pg-{rows}.dump"
            scratch = f"tristage_bench{token}_scratch"
            t_dump = timed(["pg_dump", "-Fc", "-f", str(dump), prod_url])
            results.append(run_child("backup", home))
            bid = api.data.backups("bench", "production")[0].id
            ensure_database(PG_SERVER, scratch)
            t_restore = timed(["pg_restore", "-d", f"{PG_SERVER}/{scratch}", str(dump)])
            drop_database(PG_SERVER, scratch)
            results.append(run_child("restore", home, bid))
            results.append(run_child("clone", home))
            base = {"dump": t_dump, "restore": t_restore, "dump+restore": t_dump + t_restore}
        else:
            results.append(run_child("backup", home))
            bid = api.data.backups("bench", "production")[0].id
            results.append(run_child("restore", home, bid))
            results.append(run_child("clone", home))
        total = results[0]["rows"]
        if engine != "postgres":
            d = run_child("sqlite-dump", home, str(work / f"dump-{rows}.sqlite3"))
            s = run_child("sqlite-backup", home, str(work / f"copy-{rows}.sqlite3"))
            base = {".dump|sqlite3": d["seconds"], "backup API": s["seconds"]}
        print(f"{'operation':<24}{'seconds':>9}{'rows/s':>12}{'peak MiB':>10}")
        for r in results:
            print(
                f"{r['op']:<24}{r['seconds']:>9.2f}{r['rows'] / r['seconds']:>12,.0f}"
                f"{r['rss_mib']:>10.0f}"
            )
        for name, secs in base.items():
            print(f"{'baseline ' + name:<24}{secs:>9.2f}{total / secs:>12,.0f}")
        clone_s = results[-1]["seconds"]
        if engine == "postgres":
            print(f"ratio sanitized clone / dump+restore: {clone_s / base['dump+restore']:.2f}x")
        else:
            print(
                f"ratio sanitized clone / .dump|sqlite3: {clone_s / base['.dump|sqlite3']:.2f}x;"
                f" / backup API (page copy): {clone_s / base['backup API']:.2f}x"
            )
        if engine == "postgres":
            print(
                f"ratio export / pg_dump: {results[0]['seconds'] / base['dump']:.2f}x; "
                f"import / pg_restore: {results[1]['seconds'] / base['restore']:.2f}x; "
                f"backup+restore / dump+restore: "
                f"{(results[2]['seconds'] + results[3]['seconds']) / base['dump+restore']:.2f}x"
            )
            # a backup is the pg_dump archive (encrypted); a restore is pg_restore and a swap
            print(f"{'side by side':<24}{'tristage':>9}{'pg tool':>9}{'ratio':>8}")
            for ours, tool, name in ((results[2], "dump", "backup | pg_dump -Fc"),
                                     (results[3], "restore", "restore | pg_restore")):  # fmt: skip
                print(
                    f"{name:<24}{ours['seconds']:>9.2f}{base[tool]:>9.2f}"
                    f"{ours['seconds'] / base[tool]:>7.2f}x"
                )
    finally:
        if engine == "postgres":
            from tristage.edges.datastores.postgres import drop_role, drop_with_copies

            for env in ("production", "preview"):
                drop_with_copies(PG_SERVER, f"tristage_bench{token}_{env}")
                drop_role(PG_SERVER, f"tristage_bench{token}_{env}")
        api.close()
    return results


def email_uniqueness(n: int) -> None:
    """The email transform keeps n distinct inputs distinct (and its speed)."""
    from tristage.domain.sanitize import Transformer

    email = Transformer(secrets.token_bytes(32)).rule_function("email")
    t0 = time.perf_counter()
    out = {email(f"user{i}@real.test") for i in range(n)}
    secs = time.perf_counter() - t0
    verdict = "all distinct" if len(out) == n else f"{n - len(out)} COLLISIONS"
    print(f"\n== email transform: {n:,} distinct inputs -> {len(out):,} outputs ({verdict}),")
    print(f"   {n / secs:,.0f} values/s")


def memory_summary(engine: str, by_size: dict[int, list[dict[str, Any]]]) -> None:
    sizes = sorted(by_size)
    print(f"\n== {engine}: peak MiB by events rows")
    print(f"{'operation':<12}" + "".join(f"{s:>12,}" for s in sizes))
    for i, r in enumerate(by_size[sizes[0]]):
        print(f"{r['op']:<12}" + "".join(f"{by_size[s][i]['rss_mib']:>12.0f}" for s in sizes))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "")
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    p.add_argument("--unique", type=int, default=1_000_000, help="email uniqueness check size")
    p.add_argument("--engine", choices=["sqlite", "postgres", "both"], default="both")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tristage-bench-"))
    try:
        engines = ["sqlite", "postgres"] if args.engine == "both" else [args.engine]
        for engine in engines:
            by_size = {rows: bench_engine(engine, rows, work) for rows in args.rows}
            if len(by_size) > 1:
                memory_summary(engine, by_size)
        if args.unique:
            email_uniqueness(args.unique)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
