"""A PostgreSQL cluster of the tests' own that checks passwords (scram-sha-256).

The shared server the data tests use trusts loopback connections (any password, or
none, is accepted), so tests about credentials start their own cluster: `initdb`
into a temporary directory with `--auth=scram-sha-256` and a superuser password,
then `postgres` on a free loopback port. `initdb` and `postgres` refuse to run as
root: as root they run as the `postgres` user (`runuser`). Use the `scram_pg`
fixture (session scoped; import `scram_pg_fixture` into the test module): it skips,
saying why, only when the binaries are absent.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

SUPERUSER = "postgres"
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class PgCluster:
    host: str
    port: int
    password: str  # the superuser's
    root: Path

    @property
    def admin_url(self) -> str:
        """The server URL (no database) a tristage.toml names, with the superuser's password."""
        return self.url(SUPERUSER, self.password)

    def url(self, user: str, password: str | None, database: str = "") -> str:
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
        return f"postgresql://{auth}@{self.host}:{self.port}" + (f"/{database}" if database else "")

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


def find_bindir() -> Path | None:
    """The newest PostgreSQL server binaries installed (Debian layout), if any."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    found = [d for d in found if (d / "postgres").is_file()]
    found.sort(key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    if initdb and (Path(initdb).parent / "postgres").is_file():
        return Path(initdb).parent
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user() -> tuple[list[str], int | None, int | None]:
    """The command prefix and ids to run the server binaries with (not root)."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' user to run initdb/postgres as")
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root and 'runuser' (util-linux) is missing")
    return [runuser, "-u", "postgres", "--"], user.pw_uid, user.pw_gid


def _wait_ready(cluster: PgCluster, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {proc.returncode}:\n{cluster.log()}")
        try:
            psycopg.connect(cluster.url(SUPERUSER, cluster.password, "postgres"),
                            connect_timeout=2).close()  # fmt: skip
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not start in time:\n{cluster.log()}") from None
            time.sleep(0.1)


def _stop(root: Path, proc: subprocess.Popen[bytes]) -> None:
    pidfile = root / "data" / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split("\n", 1)[0])
        os.kill(pid, signal.SIGINT)  # fast shutdown: disconnect clients, then exit
    except (OSError, ValueError):
        proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def start_cluster() -> Iterator[PgCluster]:
    """initdb a scram-sha-256 cluster into a temporary directory and run it on a free port."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, postgres) not found under "
            "/usr/lib/postgresql/*/bin or on PATH: install the postgresql package"
        )
    prefix, uid, gid = _as_server_user()
    root = Path(tempfile.mkdtemp(prefix="tristage-pgcluster-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        if uid is not None and gid is not None:
            os.chown(root, uid, gid)
        password = secrets.token_urlsafe(18)
        pwfile = root / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        if uid is not None and gid is not None:
            os.chown(pwfile, uid, gid)
        init = subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(root / "data"), "-U", SUPERUSER,
             "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync",
             "--no-instructions"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr or init.stdout}")
        port = free_port()
        log = open(root / "server.log", "wb")  # noqa: SIM115 - closed after the server exits
        if uid is not None and gid is not None:
            os.chown(root / "server.log", uid, gid)
        proc = subprocess.Popen(
            [*prefix, str(bindir / "postgres"), "-D", str(root / "data"), "-p", str(port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={root}",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=30", "-c", "shared_buffers=16MB"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()
        cluster = PgCluster("127.0.0.1", port, password, root)
        _wait_ready(cluster, proc)
        yield cluster
    finally:
        if proc is not None:
            _stop(root, proc)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session", name="scram_pg")
def scram_pg_fixture() -> Iterator[PgCluster]:
    """A PostgreSQL cluster that checks passwords (scram-sha-256), for the whole session."""
    with start_cluster() as cluster:
        yield cluster
