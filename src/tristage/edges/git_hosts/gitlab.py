"""GitLab (gitlab.com and self-managed).

Webhook: `X-Gitlab-Token` carries the webhook's secret token itself (compared in
constant time); the delivery id is `Idempotency-Key` (the same across retries) or else
`X-Gitlab-Event-UUID`; `X-Gitlab-Event` is `Push Hook` or `Merge Request Hook`. A
deleted branch is a push whose `after` is all zeros. REST (`/api/v4`, the project named
by its URL-encoded path): `POST /projects/:id/statuses/:sha`, merge request notes
(`POST /projects/:id/merge_requests/:iid/notes`, `PUT .../notes/:note_id`).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from ...domain.git_events import GitEvent, Ignored, PullRequest, Push, StatusState, branch_of
from . import register
from .base import (
    Request,
    VerificationError,
    host_of,
    is_zero_after,
    json_body,
    number,
    origin,
    require_header,
    same,
    text,
)

OPEN_ACTIONS = frozenset({"open", "reopen", "update"})
CLOSE_ACTIONS = frozenset({"close", "merge"})
STATES: dict[str, str] = {"pending": "pending", "success": "success", "failure": "failed"}


def _project(repo: str) -> str:
    return quote(repo, safe="")


class GitLab:
    name = "gitlab"
    title = "GitLab"
    default_url = "https://gitlab.com"
    events: tuple[str, ...] = ("Push events", "Merge request events")
    basic_user = "oauth2"

    def api_base(self, web_url: str) -> str:
        return origin(web_url) + "/api/v4"

    def clone_urls(self, web_url: str, repo: str) -> tuple[str, str]:
        return f"{origin(web_url)}/{repo}.git", f"git@{host_of(web_url)}:{repo}.git"

    def verify(self, secret: str, headers: Mapping[str, str], body: bytes) -> str:
        given = require_header(headers, "x-gitlab-token")
        if not same(given, secret):
            raise VerificationError(401, "bad_signature", "the X-Gitlab-Token does not match")
        delivery = (
            headers.get("idempotency-key", "").strip()
            or headers.get("x-gitlab-event-uuid", "").strip()
        )
        if not delivery:
            raise VerificationError(
                400, "missing_header", "neither Idempotency-Key nor X-Gitlab-Event-UUID is set"
            )
        return delivery

    def sign(self, secret: str, delivery: str, event: str, body: bytes) -> dict[str, str]:
        return {
            "X-Gitlab-Event": event,
            "X-Gitlab-Token": secret,
            "X-Gitlab-Event-UUID": delivery,
            "X-Gitlab-Webhook-UUID": "00000000-0000-4000-8000-000000000001",
            "Idempotency-Key": delivery,
            "X-Gitlab-Instance": "https://gitlab.example",
            "User-Agent": "GitLab/17.6.0",
            "Content-Type": "application/json",
        }

    def parse(self, headers: Mapping[str, str], body: bytes) -> GitEvent:
        data = json_body(body)
        kind = text(data, "object_kind")
        if kind == "push":
            branch = branch_of(data.get("ref"))
            if branch is None:
                return Ignored(f"not a branch: {text(data, 'ref') or '?'}")
            after = text(data, "after")
            if is_zero_after(after):
                return Push(branch, "", deleted=True)
            return Push(branch, after)
        if kind == "merge_request":
            attrs = data.get("object_attributes")
            if not isinstance(attrs, dict):
                raise ValueError("no object_attributes in the event")
            action = text(attrs, "action")
            n = number(attrs, "iid")
            head_ref = text(attrs, "source_branch")
            head_sha = text(attrs, "last_commit", "id")
            fork = attrs.get("source_project_id") != attrs.get("target_project_id")
            if action in OPEN_ACTIONS and text(attrs, "state") in ("opened", ""):
                return PullRequest(n, "open", head_ref, head_sha, from_fork=fork)
            if action in CLOSE_ACTIONS:
                return PullRequest(n, "close", head_ref, head_sha, merged=action == "merge")
            return Ignored(f"merge_request {action or '?'}")
        return Ignored(f"event {headers.get('x-gitlab-event', kind) or '?'}")

    def pull_ref(self, number: int) -> str:
        return f"refs/merge-requests/{number}/head"

    def auth_headers(self, token: str) -> dict[str, str]:
        return {"private-token": token, "accept": "application/json"}

    def status_request(
        self, repo: str, sha: str, state: StatusState, target_url: str | None,
        description: str, context: str,
    ) -> Request:  # fmt: skip
        body: dict[str, object] = {
            "state": STATES[state], "name": context, "description": description,
        }  # fmt: skip
        if target_url:
            body["target_url"] = target_url
        return Request("POST", f"/projects/{_project(repo)}/statuses/{sha}", body)

    def comment_create(self, repo: str, number: int, body: str) -> Request:
        return Request(
            "POST", f"/projects/{_project(repo)}/merge_requests/{number}/notes", {"body": body}
        )

    def comment_update(self, repo: str, number: int, comment_id: str, body: str) -> Request:
        return Request(
            "PUT",
            f"/projects/{_project(repo)}/merge_requests/{number}/notes/{quote(comment_id)}",
            {"body": body},
        )


register(GitLab())
