"""A web process that starts but never answers its health check: the push output shows
the last lines the app printed and says where it listens instead of `$PORT`, or that it
listens on no port at all (real sandbox, real control plane, real sockets)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from test_deploy_helpers import ControlPlane, deployments, push
from test_real_apps import stdlib_app
from tristage.services.health import port_hint

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

WRONG_PORT = """\
from http.server import HTTPServer, BaseHTTPRequestHandler
# a port of its own choosing (any free one: a fixed PORT+1 may be another process's)
server = HTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
print("serving on", server.server_address[1], flush=True)
server.serve_forever()
"""

NO_PORT = """\
import time
print("waiting for the queue", flush=True)
time.sleep(600)
"""


def test_an_app_on_another_port_is_told_which_and_about_port(repo: Path, cp: ControlPlane) -> None:
    stdlib_app(repo, WRONG_PORT)
    r = push(repo, "main", timeout=120)
    assert r.returncode != 0
    m = re.search(r"the app listens on 127\.0\.0\.1:(\d+), not on \$PORT \((\d+)\)", r.stderr)
    assert m is not None, r.stderr
    assert m.group(1) != m.group(2)
    assert f"serving on {m.group(1)}" in r.stderr  # the app's last lines
    assert "not on $PORT" in deployments(repo)[0]["reason"]


def test_an_app_that_listens_nowhere_is_told_about_port(repo: Path, cp: ControlPlane) -> None:
    stdlib_app(repo, NO_PORT)
    r = push(repo, "main", timeout=120)
    assert r.returncode != 0
    assert "the app does not listen on any port: it must listen on $PORT" in r.stderr, r.stderr
    assert "waiting for the queue" in r.stderr


def test_port_hint() -> None:
    assert "listens on 127.0.0.1:81, 0.0.0.0:82, not on $PORT (80)" in port_hint(
        80, [("127.0.0.1", 81), ("0.0.0.0", 82)]
    )
    assert "does not listen on any port" in port_hint(80, [])
    assert "nothing listens on port 80" in port_hint(80, None)
