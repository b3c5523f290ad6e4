"""HAProxy's runtime API over its unix socket (0600, in the edge's private directory):
one connection per command, as HAProxy's non-interactive mode has it. Blocking: call it
from a thread (`asyncio.to_thread`) on the control plane's loop."""

from __future__ import annotations

import csv
import io
import socket
from pathlib import Path

from ...errors import TristageError
from .config import Actual, ServerState, Step

TIMEOUT = 5.0
# what HAProxy answers to a command that failed (it never closes with an error code)
FAILURES = (
    "Unknown command", "No such", "not found", "Require ", "cannot ", "Can't ", "failed",
    "Failed", "error", "Error", "invalid", "Invalid", "Already", "is already",
)  # fmt: skip


class RuntimeApiError(TristageError):
    """HAProxy refused a runtime API command, or its socket did not answer."""


def call(sock_path: Path, command: str, payload: str | None = None) -> str:
    """Send one command (with a payload: `cmd <<` and the payload's lines) and return the
    whole answer."""
    text = command
    if payload is not None:
        text += " <<\n" + payload.strip("\n") + "\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT)
        try:
            s.connect(str(sock_path))
            s.sendall(text.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except OSError as exc:
            raise RuntimeApiError(
                f"haproxy's runtime API ({sock_path}) did not answer: {exc}",
                "see the edge's log (haproxy.log next to the socket)",
            ) from None
    return b"".join(chunks).decode("utf-8", "replace")


def run(sock_path: Path, step: Step) -> str:
    """`call`, raising RuntimeApiError when HAProxy says the command failed."""
    answer = call(sock_path, step.command, step.payload)
    first = answer.strip().splitlines()[0] if answer.strip() else ""
    if any(word in first for word in FAILURES):
        raise RuntimeApiError(f"haproxy refused {step.command.split(' <<')[0]!r}: {first}")
    return answer


def stat_rows(sock_path: Path, servers_only: bool = False) -> list[dict[str, str]]:
    """`show stat`: one dict per frontend, backend and server (servers only: `-1 4 -1`,
    every proxy, type 4)."""
    text = call(sock_path, "show stat -1 4 -1" if servers_only else "show stat")
    if not text.startswith("# "):
        raise RuntimeApiError(f"haproxy's 'show stat' answered {text[:100]!r}")
    return list(csv.DictReader(io.StringIO(text[2:])))


def map_entries(sock_path: Path, map_file: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in call(sock_path, f"show map {map_file}").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith("0x"):
            out[parts[1]] = parts[2]
    return out


def admin_state(status: str) -> str:
    s = status.upper()
    if s.startswith("MAINT"):
        return "maint"
    if s.startswith("DRAIN"):
        return "drain"
    return "ready"


def actual_state(
    sock_path: Path, hosts_map: Path, prefix: str, rows: list[dict[str, str]] | None = None
) -> Actual:
    """The host map and every slot backend's servers (address, state, requests in flight)."""
    rows = stat_rows(sock_path, servers_only=True) if rows is None else rows
    servers: dict[str, dict[str, ServerState]] = {}
    for row in rows:
        backend, name = row.get("pxname", ""), row.get("svname", "")
        if not backend.startswith(prefix) or name in ("FRONTEND", "BACKEND"):
            continue
        host, _, port = row.get("addr", "").rpartition(":")
        servers.setdefault(backend, {})[name] = ServerState(
            (host, int(port) if port.isdigit() else 0),
            admin_state(row.get("status", "")),
            int(row.get("scur") or 0),
        )
    return Actual(map_entries(sock_path, hosts_map), servers)
