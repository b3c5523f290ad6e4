"""`tristage up --detach` and `tristage service install`: the control plane in the
background, and as a systemd service that survives reboots."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..domain.service_unit import UNIT_NAME, ServiceUnit, unit_text
from ..errors import TristageError, UsageError
from ..paths import private_mkdirs

if TYPE_CHECKING:
    from ..api import Tristage

PIDFILE = "up.pid"
LOGFILE = "up.log"


def up_command(home: Path, up_args: list[str]) -> list[str]:
    """The command line of `tristage up` with these arguments, for this interpreter."""
    return [sys.executable, "-m", "tristage", "--home", str(home), "up", *up_args]


def detach(api: Tristage, up_args: list[str], timeout: float = 60.0) -> tuple[int, Path]:
    """Start `tristage up` in the background (its own session, output appended to
    `$TRISTAGE_HOME/logs/up.log`, pid in `$TRISTAGE_HOME/up.pid`) and return once it
    serves: (pid, log path). Refused when a control plane already runs for this home."""
    running = api.deploys.controlplane()
    if running is not None:
        raise UsageError(
            f"a control plane already runs for {api.home} (pid {running.pid})",
            "'tristage down' stops it",
        )
    logs = private_mkdirs(api.home / "logs")
    log_path = logs / LOGFILE
    out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            up_command(api.home, up_args),
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            env={**os.environ, "TRISTAGE_HOME": str(api.home)},
        )  # fmt: skip
    finally:
        os.close(out)
    pidfile = api.home / PIDFILE
    fd = os.open(pidfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while True:
        info = api.deploys.controlplane()
        if info is not None and info.pid == proc.pid:
            return proc.pid, log_path
        if proc.poll() is not None:
            pidfile.unlink(missing_ok=True)
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise TristageError(
                f"tristage up exited with code {proc.returncode}: {' / '.join(tail)}",
                f"see {log_path}",
            )
        if time.monotonic() > deadline:
            raise TristageError(
                f"tristage up (pid {proc.pid}) did not start serving within {timeout:.0f}s",
                f"see {log_path}; 'tristage down' stops it",
            )
        time.sleep(0.1)


def forget_pidfile(api: Tristage) -> None:
    """After `tristage down`: the pidfile of `up --detach` names nothing any more."""
    (api.home / PIDFILE).unlink(missing_ok=True)


def install_unit(
    api: Tristage, up_args: list[str], *, user: bool, path: Path | None = None,
    low_ports: bool = False,
) -> ServiceUnit:  # fmt: skip
    """Write the systemd unit for `tristage up ARGS` (user or system) and return it."""
    if path is None:
        if user:
            base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
            path = Path(base) / "systemd" / "user" / UNIT_NAME
        else:
            path = Path("/etc/systemd/system") / UNIT_NAME
    text = unit_text(
        up_command(api.home, up_args), api.home, user=user, run_as=getpass.getuser(),
        low_ports=low_ports,
    )  # fmt: skip
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(path)
    except PermissionError:
        raise UsageError(
            f"cannot write {path}: permission denied",
            "run it as root for a system unit (sudo), or use --user",
        ) from None
    return ServiceUnit(path, text, user)
