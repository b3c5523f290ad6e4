"""The systemd unit of `tristage service install`. Pure: the unit's text from its parts."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

UNIT_NAME = "tristage.service"


@dataclass(frozen=True)
class ServiceUnit:
    path: Path
    text: str
    user: bool  # a user unit (systemctl --user) or a system one

    @property
    def enable_command(self) -> str:
        scope = "--user " if self.user else ""
        return f"systemctl {scope}daemon-reload && systemctl {scope}enable --now {UNIT_NAME}"


def unit_text(
    command: list[str],
    home: Path,
    *,
    user: bool,
    run_as: str | None = None,
    low_ports: bool = False,
) -> str:
    """A unit that runs `command` (`tristage up ...`) in the foreground, restarts it when
    it exits, and stops it with SIGTERM (the control plane then stops its releases).

    A system unit runs as `run_as`, starts after the network is up and, with
    `low_ports`, may bind ports below 1024 without being root. A user unit starts with
    the user's session manager; `loginctl enable-linger USER` keeps it running without
    anyone logged in.
    """
    exec_start = " ".join(shlex.quote(part) for part in command)
    lines = [
        "[Unit]",
        "Description=tristage control plane (router, production edge, deploys)",
    ]
    if not user:
        lines += ["Wants=network-online.target", "After=network-online.target"]
    lines += [
        "",
        "[Service]",
        "Type=simple",
        f"Environment=TRISTAGE_HOME={home}",
        f"ExecStart={exec_start}",
        # only the control plane gets the signal: on stop it stops its releases and the
        # edge itself; after a crash they keep serving and the restarted one adopts them
        "KillMode=process",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=60",
        "Restart=always",
        "RestartSec=2",
        "LimitNOFILE=65536",
    ]
    if not user and run_as:
        lines.append(f"User={run_as}")
    if not user and low_ports and run_as not in (None, "root"):
        lines.append("AmbientCapabilities=CAP_NET_BIND_SERVICE")
    lines += ["", "[Install]", f"WantedBy={'default.target' if user else 'multi-user.target'}", ""]
    return "\n".join(lines)
