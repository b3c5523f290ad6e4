"""Gitea (and Forgejo, which keeps Gitea's webhook and API).

Webhook: `X-Gitea-Signature: HEX`, the HMAC-SHA256 of the body with the webhook's
secret; `X-Gitea-Delivery` (a UUID) and `X-Gitea-Event` (`push`, `delete`,
`pull_request`; commits pushed to a pull request arrive as `pull_request_sync`, or as
`pull_request` with `X-Gitea-Event-Type: pull_request_sync`, action `synchronized`).
REST (`/api/v1`): `POST /repos/{owner}/{repo}/statuses/{sha}`, issue comments
(`POST /repos/{owner}/{repo}/issues/{index}/comments`,
`PATCH /repos/{owner}/{repo}/issues/comments/{id}`).
"""

from __future__ import annotations

from collections.abc import Mapping

from ...domain.git_events import GitEvent, Ignored, Push, branch_of
from . import register
from .base import (
    GitHubShapedRest,
    VerificationError,
    github_pull_request,
    hmac_sha256_hex,
    host_of,
    is_zero_after,
    json_body,
    origin,
    require_header,
    same,
    text,
)

OPEN_ACTIONS = frozenset({"opened", "reopened", "synchronized"})
PR_EVENTS = frozenset({"pull_request", "pull_request_sync"})


class Gitea(GitHubShapedRest):
    name = "gitea"
    title = "Gitea"
    default_url = "https://gitea.com"
    events: tuple[str, ...] = ("Push", "Delete", "Pull Request", "Pull Request Synchronized")
    basic_user = "oauth2"

    def api_base(self, web_url: str) -> str:
        return origin(web_url) + "/api/v1"

    def clone_urls(self, web_url: str, repo: str) -> tuple[str, str]:
        return f"{origin(web_url)}/{repo}.git", f"git@{host_of(web_url)}:{repo}.git"

    def verify(self, secret: str, headers: Mapping[str, str], body: bytes) -> str:
        delivery = require_header(headers, "x-gitea-delivery")
        given = require_header(headers, "x-gitea-signature")
        if not same(given.lower(), hmac_sha256_hex(secret, body)):
            raise VerificationError(401, "bad_signature", "the signature does not match")
        return delivery

    def sign(self, secret: str, delivery: str, event: str, body: bytes) -> dict[str, str]:
        return {
            "X-Gitea-Delivery": delivery,
            "X-Gitea-Event": event,
            "X-Gitea-Event-Type": event,
            "X-Gitea-Signature": hmac_sha256_hex(secret, body),
            "X-GitHub-Delivery": delivery,
            "X-GitHub-Event": event,
            "Content-Type": "application/json",
        }

    def parse(self, headers: Mapping[str, str], body: bytes) -> GitEvent:
        event = headers.get("x-gitea-event", "")
        kind = headers.get("x-gitea-event-type", "") or event
        data = json_body(body)
        if event == "push":
            branch = branch_of(data.get("ref"))
            if branch is None:
                return Ignored(f"not a branch: {text(data, 'ref') or '?'}")
            after = text(data, "after")
            if is_zero_after(after):
                return Push(branch, "", deleted=True)
            return Push(branch, after)
        if event == "delete":
            if text(data, "ref_type") != "branch" or not text(data, "ref"):
                return Ignored(f"delete of a {text(data, 'ref_type') or '?'}")
            return Push(text(data, "ref").removeprefix("refs/heads/"), "", deleted=True)
        if event in PR_EVENTS or kind in PR_EVENTS:
            return github_pull_request(data, OPEN_ACTIONS)
        return Ignored(f"event {event or '?'}")

    def auth_headers(self, token: str) -> dict[str, str]:
        return {"authorization": f"token {token}", "accept": "application/json"}


register(Gitea())
