"""Git edge: the hosted bare repository of a project, its push hook, and artifacts.

An artifact is the tree of one commit, extracted with `git archive` into its own
directory; nothing outside that tree (untracked files, `.git`) reaches it.
"""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

from ..errors import GitError, NotFound, UsageError

ZERO = "0" * 40
REMOTE = "tristage"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    for k in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        if k in os.environ:
            env[k] = os.environ[k]
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def run(cwd: Path, *args: str, check: bool = True, input: bytes | None = None) -> str:
    """git ARGS in `cwd`: its stdout, stripped. A failure (with `check`) is a GitError."""
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, env=_env(), input=input, check=False
        )
    except OSError as exc:  # git missing, or `cwd` gone
        raise GitError(
            f"could not run git {' '.join(args)} in {cwd}: {exc.strerror or exc}",
            "install git and check that the directory exists",
        ) from exc
    if check and proc.returncode != 0:
        raise GitError(
            f"git {' '.join(args)} failed in {cwd}: {proc.stderr.decode(errors='replace').strip()}"
        )
    return proc.stdout.decode(errors="replace").strip()


def hook_script(home: Path, project: str) -> str:
    """The post-receive hook: the same interpreter runs the `receive` command."""
    code = "from tristage.cli.deploys import receive_main; receive_main()"
    cmd = [sys.executable, "-c", code, "--home", str(home), "--project", project]
    return "#!/bin/sh\n# installed by tristage: enqueue a deployment per pushed branch\n" + (
        "exec " + " ".join(shlex.quote(c) for c in cmd) + "\n"
    )


def ensure_bare(path: Path, home: Path, project: str) -> bool:
    """Create the bare repository with its hook (idempotent); True when created."""
    created = not (path / "HEAD").exists()
    if created:
        path.mkdir(parents=True, exist_ok=True)
        run(path, "init", "-q", "--bare", "-b", "main")
        run(path, "config", "receive.denyDeletes", "false")
    hook = path / "hooks" / "post-receive"
    hook.parent.mkdir(parents=True, exist_ok=True)
    text = hook_script(home, project)
    if not hook.exists() or hook.read_text() != text:
        hook.write_text(text)
        hook.chmod(0o755)
    return created


def ensure_remote(root: Path, url: str, name: str = REMOTE) -> str:
    """Point the working copy's remote `name` at `url`; returns what was done."""
    current = run(root, "remote", "get-url", name, check=False)
    if current == url:
        return "unchanged"
    if current:
        run(root, "remote", "set-url", name, url)
        return "updated"
    run(root, "remote", "add", name, url)
    return "added"


def rev_parse(repo: Path, rev: str) -> str:
    out = run(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    if not out:
        raise NotFound(f"no commit {rev!r} in {repo}", "commit your changes, or check the name")
    return out


def current_branch(root: Path) -> str:
    out = run(root, "symbolic-ref", "--short", "-q", "HEAD", check=False)
    if not out:
        raise UsageError("the working copy is not on a branch", "pass --branch NAME")
    return out


def commit_message(repo: Path, commit: str) -> str:
    return run(repo, "log", "-1", "--format=%s", commit, check=False)


def show_file(repo: Path, commit: str, path: str) -> str | None:
    """The text of `path` in `commit` (None when the commit has no such file)."""
    proc = subprocess.run(
        ["git", "show", f"{commit}:{path}"], cwd=repo, capture_output=True, env=_env(), check=False
    )
    return proc.stdout.decode("utf-8", errors="replace") if proc.returncode == 0 else None


def keep_ref(repo: Path, name: str, commit: str) -> None:
    """Pin a commit under refs/tristage/ so redeploys survive force-pushes and gc."""
    run(repo, "update-ref", f"refs/tristage/deployments/{name}", commit)


def push_commit(root: Path, bare: Path, commit: str, name: str) -> None:
    """Copy a commit of a working copy into the bare repository (no branch moves)."""
    run(root, "push", "-q", str(bare), f"{commit}:refs/tristage/deployments/{name}")


def archive(repo: Path, commit: str, dest: Path) -> None:
    """Extract the tree of `commit` into `dest` (which must not exist yet)."""
    proc = subprocess.run(
        ["git", "archive", "--format=tar", commit],
        cwd=repo,
        capture_output=True,
        env=_env(),
        check=False,
    )
    if proc.returncode != 0:
        raise UsageError(
            f"git archive {commit} failed: {proc.stderr.decode().strip()}",
            "push the commit to the tristage remote, then deploy again",
        )
    tmp = dest.with_name(dest.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=False)
    with tarfile.open(fileobj=io.BytesIO(proc.stdout), mode="r:") as tar:
        tar.extractall(tmp, filter="data")
    tmp.rename(dest)
