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

A home too deep for a socket address has its socket at a stand-in path, which the client
finds as the control plane does: with `unix_sockets.socket_path`, from the copy of that
module beside the client (`HOME/hook-sockets.py`).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys

SOCKET_NAME = "hook.sock"
# the copy of `tristage/unix_sockets.py` beside the client's copy in the platform home
SOCKETS_FILE = "hook-sockets.py"
VERSION = 1
# what the control plane needs of the hook's environment to read the pushed objects
GIT_KEYS = ("GIT_QUARANTINE_PATH", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES")


def socket_address(home: str) -> str:
    """The path to bind or connect `home`'s hook socket at: `HOME/hook.sock`, or its
    stand-in when that is too long for a socket address (OSError when the stand-in's
    directory is not private, or the copy of `unix_sockets.py` cannot be loaded)."""
    if __package__:  # imported from the tristage package
        from ..unix_sockets import socket_path
    else:  # the copy in the platform home, run with `python -I -S`
        import importlib.util

        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), SOCKETS_FILE)
        spec = importlib.util.spec_from_file_location("tristage_unix_sockets", path)
        if spec is None or spec.loader is None:
            raise OSError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        socket_path = module.socket_path
    return socket_path(os.path.join(home, SOCKET_NAME))


def connect(home: str, timeout: float = 5.0) -> socket.socket | None:
    """A connection to the control plane's hook socket, None when nothing listens."""
    try:
        address = socket_address(home)
    except Exception:  # a stand-in refused, the module's copy missing or broken
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        return None
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
