"""The pre-receive hook's client of a running control plane (standard library only).

`python -I -S HOME/hook-client.py --home HOME --project NAME`: the hook runs a copy of
this file (written into the platform home by `git.install_hooks`) when the control
plane of the home serves its hook socket (`HOME/hook.sock`, 0600). It imports nothing
of tristage nor of any package, so a push reaches the control plane in a few
milliseconds instead of the seconds it takes to import the platform. It sends the
ref updates git gave it on stdin, with the hook's `GIT_*` variables (the control
plane reads the pushed commits from git's quarantine while the push is decided),
prints the deploy's output as it comes, and exits with the control plane's verdict:
non-zero refuses the push.

The pusher going away (Ctrl-C, a dropped connection: a signal, or the pipe to git
closing) closes the socket, and the control plane cancels the deployments this
push started. Without a control plane to talk to (no socket, or a stale one after
a `kill -9`), it runs the hook again with `TRISTAGE_HOOK_CLIENT=off`: the in-process
hook, which imports tristage.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys

SOCKET_NAME = "hook.sock"
VERSION = 1
# what the control plane needs of the hook's environment to read the pushed objects
GIT_KEYS = ("GIT_QUARANTINE_PATH", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES")
MAX_PATH = 100  # sun_path holds 108 bytes; longer paths go through /proc/self/fd


def socket_address(home: str) -> tuple[str, int | None]:
    """The address of `home`'s hook socket, and a directory descriptor to close after
    binding or connecting when the path is too long for a unix socket address."""
    path = os.path.join(home, SOCKET_NAME)
    if len(path.encode()) <= MAX_PATH:
        return path, None
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
    return f"/proc/self/fd/{fd}/{SOCKET_NAME}", fd


def connect(home: str, timeout: float = 5.0) -> socket.socket | None:
    """A connection to the control plane's hook socket, None when nothing listens."""
    try:
        address, fd = socket_address(home)
    except OSError:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        return None
    finally:
        if fd is not None:
            os.close(fd)
    sock.settimeout(None)
    return sock


def _fallback() -> None:
    """Run the hook again, in process (stdin has not been read)."""
    hook = os.environ.get("TRISTAGE_HOOK_SCRIPT", "")
    if not hook or not os.path.isfile(hook):
        print("tristage: cannot reach the control plane and no hook to run instead", flush=True)
        sys.exit(1)
    os.environ["TRISTAGE_HOOK_CLIENT"] = "off"
    os.execv("/bin/sh", ["/bin/sh", hook])


def _gone(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    try:
        home = argv[argv.index("--home") + 1]
        project = argv[argv.index("--project") + 1]
    except (ValueError, IndexError):
        print("usage: hook-client.py --home HOME --project NAME", file=sys.stderr)
        return 2
    sock = connect(home)
    if sock is None:
        _fallback()
        return 1
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _gone)
    lines = sys.stdin.read().splitlines()
    request = {
        "v": VERSION,
        "project": project,
        "lines": lines,
        "git": {k: os.environ[k] for k in GIT_KEYS if k in os.environ},
        "cwd": os.getcwd(),
    }
    out = sys.stdout.buffer
    try:
        sock.sendall(json.dumps(request).encode() + b"\n")
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        # the pipe to git: an error or hang-up on it means the pusher went away
        poller.register(out.fileno(), select.POLLERR | select.POLLHUP)
        buf = b""
        while True:
            events = poller.poll()
            if any(fd == out.fileno() for fd, _ in events):
                return 1
            chunk = sock.recv(65536)
            if not chunk:
                out.write(
                    b"tristage: the control plane stopped during the push, which is refused;"
                    b" run 'tristage up' and push again\n"
                )
                out.flush()
                return 1
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                message = json.loads(raw)
                if "out" in message:
                    out.write(str(message["out"]).encode("utf-8", "replace") + b"\n")
                    out.flush()
                if "exit" in message:
                    return int(message["exit"])
    except (BrokenPipeError, ConnectionError):
        return 1
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
