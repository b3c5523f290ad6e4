"""GitHub (github.com and GitHub Enterprise Server).

Webhook: `X-Hub-Signature-256: sha256=HEX`, the HMAC-SHA256 of the body with the
webhook's secret; `X-GitHub-Delivery` (a GUID, kept on redelivery) and
`X-GitHub-Event` (`ping`, `push`, `pull_request`). REST: commit statuses
(`POST /repos/{owner}/{repo}/statuses/{sha}`) and issue comments
(`POST /repos/{owner}/{repo}/issues/{number}/comments`,
`PATCH /repos/{owner}/{repo}/issues/comments/{id}`).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from ...domain.git_events import GitEvent, Ignored, Ping, PullRequest, Push, StatusState, branch_of
from . import register
from .base import (
    Request,
    VerificationError,
    hmac_sha256_hex,
    host_of,
    json_body,
    number,
    origin,
    require_header,
    same,
    text,
)

OPEN_ACTIONS = frozenset({"opened", "reopened", "synchronize"})


class GitHub:
    name = "github"
    title = "GitHub"
    default_url = "https://github.com"
    events: tuple[str, ...] = ("Pushes", "Pull requests")
    basic_user = "x-access-token"

    def api_base(self, web_url: str) -> str:
        web = origin(web_url)
        return "https://api.github.com" if web == self.default_url else web + "/api/v3"

    def clone_urls(self, web_url: str, repo: str) -> tuple[str, str]:
        return f"{origin(web_url)}/{repo}.git", f"git@{host_of(web_url)}:{repo}.git"

    def verify(self, secret: str, headers: Mapping[str, str], body: bytes) -> str:
        delivery = require_header(headers, "x-github-delivery")
        given = require_header(headers, "x-hub-signature-256")
        if not given.startswith("sha256="):
            raise VerificationError(400, "malformed", "X-Hub-Signature-256 is not sha256=HEX")
        if not same(given.removeprefix("sha256=").lower(), hmac_sha256_hex(secret, body)):
            raise VerificationError(401, "bad_signature", "the signature does not match")
        return delivery

    def sign(self, secret: str, delivery: str, event: str, body: bytes) -> dict[str, str]:
        return {
            "X-GitHub-Delivery": delivery,
            "X-GitHub-Event": event,
            "X-GitHub-Hook-ID": "1",
            "X-Hub-Signature-256": "sha256=" + hmac_sha256_hex(secret, body),
            "User-Agent": "GitHub-Hookshot/tristage",
            "Content-Type": "application/json",
        }

    def parse(self, headers: Mapping[str, str], body: bytes) -> GitEvent:
        event = headers.get("x-github-event", "")
        data = json_body(body)
        if event == "ping":
            return Ping()
        if event == "push":
            branch = branch_of(data.get("ref"))
            if branch is None:
                return Ignored(f"not a branch: {text(data, 'ref') or '?'}")
            if data.get("deleted") is True:
                return Push(branch, "", deleted=True)
            return Push(branch, text(data, "after"))
        if event == "pull_request":
            action = text(data, "action")
            pr = data.get("pull_request")
            if not isinstance(pr, dict):
                raise ValueError("no pull_request in the event")
            n = number(data, "number")
            head_ref, head_sha = text(pr, "head", "ref"), text(pr, "head", "sha")
            fork = text(pr, "head", "repo", "full_name") != text(pr, "base", "repo", "full_name")
            if action in OPEN_ACTIONS:
                return PullRequest(n, "open", head_ref, head_sha, from_fork=fork)
            if action == "closed":
                return PullRequest(n, "close", head_ref, head_sha, merged=pr.get("merged") is True)
            return Ignored(f"pull_request {action or '?'}")
        return Ignored(f"event {event or '?'}")

    def pull_ref(self, number: int) -> str:
        return f"refs/pull/{number}/head"

    def auth_headers(self, token: str) -> dict[str, str]:
        return {
            "authorization": f"Bearer {token}",
            "accept": "application/vnd.github+json",
            "x-github-api-version": "2022-11-28",
        }

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


register(GitHub())
