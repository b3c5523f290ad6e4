"""`tristage doctor`: what this machine has of what tristage needs, and how to get the rest."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from ..edges.runtime.cgroups import hierarchy
from ..edges.runtime.local import sandbox_problem

OK, WARN, FAIL = "ok", "warning", "missing"


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # ok | warning | missing
    detail: str
    fix: str = ""

    def as_json(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "detail": self.detail, "fix": self.fix}


def _version(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if out.returncode == 0 and text else None


def _install_hint(package: str) -> str:
    if os.geteuid() == 0 and shutil.which("apt-get"):
        return f"apt-get install -y {package}"
    return f"sudo apt-get install -y {package} (or your distribution's {package} package)"


def run_checks() -> list[Finding]:
    out: list[Finding] = []
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        out.append(Finding("bubblewrap", FAIL, "bwrap is not installed: releases cannot be "
                           "sandboxed", _install_hint("bubblewrap")))  # fmt: skip
    else:
        out.append(Finding("bubblewrap", OK, _version([bwrap, "--version"]) or bwrap))
    h = hierarchy()
    if h.usable:
        out.append(Finding("cgroups", OK, f"cgroup v{h.version}: memory, cpu and pids limits"))
    else:
        out.append(Finding("cgroups", FAIL, h.problem, "run tristage up as root, or delegate a "
                           "cgroup v2 subtree to its user (systemd: Delegate=yes)"))  # fmt: skip
    if bwrap is not None and h.usable:
        problem = sandbox_problem(bwrap)
        if problem:
            fix = "enable user namespaces: sysctl user.max_user_namespaces=15000"
            out.append(Finding("sandbox", FAIL, problem, fix))
        else:
            out.append(Finding("sandbox", OK, "a sandboxed process started (user, pid, IPC "
                               "namespaces; read-only system)"))  # fmt: skip
    else:
        why = "cannot run: development runs unsandboxed with a warning; preview and production"
        fix = 'fix the above, or set [policy] sandbox = "off" to accept the risk'
        out.append(Finding("sandbox", FAIL, why + " refuse to start", fix))
    git = _version(["git", "--version"])
    out.append(Finding("git", OK if git else FAIL, git or "git is not installed",
                       "" if git else _install_hint("git")))  # fmt: skip
    for tool, package, why in (
        ("pg_dump", "postgresql-client", "PostgreSQL backups and clones"),
        ("node", "nodejs", "Node apps"),
        ("npm", "npm", "Node apps"),
    ):
        found = shutil.which(tool)
        out.append(Finding(tool, OK if found else WARN, found or f"not installed ({why})",
                           "" if found else _install_hint(package)))  # fmt: skip
    return out
