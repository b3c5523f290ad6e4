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

from ...domain.git_events import GitEvent, Ignored, Ping, Push, branch_of
from . import register
from .base import (
    GitHubShapedRest,
    VerificationError,
    github_pull_request,
    hmac_sha256_hex,
    host_of,
    json_body,
    origin,
    require_header,
    same,
    text,
)

OPEN_ACTIONS = frozenset({"opened", "reopened", "synchronize"})


class GitHub(GitHubShapedRest):
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
            return github_pull_request(data, OPEN_ACTIONS)
        return Ignored(f"event {event or '?'}")

    def auth_headers(self, token: str) -> dict[str, str]:
        return {
            "authorization": f"Bearer {token}",
            "accept": "application/vnd.github+json",
            "x-github-api-version": "2022-11-28",
        }


register(GitHub())
