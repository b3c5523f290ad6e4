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
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from .. import unix_sockets
from ..errors import GitError, NotFound, UsageError
from . import hook_client
from .hook_client import SOCKET_NAME

ZERO = "0" * 40
REMOTE = "tristage"


def _env(objects: Path | str | None = None) -> dict[str, str]:
    """The environment of a git command: none of the caller's `GIT_*` (a hook's
    `GIT_DIR` must not leak into commands on other repositories), and, with `objects`,
    that directory as an alternate object store (a push's quarantine, see
    `quarantine_dir`) while it exists."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    for k in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        if k in os.environ:
            env[k] = os.environ[k]
    env["GIT_TERMINAL_PROMPT"] = "0"
    if objects is not None and Path(objects).is_dir():
        env["GIT_ALTERNATE_OBJECT_DIRECTORIES"] = str(objects)
    return env


def quarantine_dir(repo: Path, environ: Mapping[str, str] | None = None) -> Path | None:
    """In a pre-receive hook: the directory git holds the pushed objects in until the
    push is accepted (`GIT_QUARANTINE_PATH`, else `GIT_OBJECT_DIRECTORY`, of `environ`:
    the hook's environment, by default this process's), when it is inside `repo`;
    None elsewhere."""
    environ = os.environ if environ is None else environ
    raw = environ.get("GIT_QUARANTINE_PATH") or environ.get("GIT_OBJECT_DIRECTORY")
    if not raw:
        return None
    path = Path(raw)
    if not path.is_absolute():
        path = repo / path
    path = path.resolve()
    return path if path.is_dir() and path.is_relative_to(repo.resolve()) else None


def run(
    cwd: Path,
    *args: str,
    check: bool = True,
    input: bytes | None = None,
    objects: Path | str | None = None,
) -> str:
    """git ARGS in `cwd`: its stdout, stripped. A failure (with `check`) is a GitError.
    `objects`: an extra object directory to read (a push's quarantine)."""
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            env=_env(objects),
            input=input,
            check=False,
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


# The file naming the Python interpreter of the installed tristage the hooks run
# (written by `install_hooks`, i.e. by `tristage up` and `init`): a hook resolves it
# when it runs, so a moved or deleted checkout is fixed by the next `tristage up`.
PYTHON_FILE = "hook-python"
# the pre-receive hook's client of a running control plane (a copy of `hook_client.py`,
# and of `unix_sockets.py` beside it)
CLIENT_FILE = "hook-client.py"
HOOKS = ("pre-receive", "post-receive")
HOOK_MARK = "# installed by tristage"


def hook_script(home: Path, project: str, hook: str) -> str:
    """A hook of the hosted repository, as a shell script.

    `pre-receive` deploys each pushed branch and refuses the push when a deploy fails;
    `post-receive` stops deleted branches (it starts tristage only for a push that
    deleted one; the control plane pins the accepted commits). Both are skipped by
    `git push -o skip-deploy`. While the home's control plane serves its hook socket,
    pre-receive runs the small client (`hook_client.py`, copied to `HOME/hook-client.py`)
    with the interpreter named in `HOME/hook-python`, without site packages: the control
    plane deploys and the client relays its output. Otherwise (and when the client
    cannot connect, or `TRISTAGE_HOOK_CLIENT=off`) they run `python -m
    tristage.cli.githook` with that interpreter when it can import tristage, else the
    `tristage` on PATH, else they say what to do (and pre-receive refuses).
    """
    q_home, q_project = shlex.quote(str(home)), shlex.quote(project)
    pre = hook == "pre-receive"
    what = (
        "deploy each pushed branch, refuse the push when its deploy fails"
        if pre
        else "stop deleted branches"
    )
    skipped = "echo 'tristage: skip-deploy: pushed without deploying' >&2" if pre else ":"
    missing = f"the interpreter in $home/{PYTHON_FILE} is gone and no 'tristage' is on PATH"
    fix = "run 'tristage up' from the installed tristage (it rewrites the hooks)"
    if pre:
        fix += ", or push with -o skip-deploy"
    lines = [
        "#!/bin/sh",
        f"{HOOK_MARK} ({hook}; rewritten by 'tristage up'): {what}",
        f"home={q_home}",
        f"project={q_project}",
        "i=0",
        'while [ "$i" -lt "${GIT_PUSH_OPTION_COUNT:-0}" ]; do',
        '  eval "opt=\\${GIT_PUSH_OPTION_$i}"',
        '  if [ "$opt" = skip-deploy ]; then',
        f"    {skipped}",
        "    exit 0",
        "  fi",
        "  i=$((i + 1))",
        "done",
        *(
            []
            if pre
            else [
                "# tristage is needed only for a deleted branch (the control plane pins the rest)",
                "lines=$(cat)",
                "printf '%s\\n' \"$lines\" | grep -Eq '^[0-9a-f]+ 0{40,64} refs/heads/' || exit 0",
                """exec <<EOF""",
                "$lines",
                "EOF",
            ]
        ),
        f'py=$(cat "$home/{PYTHON_FILE}" 2>/dev/null)',
        *(
            [
                "# a running control plane: the small client, which imports nothing",
                f'if [ "${{TRISTAGE_HOOK_CLIENT:-on}}" != off ] && [ -S "$home/{SOCKET_NAME}" ] \\',
                f'  && [ -n "$py" ] && [ -x "$py" ] && [ -f "$home/{CLIENT_FILE}" ]; then',
                '  TRISTAGE_HOOK_SCRIPT="$0" && export TRISTAGE_HOOK_SCRIPT',
                f'  exec "$py" -I -S "$home/{CLIENT_FILE}" --home "$home" --project "$project"',
                "fi",
            ]
            if pre
            else []
        ),
        """if [ -n "$py" ] && [ -x "$py" ] && "$py" -c 'import tristage' >/dev/null 2>&1; then""",
        f'  exec "$py" -m tristage.cli.githook {hook} --home "$home" --project "$project"',
        "fi",
        "if command -v tristage >/dev/null 2>&1; then",
        f'  exec tristage --home "$home" receive --hook {hook} --project "$project"',
        "fi",
        f'echo "tristage: cannot run tristage for this push: {missing}" >&2',
        f'echo "tristage: {fix}" >&2',
        f"exit {1 if pre else 0}",
    ]
    return "\n".join(lines) + "\n"


def install_hooks(path: Path, home: Path, project: str) -> None:
    """Write the hooks (and the interpreter they run) when they differ; remove an older
    tristage hook the current set no longer has. Push options are enabled for
    `-o skip-deploy`."""
    run(path, "config", "receive.advertisePushOptions", "true")
    hooks = path / "hooks"
    hooks.mkdir(parents=True, exist_ok=True)
    for name in HOOKS:
        hook = hooks / name
        text = hook_script(home, project, name)
        if not hook.exists() or hook.read_text() != text:
            tmp = hook.with_name(name + ".tmp")
            tmp.write_text(text)
            tmp.chmod(0o755)
            tmp.replace(hook)
    _write_private(home / PYTHON_FILE, sys.executable + "\n")
    write_hook_client(home)


def write_hook_client(directory: Path) -> Path:
    """The hook client's copy in `directory` (the platform home), with the copy of
    `unix_sockets.py` it loads beside it (written first); the client's path."""
    _write_private(directory / hook_client.SOCKETS_FILE, Path(unix_sockets.__file__).read_text())
    _write_private(directory / CLIENT_FILE, Path(hook_client.__file__).read_text())
    return directory / CLIENT_FILE


def _write_private(path: Path, text: str) -> None:
    """`text` into `path` (0600), when it differs."""
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def ensure_bare(path: Path, home: Path, project: str) -> bool:
    """Create the bare repository with its hooks (idempotent); True when created."""
    created = not (path / "HEAD").exists()
    if created:
        path.mkdir(parents=True, exist_ok=True)
        run(path, "init", "-q", "--bare", "-b", "main")
        run(path, "config", "receive.denyDeletes", "false")
    install_hooks(path, home, project)
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


def commit_message(repo: Path, commit: str, objects: Path | str | None = None) -> str:
    return run(repo, "log", "-1", "--format=%s", commit, check=False, objects=objects)


def show_file(repo: Path, commit: str, path: str, objects: Path | str | None = None) -> str | None:
    """The text of `path` in `commit` (None when the commit has no such file)."""
    proc = subprocess.run(
        ["git", "show", f"{commit}:{path}"],
        cwd=repo,
        capture_output=True,
        env=_env(objects),
        check=False,
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
    objects: Path | str | None = None,
) -> None:
    """Extract the tree of `commit` into `dest` (which must not exist yet).

    `git archive` is streamed into `tarfile` one member at a time, so memory stays flat
    whatever the file sizes. Extraction goes into `DEST.partial`, renamed to `dest` only
    when complete; on any error it is removed and a `UsageError` says what and how to
    fix it. A symlink whose target is outside the repository (absolute, or `..` past the
    root, directly or through another link) is refused; links that stay inside are kept.
    The archive is stopped past `max_bytes` in total (`TRISTAGE_ARCHIVE_MAX_BYTES`,
    default 2 GiB) or `timeout` seconds. `objects`: a push's quarantine directory, where
    the commit is while the pre-receive hook decides.
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
            env=_env(objects),
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
