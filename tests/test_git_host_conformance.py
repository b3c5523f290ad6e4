"""One suite over every git host (GitHub, GitLab, Gitea): verification as the host
signs, parsing of its push and pull-request events, and its REST calls for commit
statuses and the one pull-request comment, against a recording stand-in of its API."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from git_host_fixtures import (
    ZERO,
    RecordingApi,
    delete_event,
    new_delivery,
    pull_request_event,
    push_event,
)
from tristage.domain.git_events import Ignored, Ping, PullRequest, Push
from tristage.edges import git_hosts
from tristage.edges.git_hosts import GitHost, HostApi, HostApiError, VerificationError

HOSTS = git_hosts.names()
SECRET = "s3cr3t-webhook-value"
REPO = "acme/shop"
CLONE = "https://example.invalid/acme/shop.git"
A, B = "a" * 40, "b" * 40


@pytest.fixture(params=HOSTS)
def host(request: pytest.FixtureRequest) -> GitHost:
    return git_hosts.get(request.param)


@pytest.fixture
def recorder() -> Iterator[RecordingApi]:
    server = RecordingApi().start()
    yield server
    server.stop()


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def signed(host: GitHost, event: str, body: dict[str, object], delivery: str | None = None,
           secret: str = SECRET) -> tuple[dict[str, str], bytes]:  # fmt: skip
    raw = json.dumps(body).encode()
    return lower(host.sign(secret, delivery or new_delivery(), event, raw)), raw


def test_the_three_hosts_are_registered() -> None:
    assert {"github", "gitlab", "gitea"} <= set(HOSTS)
    with pytest.raises(git_hosts.UnknownHost, match="no git host 'bitbucket'"):
        git_hosts.get("bitbucket")
    with pytest.raises(TypeError):
        git_hosts.register(object())  # type: ignore[arg-type]


def test_a_signed_delivery_verifies_with_its_delivery_id(host: GitHost) -> None:
    event, body = push_event(host.name, REPO, CLONE, "test", A, B)
    delivery = new_delivery()
    headers, raw = signed(host, event, body, delivery)
    assert host.verify(SECRET, headers, raw) == delivery


def test_a_changed_body_or_another_secret_is_refused(host: GitHost) -> None:
    event, body = push_event(host.name, REPO, CLONE, "test", A, B)
    headers, raw = signed(host, event, body)
    if host.name != "gitlab":  # GitLab sends the token itself: the body is not signed
        with pytest.raises(VerificationError) as info:
            host.verify(SECRET, headers, raw.replace(b"test", b"main"))
        assert info.value.status == 401
    forged, raw = signed(host, event, body, secret="not-the-secret")
    with pytest.raises(VerificationError) as info:
        host.verify(SECRET, forged, raw)
    assert info.value.status == 401 and info.value.reason == "bad_signature"


REQUIRED = {
    "github": [("x-hub-signature-256",), ("x-github-delivery",)],
    "gitea": [("x-gitea-signature",), ("x-gitea-delivery",)],
    "gitlab": [("x-gitlab-token",), ("idempotency-key", "x-gitlab-event-uuid")],
}


def test_a_delivery_without_its_signature_or_id_is_refused(host: GitHost) -> None:
    event, body = push_event(host.name, REPO, CLONE, "test", A, B)
    headers, raw = signed(host, event, body)
    for names in REQUIRED[host.name]:
        stripped = {k: v for k, v in headers.items() if k not in names}
        with pytest.raises(VerificationError) as info:
            host.verify(SECRET, stripped, raw)
        assert info.value.status == 400 and info.value.reason == "missing_header", names


def test_push_events_parse(host: GitHost) -> None:
    event, body = push_event(host.name, REPO, CLONE, "feature/x", A, B)
    headers, raw = signed(host, event, body)
    assert host.parse(headers, raw) == Push("feature/x", B)
    event, body = delete_event(host.name, REPO, CLONE, "feature/x", B)
    headers, raw = signed(host, event, body)
    assert host.parse(headers, raw) == Push("feature/x", "", deleted=True)
    event, body = push_event(host.name, REPO, CLONE, "x", A, B)
    body["ref"] = "refs/tags/v1.0"
    headers, raw = signed(host, event, body)
    assert isinstance(host.parse(headers, raw), Ignored)


def test_pull_request_events_parse(host: GitHost) -> None:
    for action, expected in (("opened", "open"), ("synchronize", "open"), ("closed", "close")):
        event, body = pull_request_event(host.name, REPO, CLONE, 7, action, "feature/x", B)
        headers, raw = signed(host, event, body)
        assert host.parse(headers, raw) == PullRequest(7, expected, "feature/x", B), action  # type: ignore[arg-type]
    event, body = pull_request_event(host.name, REPO, CLONE, 7, "closed", "feature/x", B,
                                     merged=True)  # fmt: skip
    headers, raw = signed(host, event, body)
    parsed = host.parse(headers, raw)
    assert isinstance(parsed, PullRequest) and parsed.action == "close" and parsed.merged


def test_malformed_and_other_events(host: GitHost) -> None:
    event, _ = push_event(host.name, REPO, CLONE, "x", A, B)
    headers, raw = signed(host, event, {})
    with pytest.raises(ValueError):
        host.parse(headers, b"not json")
    assert isinstance(host.parse(headers, raw), Ignored | Push)
    headers, raw = signed(host, "issues", {"action": "opened", "issue": {"number": 3}})
    assert isinstance(host.parse(headers, raw), Ignored)
    if host.name == "github":
        headers, raw = signed(host, "ping", {"zen": "Keep it simple.", "hook_id": 1})
        assert host.parse(headers, raw) == Ping()


def test_a_pull_request_number_must_be_a_number(host: GitHost) -> None:
    event, body = pull_request_event(host.name, REPO, CLONE, 7, "opened", "x", B)
    text = (
        json.dumps(body).replace('"number": 7', '"number": "7"').replace('"iid": 7', '"iid": "7"')
    )
    headers, raw = signed(host, event, json.loads(text))
    with pytest.raises(ValueError):
        host.parse(headers, raw)


EXPECTED_STATUS_PATH = {
    "github": f"/repos/{REPO}/statuses/{B}",
    "gitea": f"/repos/{REPO}/statuses/{B}",
    "gitlab": f"/projects/acme%2Fshop/statuses/{B}",
}
EXPECTED_STATE = {
    "github": {"pending": "pending", "success": "success", "failure": "failure"},
    "gitea": {"pending": "pending", "success": "success", "failure": "failure"},
    "gitlab": {"pending": "pending", "success": "success", "failure": "failed"},
}
COMMENTS = {
    "github": (f"/repos/{REPO}/issues/7/comments", "PATCH", f"/repos/{REPO}/issues/comments/"),
    "gitea": (f"/repos/{REPO}/issues/7/comments", "PATCH", f"/repos/{REPO}/issues/comments/"),
    "gitlab": ("/projects/acme%2Fshop/merge_requests/7/notes", "PUT",
               "/projects/acme%2Fshop/merge_requests/7/notes/"),
}  # fmt: skip
AUTH = {
    "github": ("authorization", "Bearer tok-123"),
    "gitea": ("authorization", "token tok-123"),
    "gitlab": ("private-token", "tok-123"),
}


def test_commit_statuses_as_the_host_documents(host: GitHost, recorder: RecordingApi) -> None:
    with HostApi(host, recorder.url, "tok-123", REPO) as api:
        for state in ("pending", "success", "failure"):
            api.set_status(B, state, "http://pr-7.shop.localhost:8080", "desc")  # type: ignore[arg-type]
    calls = recorder.statuses()
    assert [c.method for c in calls] == ["POST"] * 3
    assert {c.path for c in calls} == {EXPECTED_STATUS_PATH[host.name]}
    assert [c.json["state"] for c in calls] == list(EXPECTED_STATE[host.name].values())
    assert all(c.json["target_url"] == "http://pr-7.shop.localhost:8080" for c in calls)
    context_key = "name" if host.name == "gitlab" else "context"
    assert all(c.json[context_key] == "tristage/preview" for c in calls)
    name, value = AUTH[host.name]
    assert all(c.headers[name] == value for c in calls)


def test_one_comment_created_then_edited(host: GitHost, recorder: RecordingApi) -> None:
    with HostApi(host, recorder.url, "tok-123", REPO) as api:
        first = api.upsert_comment(7, "building", None)
        again = api.upsert_comment(7, "ready", first)
    assert again == first
    create_path, update_method, update_prefix = COMMENTS[host.name]
    calls = recorder.comments()
    assert [(c.method, c.path) for c in calls] == [
        ("POST", create_path),
        (update_method, update_prefix + first),
    ]
    assert [c.json["body"] for c in calls] == ["building", "ready"]


def test_an_api_refusal_is_one_error_without_the_token(
    host: GitHost, recorder: RecordingApi
) -> None:
    recorder.fail = True
    with HostApi(host, recorder.url, "tok-123", REPO) as api, pytest.raises(HostApiError) as info:
        api.set_status(B, "pending", None, "desc")
    assert "401" in info.value.message and "tok-123" not in str(info.value)
    with HostApi(host, "http://127.0.0.1:1", "tok-123", REPO) as api, pytest.raises(HostApiError):
        api.upsert_comment(7, "x", None)


def test_clone_urls_and_api_bases(host: GitHost) -> None:
    https, ssh = host.clone_urls("https://git.example.com", "acme/shop")
    assert https == "https://git.example.com/acme/shop.git"
    assert ssh == "git@git.example.com:acme/shop.git"
    assert host.api_base("https://git.example.com").startswith("https://git.example.com/api/")
    assert host.pull_ref(7).endswith("/7/head")
    assert host.events and ZERO not in host.events


def test_a_pull_request_from_a_fork_says_so(host: GitHost) -> None:
    event, body = pull_request_event(host.name, REPO, CLONE, 7, "opened", "x", B, fork="eve/shop")
    headers, raw = signed(host, event, body)
    parsed = host.parse(headers, raw)
    assert isinstance(parsed, PullRequest) and parsed.from_fork
    event, body = pull_request_event(host.name, REPO, CLONE, 7, "opened", "x", B)
    headers, raw = signed(host, event, body)
    parsed = host.parse(headers, raw)
    assert isinstance(parsed, PullRequest) and not parsed.from_fork
