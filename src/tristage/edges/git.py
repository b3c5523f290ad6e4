"""Git edge: the hosted bare repository of a project, its push hook, and artifacts.

An artifact is the tree of one commit, extracted with `git archive` into its own
directory; nothing outside that tree (untracked files, `.git`) reaches it.
"""

from __future__ import annotations

import base64
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import IO

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


ARCHIVE_MAX_BYTES = 2 * 1024**3  # the default bound on an artifact's total size
ARCHIVE_TIMEOUT = 600.0  # seconds
_ARCHIVE_FIX = (
    "make the link relative and pointing inside the repository, or commit the file it "
    "points to instead of the link; then push again"
)


def _archive_limit(max_bytes: int | None) -> int:
    if max_bytes is not None:
        return max_bytes
    raw = os.environ.get("TRISTAGE_ARCHIVE_MAX_BYTES", "").strip()
    if not raw:
        return ARCHIVE_MAX_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise UsageError(
            f"TRISTAGE_ARCHIVE_MAX_BYTES={raw!r} is not a positive number of bytes",
            "set it to the largest artifact to accept, e.g. 2147483648 (2 GiB), or unset it",
        )
    return value


def _refusal(exc: tarfile.FilterError) -> UsageError:
    """The clear error for a tree member the data filter refuses to extract."""
    member: tarfile.TarInfo | None = getattr(exc, "tarinfo", None)
    if member is not None and (member.issym() or member.islnk()):
        return UsageError(
            f"{member.name} is a symlink to {member.linkname}, which is outside the repository",
            _ARCHIVE_FIX,
        )
    name = member.name if member is not None else "a member of the tree"
    return UsageError(
        f"{name} cannot be extracted into the artifact: {exc}",
        "keep only regular files, directories and links inside the repository in the tree",
    )


def archive(
    repo: Path,
    commit: str,
    dest: Path,
    *,
    max_bytes: int | None = None,
    timeout: float = ARCHIVE_TIMEOUT,
) -> None:
    """Extract the tree of `commit` into `dest` (which must not exist yet).

    `git archive` is streamed into `tarfile` one member at a time, so memory stays flat
    whatever the file sizes. Extraction goes into `DEST.partial`, renamed to `dest` only
    when complete; on any error it is removed and a `UsageError` says what and how to
    fix it. A symlink whose target is outside the repository (absolute, or `..` past the
    root, directly or through another link) is refused; links that stay inside are kept.
    The archive is stopped past `max_bytes` in total (`TRISTAGE_ARCHIVE_MAX_BYTES`,
    default 2 GiB) or `timeout` seconds.
    """
    limit = _archive_limit(max_bytes)
    tmp = dest.with_name(dest.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=False)
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            # Blobs past the threshold are streamed by git too, not loaded whole.
            ["git", "-c", "core.bigFileThreshold=16m", "archive", "--format=tar", commit],
            cwd=repo,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=_env(),
        )
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            proc.kill()

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            assert proc.stdout is not None
            unreadable: tarfile.TarError | None = None
            try:
                _extract_stream(proc.stdout, tmp, limit)
            except tarfile.FilterError as exc:
                raise _refusal(exc) from None
            except tarfile.TarError as exc:  # a truncated stream: git failed or was stopped
                unreadable = exc
            rc = proc.wait()
            if expired.is_set():
                raise UsageError(
                    f"git archive {commit} took longer than {timeout:g}s",
                    "make the repository smaller (large generated files do not belong in it)",
                )
            if rc != 0:
                errors.seek(0)
                said = errors.read().decode(errors="replace").strip()
                raise UsageError(
                    f"git archive {commit} failed: {said}",
                    "push the commit to the tristage remote, then deploy again",
                )
            if unreadable is not None:
                raise UsageError(f"the archive of {commit} is unreadable: {unreadable}")
        except BaseException:
            proc.kill()
            proc.wait()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            timer.cancel()
            if proc.stdout is not None:
                proc.stdout.close()
    tmp.rename(dest)


def _extract_stream(stream: IO[bytes], into: Path, limit: int) -> None:
    """Extract a tar stream member by member (the `data` filter), at most `limit` bytes."""
    total = 0
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            total += member.size
            if total > limit:
                raise UsageError(
                    f"the tree is larger than the {limit}-byte limit (at {member.name})",
                    "remove large files from the repository, or raise the limit with "
                    "TRISTAGE_ARCHIVE_MAX_BYTES",
                )
            tar.extract(member, into, filter="data")


FETCH_TIMEOUT = 600.0  # seconds


def _remote(
    repo: Path, args: list[str], url: str, basic_auth: tuple[str, str] | None, timeout: float
) -> str:
    """Run a git command that talks to the remote `url`, with the token as a header."""
    env = _env()
    hide: list[str] = []
    if basic_auth is not None:
        user, token = basic_auth
        pair = base64.b64encode(f"{user}:{token}".encode()).decode()
        env.update(
            GIT_CONFIG_COUNT="1",
            GIT_CONFIG_KEY_0="http.extraHeader",
            GIT_CONFIG_VALUE_0=f"Authorization: Basic {pair}",
        )
        hide = [s for s in (token, pair) if s]
    env["GIT_SSH_COMMAND"] = os.environ.get(
        "GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new"
    )
    what = f"git {args[0]} from {url}"
    try:
        proc = subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, env=env, timeout=timeout,
            check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise GitError(
            f"{what} took longer than {timeout:g}s",
            "check that the origin is reachable from this machine",
        ) from None
    except OSError as exc:
        raise GitError(f"could not run git {args[0]} in {repo}: {exc.strerror or exc}") from exc
    if proc.returncode != 0:
        said = proc.stderr.decode(errors="replace").strip()
        for s in hide:
            said = said.replace(s, "***")
        raise GitError(
            f"{what} failed: {said}",
            "check the clone URL and the token given to 'tristage connect'",
        )
    return proc.stdout.decode(errors="replace")


def fetch(
    repo: Path,
    url: str,
    refspecs: list[str],
    *,
    basic_auth: tuple[str, str] | None = None,
    timeout: float = FETCH_TIMEOUT,
) -> None:
    """`git fetch URL REFSPEC...` into `repo` (no tags, no hooks run).

    A token for https goes to git as an `http.extraHeader` through the environment
    (`GIT_CONFIG_*`), never on the command line or in the URL, and is cut out of any
    error text. ssh origins use the machine's ssh keys and known hosts."""
    args = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", url, *refspecs]
    _remote(repo, args, url, basic_auth, timeout)


def remote_commit(
    repo: Path,
    url: str,
    ref: str,
    *,
    basic_auth: tuple[str, str] | None = None,
    timeout: float = FETCH_TIMEOUT,
) -> str | None:
    """The commit `ref` is at on the remote `url` (`git ls-remote`), None without it."""
    out = _remote(repo, ["ls-remote", url, ref], url, basic_auth, timeout)
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if name == ref:
            return sha
    return None


def has_commit(repo: Path, sha: str) -> bool:
    proc = subprocess.run(
        ["git", "cat-file", "-e", f"{sha}^{{commit}}"],
        cwd=repo, capture_output=True, env=_env(), check=False,
    )  # fmt: skip
    return proc.returncode == 0
