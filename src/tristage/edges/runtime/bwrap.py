"""The bubblewrap command line of a sandboxed process (pure: no process is started here).

A sandboxed process runs in new user, pid, IPC, UTS and cgroup namespaces as an
unprivileged user, with no capabilities, in a new session. Its file system is
empty but for: the system's `/usr` (and `/bin`, `/lib*`, `/sbin` as the host has
them), a few files of `/etc` a program needs (users, name resolution, TLS roots,
time zone, package manager settings), the interpreters' prefixes outside `/usr`,
a private `/tmp`, a minimal `/dev` and `/proc` (of its own pid namespace), and
the mounts of its spec (artifact, data directory, dependency cache) at the paths
the spec gives. The platform home, other artifacts, other environments' data,
logs and other processes are not there.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .base import ProcessSpec

SANDBOX_UID = 10001
HOSTNAME = "sandbox"

# what of /etc a program may need: users and groups, name resolution, TLS roots,
# time zone, the dynamic linker's cache, MIME types, package manager settings
ETC_FILES = (
    "passwd", "group", "hosts", "resolv.conf", "nsswitch.conf", "host.conf", "gai.conf",
    "services", "protocols", "localtime", "timezone", "ld.so.cache", "ld.so.conf",
    "ld.so.conf.d", "mime.types", "ssl", "ca-certificates", "alternatives", "os-release",
    "debian_version", "pip.conf", "xdg/pip", "npmrc", "gitconfig", "locale.alias",
)  # fmt: skip
TOP_LEVEL = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


@dataclass(frozen=True)
class SystemView:
    """What of the host every sandboxed process sees, read-only."""

    top_level: tuple[tuple[str, str | None], ...]  # (name, symlink target or None for a dir)
    etc: tuple[str, ...]
    prefixes: tuple[Path, ...]  # interpreter installations outside /usr

    @classmethod
    def of_host(cls, extra_prefixes: Iterable[Path] = ()) -> SystemView:
        top: list[tuple[str, str | None]] = []
        for name in TOP_LEVEL:
            p = Path("/") / name
            if p.is_symlink():
                top.append((name, os.readlink(p)))
            elif p.is_dir():
                top.append((name, None))
        etc = tuple(f for f in ETC_FILES if (Path("/etc") / f).exists())
        return cls(tuple(top), etc, interpreter_prefixes(extra_prefixes))


def interpreter_prefixes(extra: Iterable[Path] = ()) -> tuple[Path, ...]:
    """The Python (and Node) installations a build or release may run, outside /usr."""
    out: list[Path] = []
    candidates = [Path(sys.base_prefix), *extra]
    node = shutil.which("node")
    if node:
        candidates.append(Path(os.path.realpath(node)).parent.parent)
    for c in candidates:
        c = c.resolve()
        if c == Path("/usr") or Path("/usr") in c.parents or c == Path("/"):
            continue
        if c not in out:
            out.append(c)
    return tuple(out)


def argv(bwrap: str, spec: ProcessSpec, view: SystemView) -> list[str]:
    """The full command line: bwrap's options, then the spec's command."""
    args = [
        bwrap,
        "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        "--unshare-cgroup-try", "--hostname", HOSTNAME,
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
        "--cap-drop", "ALL", "--new-session", "--die-with-parent",
        "--ro-bind", "/usr", "/usr",
    ]  # fmt: skip
    for name, target in view.top_level:
        if target is None:
            args += ["--ro-bind", f"/{name}", f"/{name}"]
        else:
            args += ["--symlink", target, f"/{name}"]
    for f in view.etc:
        args += ["--ro-bind", f"/etc/{f}", f"/etc/{f}"]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp"]
    for prefix in view.prefixes:
        args += ["--ro-bind", str(prefix), str(prefix)]
    for m in spec.mounts:
        args += ["--bind" if m.writable else "--ro-bind", str(m.source), str(m.inside)]
    args += ["--chdir", str(spec.cwd), "--"]
    return args + spec.argv()


def sandbox_env(env: dict[str, str]) -> dict[str, str]:
    """The process environment inside: HOME and TMPDIR on the private /tmp."""
    return {**env, "HOME": "/tmp", "TMPDIR": "/tmp", "USER": "app", "LOGNAME": "app"}
