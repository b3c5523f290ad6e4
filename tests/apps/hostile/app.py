"""A hostile app for the sandbox tests: stdlib only, it tries what an attacker's
code would and reports, as JSON, what it could do.

GET  /            -> the deployment facts (like tests/apps/hello)
GET  /health      -> 200
GET  /whoami      -> its pid, uid, capabilities, open files, environment, and every
                     process it can see in /proc
POST /probe       -> {"read": [path], "list": [dir], "write": [path], "append": [path],
                      "kill": [pid], "environ": [pid]}: the outcome of each attempt
GET  /fork?max=N  -> forks children until the kernel refuses (or N); how many, and why it stopped
GET  /alloc?mb=N  -> allocates (and touches) N MiB, printing its progress
GET  /spawn?marker=M -> starts a child that calls setsid() and a double-forked daemon,
                        their argv carrying M, and reports their pids as it sees them
GET  /secret      -> prints the value of API_SECRET to its output (the runtime log)
GET  /value       -> the VALUE of the `hostiledep` package its build installed
"""

import errno
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CHILD = r"""
import os, sys, time
os.setsid()
if sys.argv[2] == "daemon":
    if os.fork():
        os._exit(0)
    os.setsid()
while True:
    time.sleep(60)
"""


def outcome(fn: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
    """{"ok": True, ...what fn returned} or {"ok": False, "error": "ENOENT"} for an OSError."""
    try:
        return {"ok": True, **(fn() or {})}
    except OSError as exc:
        return {"ok": False, "error": errno.errorcode.get(exc.errno or 0, str(exc))}


def read(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        data = f.read()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def listdir(path: str) -> dict[str, Any]:
    return {"entries": sorted(os.listdir(path))}


def write(path: str, mode: str) -> None:
    with open(path, mode) as f:
        f.write("written by the hostile app\n")


def kill(pid: int) -> None:
    os.kill(int(pid), 0)


def environ(pid: int) -> dict[str, Any]:
    with open(f"/proc/{int(pid)}/environ", "rb") as f:
        data = f.read()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def processes() -> list[dict[str, Any]]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                cmd = "?"
            out.append({"pid": int(name), "cmdline": cmd})
    return out


def whoami() -> dict[str, Any]:
    """Who it runs as, what it holds open, what it was given, and what it can see."""
    with open("/proc/self/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return {
        "pid": os.getpid(),
        "uid": os.getuid(),
        "cwd": os.getcwd(),
        "cap_eff": int(status["CapEff"], 16),
        "fds": fds,
        "environ": dict(os.environ),
        "processes": processes(),
    }


def probe(req: dict[str, list[Any]]) -> dict[str, Any]:
    return {
        "read": {p: outcome(lambda p=p: read(p)) for p in req.get("read", [])},
        "list": {p: outcome(lambda p=p: listdir(p)) for p in req.get("list", [])},
        "write": {p: outcome(lambda p=p: write(p, "x")) for p in req.get("write", [])},
        "append": {p: outcome(lambda p=p: write(p, "a")) for p in req.get("append", [])},
        "kill": {str(p): outcome(lambda p=p: kill(p)) for p in req.get("kill", [])},
        "environ": {str(p): outcome(lambda p=p: environ(p)) for p in req.get("environ", [])},
    }


def fork_until_refused(limit: int) -> dict[str, Any]:
    r, w = os.pipe()
    children: list[int] = []
    error = None
    try:
        while len(children) < limit:
            try:
                pid = os.fork()
            except OSError as exc:
                error = errno.errorcode.get(exc.errno or 0, str(exc))
                break
            if pid == 0:  # the child waits for the pipe to close, then leaves
                os.close(w)
                os.read(r, 1)
                os._exit(0)
            children.append(pid)
    finally:
        os.close(w)
        os.close(r)
        for pid in children:
            os.waitpid(pid, 0)
    return {"forked": len(children), "error": error}


def allocate(mb: int) -> dict[str, Any]:
    chunks = []
    for i in range(mb // 8):
        chunks.append(b"\x01" * (8 << 20))  # touched: really resident
        print(f"allocated {(i + 1) * 8} MiB", flush=True)
    return {"allocated_mb": len(chunks) * 8}


SPAWNED: list[subprocess.Popen[bytes]] = []


def spawn(marker: str) -> dict[str, Any]:
    pids: dict[str, int] = {}
    for kind in ("setsid", "daemon"):
        p = subprocess.Popen([sys.executable, "-c", CHILD, f"{marker}-{kind}", kind])
        SPAWNED.append(p)
        pids[kind] = p.pid
    time.sleep(0.2)  # the daemon's first fork has exited by now
    return {"pids": pids}


def value() -> dict[str, Any]:
    import hostiledep

    return {"value": hostiledep.VALUE, "file": hostiledep.__file__}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/health":
            self._send({"ok": True})
        elif url.path == "/whoami":
            self._send(whoami())
        elif url.path == "/fork":
            self._send(fork_until_refused(int(q.get("max", "10000"))))
        elif url.path == "/alloc":
            self._send(allocate(int(q.get("mb", "256"))))
        elif url.path == "/spawn":
            self._send(spawn(q["marker"]))
        elif url.path == "/secret":
            print(f"the secret is {os.environ.get('API_SECRET')}", flush=True)
            self._send({"printed": True})
        elif url.path == "/value":
            self._send(value())
        else:
            self._send(
                {
                    "deployment": os.environ.get("TRISTAGE_DEPLOYMENT"),
                    "environment": os.environ.get("TRISTAGE_ENV"),
                    "branch": os.environ.get("TRISTAGE_GIT_BRANCH"),
                }
            )

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if urlsplit(self.path).path == "/probe":
            self._send(probe(json.loads(body)))
        else:
            self._send({"error": "not found"}, 404)

    def _send(self, body: dict[str, Any], code: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
