"""`tristage service install` (a systemd unit for `tristage up`) and `tristage up --detach`
/ `tristage down` (a background control plane with a pidfile and a log)."""

from __future__ import annotations

import configparser
import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import run_cli
from test_deploy_helpers import wait_for

pytestmark = pytest.mark.timeout(120)


def parse_unit(text: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(text)
    return unit


def verify(path: Path) -> None:
    """`systemd-analyze verify` where it is installed (and usable here)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    r = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (r.stdout + r.stderr).splitlines() if str(path) in line]
    assert not problems, problems


def test_a_user_unit_runs_up_with_the_same_options(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "units" / "tristage.service"
    r = run_cli(
        "service", "install", "--user", "--path", str(path), "--edge", "caddy",
        "--http-port", "8000", "--https-port", "8443", "--acme-email", "ops@example.com",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"wrote {path}" in r.stdout
    assert "systemctl --user daemon-reload && systemctl --user enable --now tristage.service" in (
        r.stdout
    )
    assert "loginctl enable-linger" in r.stdout
    unit = parse_unit(path.read_text())
    service = unit["Service"]
    exec_start = service["ExecStart"].split()
    assert exec_start[:5] == [sys.executable, "-m", "tristage", "--home", str(home)]
    up = exec_start[5:]
    assert up[:5] == ["up", "--host", "127.0.0.1", "--port", "8080"]
    for pair in (["--edge", "caddy"], ["--http-port", "8000"], ["--https-port", "8443"],
                 ["--acme-email", "ops@example.com"]):  # fmt: skip
        i = up.index(pair[0])
        assert up[i : i + 2] == pair
    assert service["Environment"] == f"TRISTAGE_HOME={home}"
    assert service["Restart"] == "always" and service["KillMode"] == "process"
    assert "User" not in service
    assert unit["Install"]["WantedBy"] == "default.target"
    assert "After" not in unit["Unit"]
    verify(path)


def test_a_system_unit_starts_after_the_network_as_the_installing_user(
    home: Path, tmp_path: Path
) -> None:
    path = tmp_path / "tristage.service"
    r = run_cli("service", "install", "--system", "--path", str(path), "--edge", "caddy")
    assert r.returncode == 0, r.stderr
    assert "systemctl daemon-reload && systemctl enable --now tristage.service" in r.stdout
    unit = parse_unit(path.read_text())
    assert unit["Unit"]["After"] == "network-online.target"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    import getpass

    user = getpass.getuser()
    assert unit["Service"]["User"] == user
    # ports below 1024 for a user other than root: the capability to bind them
    assert ("AmbientCapabilities" in unit["Service"]) == (user != "root")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    verify(path)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--edge", "nginx"], "--edge 'nginx' is not an edge"),
        (["--edge", "caddy", "--https-port", "8080"], "--https-port 8080 is also the router's"),
        (["--edge", "caddy", "--acme-ca", "http://ca.test/dir"], "not an https:// ACME"),
        (["--edge", "caddy", "--acme-ca-root", "/nonexistent.pem"], "no such file"),
    ],
)
def test_bad_edge_options_are_one_clear_error_and_write_nothing(
    home: Path, tmp_path: Path, args: list[str], says: str
) -> None:
    path = tmp_path / "tristage.service"
    r = run_cli("service", "install", "--user", "--path", str(path), *args)
    assert r.returncode == 2
    assert says in r.stderr and r.stderr.startswith("error:")
    assert len(r.stderr.strip().splitlines()) <= 2  # the error and its hint
    assert not path.exists()


def test_up_detach_writes_a_pidfile_and_a_log_and_down_stops_it(home: Path) -> None:
    r = run_cli("up", "--detach", "--port", "0", timeout=90)
    assert r.returncode == 0, r.stderr
    assert "running in the background" in r.stdout and "'tristage down' stops it" in r.stdout
    pid = int((home / "up.pid").read_text())
    info = json.loads((home / "controlplane.json").read_text())
    assert info["pid"] == pid
    log = home / "logs" / "up.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "up.pid").stat().st_mode) == 0o600
    try:
        r = httpx.get(f"http://127.0.0.1:{info['router_port']}/", headers={"Host": "x.localhost"})
        assert r.status_code == 404  # the router answers
        assert "router listening" in wait_for(lambda: log.read_text(), 10, "the log")
        again = run_cli("up", "--detach", "--port", "0")
        assert again.returncode == 2 and "already runs" in again.stderr
    finally:
        r = run_cli("down")
    assert r.returncode == 0, r.stderr
    assert f"pid {pid}" in r.stdout
    assert not (home / "up.pid").exists()

    def gone() -> bool:  # exited (a zombie until this test process, its parent, exits)
        try:
            stat_line = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        return stat_line.rsplit(")", 1)[1].split()[0] == "Z"

    wait_for(gone, 10, "the control plane to exit")
