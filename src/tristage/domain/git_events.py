"""Events of a git host (GitHub, GitLab, Gitea), as one small vocabulary. Pure: no I/O.

Each host's webhook payloads are parsed (`edges/git_hosts/`) into one of these:

- `Push`: a branch moved to `after`, or was deleted;
- `PullRequest`: a pull request (merge request) was opened or updated (`open`), with
  its head commit, or closed or merged (`close`);
- `Ping`: the host checks the URL (GitHub's `ping` when a webhook is added);
- `Ignored`: anything else (tags, labels, reviews), with the reason.

A pull request's preview is a deployment whose *branch* is `PR #N`: no git branch can
have that name (a space is not allowed in a ref), and its host label is `pr-N`, so
`pr-N.APP.localhost` serves it like a branch host.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Literal

from .branches import slug

ZERO_SHA = "0" * 40
INGEST_PATH = "/.tristage/git"
PR_PREFIX = "PR #"
PULL_REQUEST = "pull-request"  # the trigger of a pull request's preview deployment
_PR_RE = re.compile(r"^PR #([1-9][0-9]{0,9})\Z")


@dataclass(frozen=True)
class Push:
    branch: str
    after: str  # the new tip ("" when deleted)
    deleted: bool = False


@dataclass(frozen=True)
class PullRequest:
    number: int
    action: Literal["open", "close"]
    head_branch: str
    head_sha: str
    merged: bool = False
    from_fork: bool = False  # its head is in another repository (its author's fork)


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Ignored:
    reason: str


GitEvent = Push | PullRequest | Ping | Ignored


def to_json(event: GitEvent) -> dict[str, object]:
    """The event as JSON (kept with its delivery until it is acted on)."""
    return {"kind": type(event).__name__, **dataclasses.asdict(event)}


def from_json(data: dict[str, Any]) -> GitEvent:
    kinds: dict[str, type[Push | PullRequest | Ping | Ignored]] = {
        "Push": Push, "PullRequest": PullRequest, "Ping": Ping, "Ignored": Ignored,
    }  # fmt: skip
    fields = {k: v for k, v in data.items() if k != "kind"}
    return kinds[str(data["kind"])](**fields)


def pr_branch(number: int) -> str:
    """The deployment branch of pull request `number`: `PR #7` (host label `pr-7`)."""
    return f"{PR_PREFIX}{number}"


def pr_number(branch: str) -> int | None:
    """7 for `PR #7`, None for a git branch."""
    m = _PR_RE.match(branch)
    return int(m.group(1)) if m else None


def pr_label(number: int) -> str:
    return slug(pr_branch(number))


def is_zero(sha: str | None) -> bool:
    return not sha or set(sha) == {"0"}


def branch_of(ref: object) -> str | None:
    """`refs/heads/x` -> `x`; None for tags and anything else."""
    if isinstance(ref, str) and ref.startswith("refs/heads/") and len(ref) > len("refs/heads/"):
        return ref.removeprefix("refs/heads/")
    return None


StatusState = Literal["pending", "success", "failure"]


def comment_text(
    number: int,
    *,
    state: StatusState | Literal["closed"],
    commit: str,
    url: str | None,
    deployment: str | None,
    reason: str | None = None,
) -> str:
    """The one comment a pull request gets, rewritten on every push."""
    short = commit[:7]
    head = f"**tristage preview** for #{number}"
    if state == "pending":
        body = f"Building `{short}`" + (f" as deployment `{deployment}`" if deployment else "")
        body += "…"
        if url:
            body += f"\n\nIt will be served at {url}"
    elif state == "success":
        body = f"Ready: {url}\n\nCommit `{short}`, deployment `{deployment}`."
    elif state == "failure":
        body = f"The deploy of `{short}` failed"
        body += f" (deployment `{deployment}`)" if deployment else ""
        body += f": {reason}" if reason else "."
        body += "\n\nSee `tristage logs " + (deployment or "ID") + " --build`."
    else:
        body = "The pull request is closed: its preview was torn down."
    return f"{head}\n\n{body}\n"
