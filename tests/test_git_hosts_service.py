"""The push endpoint's service without a control plane: what it records before it
answers, what it refuses, and acting after a restart on what it had answered 202."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from conftest import git
from git_host_fixtures import ZERO, RecordingApi, new_delivery, pull_request_event, push_event
from test_deploy_helpers import commit, make_project
from tristage.api import Tristage
from tristage.domain.git_events import PullRequest, Push, from_json, to_json
from tristage.edges import git as git_edge
from tristage.edges import git_hosts
from tristage.errors import GitError, NotFound, UsageError

REPO = "acme/shop"


def connected(repo: Path, tmp_path: Path, api: Tristage, host: str = "github") -> tuple[Path, str]:
    project = make_project(repo)
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    git(project, "remote", "add", "origin", str(origin))
    git(project, "push", "-q", "origin", "main")
    done = api.git_hosts.connect(
        "shop", host, REPO, "tok-1", clone_url=f"file://{origin}", api_url="http://127.0.0.1:1"
    )
    return project, done.secret


def signed(host: str, secret: str, event: str, body: dict[str, object], delivery: str,
           ) -> tuple[dict[str, str], bytes]:  # fmt: skip
    raw = json.dumps(body).encode()
    headers = git_hosts.get(host).sign(secret, delivery, event, raw)
    return {k.lower(): v for k, v in headers.items()}, raw


def test_events_round_trip_through_json() -> None:
    for event in (Push("feature/x", "a" * 40), Push("x", "", deleted=True),
                  PullRequest(7, "close", "x", "b" * 40, merged=True)):  # fmt: skip
        assert from_json(json.loads(json.dumps(to_json(event)))) == event


def test_forged_and_replayed_deliveries_are_refused_and_recorded_once(
    repo: Path, tmp_path: Path, api: Tristage
) -> None:
    project, secret = connected(repo, tmp_path, api)
    sha = git(project, "rev-parse", "HEAD")
    event, body = push_event("github", REPO, "file:///x", "main", ZERO, sha)
    delivery = new_delivery()
    headers, raw = signed("github", "wrong", event, body, delivery)
    refused = api.git_hosts.ingest("shop", headers, raw)
    assert refused.status == 401 and refused.job is None
    assert api.git_hosts.deliveries("shop") == []
    headers, raw = signed("github", secret, event, body, delivery)
    first = api.git_hosts.ingest("shop", headers, raw)
    assert first.status == 202 and first.job is not None
    again = api.git_hosts.ingest("shop", headers, raw)
    assert again.status == 409 and again.job is None
    assert [d["delivery"] for d in api.git_hosts.deliveries("shop")] == [delivery]
    headers, raw = signed("github", secret, "ping", {"zen": "Design for failure."}, "p-1")
    assert api.git_hosts.ingest("shop", headers, raw).body["pong"] is True
    bad = {**headers, "x-github-delivery": "not a valid id!"}
    assert api.git_hosts.ingest("shop", bad, raw).status == 400


def test_a_delivery_answered_before_a_restart_is_acted_on_after_it(
    repo: Path, tmp_path: Path, home: Path, api: Tristage
) -> None:
    project, secret = connected(repo, tmp_path, api, "gitea")
    git(project, "checkout", "-qb", "test")
    sha = commit(project, {"note.txt": "qa\n"}, "qa")
    git(project, "push", "-q", "origin", "test")
    event, body = push_event("gitea", REPO, "file:///x", "test", ZERO, sha)
    delivery = new_delivery()
    headers, raw = signed("gitea", secret, event, body, delivery)
    accepted = api.git_hosts.ingest("shop", headers, raw)
    assert accepted.status == 202  # ... and the control plane stops before it acts
    assert api.deploys.list_deployments("shop") == []

    assert api.git_hosts.resume() == 1
    (dep,) = api.deploys.list_deployments("shop")
    assert dep.branch == "test" and dep.commit == sha and dep.environment == "preview"
    (row,) = api.git_hosts.deliveries("shop")
    assert row["outcome"].startswith(f"deployment {dep.id}")
    assert api.git_hosts.resume() == 0  # acted on once


def test_the_token_and_secret_are_sealed(repo: Path, tmp_path: Path, api: Tristage) -> None:
    connected(repo, tmp_path, api)
    row = api.store.query_one("SELECT token, secret FROM git_connections WHERE project='shop'")
    assert row is not None
    assert bytes(row["token"]).startswith(b"ts1:") and b"tok-1" not in bytes(row["token"])
    assert bytes(row["secret"]).startswith(b"ts1:")


def test_a_pull_request_from_a_fork_gets_no_preview(
    repo: Path, tmp_path: Path, api: Tristage
) -> None:
    project, secret = connected(repo, tmp_path, api, "gitlab")
    sha = git(project, "rev-parse", "HEAD")
    event, body = pull_request_event("gitlab", REPO, "file:///x", 3, "opened", "x", sha,
                                     fork="eve/shop")  # fmt: skip
    headers, raw = signed("gitlab", secret, event, body, new_delivery())
    accepted = api.git_hosts.ingest("shop", headers, raw)
    assert accepted.job is not None
    assert api.git_hosts.run_recorded(accepted.job).startswith(
        "ignored: a pull request from a fork"
    )
    assert api.deploys.list_deployments("shop") == []


def test_a_delivery_another_process_works_on_is_left_to_it(
    repo: Path, tmp_path: Path, api: Tristage
) -> None:
    project, secret = connected(repo, tmp_path, api)
    sha = git(project, "rev-parse", "HEAD")
    event, body = push_event("github", REPO, "file:///x", "main", ZERO, sha)
    headers, raw = signed("github", secret, event, body, new_delivery())
    job = api.git_hosts.ingest("shop", headers, raw).job
    assert job is not None
    # unclaimed for less than a minute: the process that answered it is about to act
    assert api.git_hosts.resume(reports=False, min_age=60) == 0
    claim = "UPDATE git_deliveries SET claimed_at=? WHERE delivery=?"
    api.store.execute(claim, (time.time(), job.delivery))  # the router process has it
    assert api.git_hosts.resume() == 0
    assert api.git_hosts.run_recorded(job) is None
    assert api.deploys.list_deployments("shop") == []
    api.store.execute(claim, (time.time() - 3600, job.delivery))  # ... and died with it
    assert api.git_hosts.resume() == 1
    (dep,) = api.deploys.list_deployments("shop")
    assert dep.branch == "main" and dep.environment == "production"


def test_public_names_give_the_webhook_and_preview_urls(
    repo: Path, tmp_path: Path, api: Tristage
) -> None:
    project, _ = connected(repo, tmp_path, api)
    toml = (project / "tristage.toml").read_text()
    toml = toml.replace(
        "[environments.production]\n",
        '[environments.production]\ndomains = ["shop.example.com"]\n',
    ).replace(
        "[environments.preview]\n",
        '[environments.preview]\nbranch_domain = "{branch}.preview.shop.example.com"\n',
    )
    (project / "tristage.toml").write_text(toml)
    api.open_project(project)
    assert api.git_hosts.webhook_url("shop") == "https://shop.example.com/.tristage/git"
    url = api.git_hosts.preview_url("shop", 7, "preview")
    assert url == "https://pr-7.preview.shop.example.com"


def test_the_token_goes_to_git_in_a_header_and_never_into_its_errors(tmp_path: Path) -> None:
    server = RecordingApi().start()
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    try:
        with pytest.raises(GitError) as info:
            git_edge.fetch(bare, f"{server.url}/acme/shop.git", ["+refs/heads/main:refs/x"],
                           basic_auth=("x-access-token", "tok-secret-42"))  # fmt: skip
    finally:
        server.stop()
    pair = base64.b64encode(b"x-access-token:tok-secret-42").decode()
    said = f"{info.value.message} {info.value.hint}"
    assert "tok-secret-42" not in said and pair not in said
    (call,) = [c for c in server.snapshot() if "/info/refs" in c.path][:1]
    assert call.headers["authorization"] == f"Basic {pair}"
    assert "tok-secret" not in call.path


def test_a_clone_url_with_credentials_is_refused(repo: Path, tmp_path: Path, api: Tristage) -> None:
    make_project(repo)
    with pytest.raises(UsageError, match="credentials"):
        api.git_hosts.connect("shop", "github", REPO, "tok",
                              clone_url="https://me:pw@github.com/acme/shop.git")  # fmt: skip
    with pytest.raises(NotFound):
        api.git_hosts.connection("shop")
    ssh = "ssh://git@github.com/acme/shop.git"  # a user name for ssh is no credential
    assert (
        api.git_hosts.connect("shop", "github", REPO, "tok", clone_url=ssh).connection.clone_url
        == ssh
    )
