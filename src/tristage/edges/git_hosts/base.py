"""What a git host is to tristage: verify its webhook, parse its push and pull-request
events into `domain.git_events`, and the REST calls for commit statuses and the one
pull-request comment.

A host module is data and small functions; `HostApi` makes the HTTP calls (httpx) the
host's `Request`s describe. Verification failures carry an HTTP status and a short
reason, never the body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote

import httpx

from ...domain.git_events import GitEvent, Ignored, PullRequest, StatusState
from ...errors import TristageError
from ..webhook_providers.base import VerificationError

__all__ = [
    "GitHost",
    "HostApi",
    "HostApiError",
    "Request",
    "VerificationError",
    "hmac_sha256_hex",
    "json_body",
    "require_header",
    "same",
]


@dataclass(frozen=True)
class Request:
    """One REST call: method, path under the API base, JSON body."""

    method: str
    path: str
    json: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class GitHost(Protocol):
    """One git host (`tristage connect NAME`). `headers` have lower-case names."""

    name: str
    title: str  # GitHub, GitLab, Gitea
    default_url: str  # the web URL of the public instance
    events: tuple[str, ...]  # what to tick in the host's webhook form
    basic_user: str  # the user name git sends with the token over https

    def api_base(self, web_url: str) -> str:
        """The REST API's base URL for an instance at `web_url`."""
        ...

    def clone_urls(self, web_url: str, repo: str) -> tuple[str, str]:
        """(https, ssh) clone URLs of `repo` (OWNER/NAME)."""
        ...

    def verify(self, secret: str, headers: Mapping[str, str], body: bytes) -> str:
        """Check the delivery with `secret` in constant time; its delivery id.
        Raise VerificationError."""
        ...

    def sign(self, secret: str, delivery: str, event: str, body: bytes) -> dict[str, str]:
        """The headers the host sends with `body` for `event` (its own event name)."""
        ...

    def parse(self, headers: Mapping[str, str], body: bytes) -> GitEvent:
        """The domain event of a verified delivery (ValueError when malformed)."""
        ...

    def pull_ref(self, number: int) -> str:
        """The ref the host keeps a pull request's head under."""
        ...

    def auth_headers(self, token: str) -> dict[str, str]: ...

    def status_request(
        self, repo: str, sha: str, state: StatusState, target_url: str | None,
        description: str, context: str,
    ) -> Request: ...  # fmt: skip

    def comment_create(self, repo: str, number: int, body: str) -> Request: ...

    def comment_update(self, repo: str, number: int, comment_id: str, body: str) -> Request: ...


class HostApiError(TristageError):
    """The host's API refused or failed a call (never carries the token)."""


class HostApi:
    """The REST calls of one connected repository."""

    def __init__(
        self, host: GitHost, api_base: str, token: str, repo: str, timeout: float = 15.0
    ) -> None:
        self.host, self.repo = host, repo
        self.base = api_base.rstrip("/")
        self._client = httpx.Client(
            timeout=timeout,
            trust_env=False,
            headers={"user-agent": "tristage", **host.auth_headers(token)},
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HostApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, req: Request) -> dict[str, Any]:
        url = self.base + req.path
        try:
            r = self._client.request(req.method, url, json=req.json)
        except httpx.HTTPError as exc:
            raise HostApiError(
                f"{self.host.title} API {req.method} {req.path}: {type(exc).__name__}: {exc}",
                "check the API URL given to 'tristage connect' and that the host is reachable",
            ) from None
        if r.status_code >= 300:
            raise HostApiError(
                f"{self.host.title} API {req.method} {req.path} answered {r.status_code}: "
                f"{r.text[:200]}",
                "check that the token may write commit statuses and comments "
                "('tristage connect' again with a new token)",
            )
        try:
            data = r.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def set_status(
        self, sha: str, state: StatusState, target_url: str | None, description: str,
        context: str = "tristage/preview",
    ) -> None:  # fmt: skip
        self._call(
            self.host.status_request(self.repo, sha, state, target_url, description, context)
        )

    def upsert_comment(self, number: int, body: str, comment_id: str | None) -> str:
        """Edit comment `comment_id`, or create it when None; its id."""
        if comment_id is not None:
            self._call(self.host.comment_update(self.repo, number, comment_id, body))
            return comment_id
        data = self._call(self.host.comment_create(self.repo, number, body))
        if "id" not in data:
            raise HostApiError(f"{self.host.title} API: the new comment has no id")
        return str(data["id"])


# -- helpers the host modules share -------------------------------------------------


def hmac_sha256_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time equality of two strings."""
    return hmac.compare_digest(a.encode(), b.encode())


def require_header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name, "").strip()
    if not value:
        raise VerificationError(400, "missing_header", f"the {name} header is missing")
    return value


def json_body(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        raise ValueError("the body is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("the body is not a JSON object")
    return data


def text(data: Mapping[str, Any], *path: str) -> str:
    """The string at `path` in nested objects ("" when absent or not a string)."""
    cur: Any = data
    for key in path:
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(key)
    return cur if isinstance(cur, str) else ""


def number(data: Mapping[str, Any], *path: str) -> int:
    cur: Any = data
    for key in path:
        if not isinstance(cur, Mapping):
            raise ValueError(f"no {'.'.join(path)} in the event")
        cur = cur.get(key)
    if not isinstance(cur, int) or isinstance(cur, bool) or cur <= 0:
        raise ValueError(f"{'.'.join(path)} is not a pull request number")
    return cur


def origin(web_url: str) -> str:
    return web_url.rstrip("/")


def host_of(web_url: str) -> str:
    return httpx.URL(web_url).host


def is_zero_after(sha: str) -> bool:
    """A push's `after` of all zeros: the branch was deleted."""
    return bool(sha) and set(sha) == {"0"}


def github_pull_request(data: Mapping[str, Any], open_actions: frozenset[str]) -> GitEvent:
    """A pull-request event in GitHub's payload shape (GitHub's and Gitea's)."""
    action = text(data, "action")
    pr = data.get("pull_request")
    if not isinstance(pr, dict):
        raise ValueError("no pull_request in the event")
    n = number(data, "number")
    head_ref, head_sha = text(pr, "head", "ref"), text(pr, "head", "sha")
    fork = text(pr, "head", "repo", "full_name") != text(pr, "base", "repo", "full_name")
    if action in open_actions:
        return PullRequest(n, "open", head_ref, head_sha, from_fork=fork)
    if action == "closed":
        return PullRequest(n, "close", head_ref, head_sha, merged=pr.get("merged") is True)
    return Ignored(f"pull_request {action or '?'}")


class GitHubShapedRest:
    """The REST calls GitHub and Gitea share: commit statuses, pull refs and issue comments."""

    def pull_ref(self, number: int) -> str:
        return f"refs/pull/{number}/head"

    def status_request(
        self, repo: str, sha: str, state: StatusState, target_url: str | None,
        description: str, context: str,
    ) -> Request:  # fmt: skip
        body: dict[str, object] = {"state": state, "description": description, "context": context}
        if target_url:
            body["target_url"] = target_url
        return Request("POST", f"/repos/{repo}/statuses/{sha}", body)

    def comment_create(self, repo: str, number: int, body: str) -> Request:
        return Request("POST", f"/repos/{repo}/issues/{number}/comments", {"body": body})

    def comment_update(self, repo: str, number: int, comment_id: str, body: str) -> Request:
        return Request(
            "PATCH", f"/repos/{repo}/issues/comments/{quote(comment_id)}", {"body": body}
        )
