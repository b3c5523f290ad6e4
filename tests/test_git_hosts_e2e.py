"""Deploys from a git host, whole flow: a local bare repository is the origin (fetched
over file://), a real control plane serves the push endpoint through its router, a
recording stand-in plays the host's REST API, and webhook deliveries have the shape of
the host's events, signed as the host signs them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import git, run_cli
from git_host_fixtures import (
    ZERO,
    RecordingApi,
    delete_event,
    new_delivery,
    pull_request_event,
    push_event,
)
from test_deploy_helpers import ControlPlane, commit, make_project, push, wait_for
from tristage.api import Tristage
from tristage.edges import git_hosts

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

REPO = "acme/shop"
TOKEN = "tok-e2e-0123456789"


class Origin:
    """The team's repository on the host: a bare repository fetched over file://."""

    def __init__(self, tmp_path: Path, work: Path) -> None:
        self.path = tmp_path / "origin.git"
        git(tmp_path, "init", "-q", "--bare", "-b", "main", str(self.path))
        self.work = work
        git(work, "remote", "add", "origin", str(self.path))

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    def push(self, branch: str) -> str:
        git(self.work, "push", "-q", "-f", "origin", f"HEAD:refs/heads/{branch}")
        return git(self.work, "rev-parse", "HEAD")

    def pull_request(self, host: str, number: int) -> str:
        """Update the ref the host keeps a pull request's head under."""
        ref = git_hosts.get(host).pull_ref(number)
        git(self.work, "push", "-q", "-f", "origin", f"HEAD:{ref}")
        return git(self.work, "rev-parse", "HEAD")

    def delete(self, branch: str) -> None:
        git(self.work, "push", "-q", "origin", f":refs/heads/{branch}")


class Host:
    """Sends deliveries to the push endpoint as `name` does."""

    def __init__(self, name: str, secret: str, cp: ControlPlane, origin: Origin) -> None:
        self.name, self.secret, self.cp, self.origin = name, secret, cp, origin
        self.impl = git_hosts.get(name)

    def send(
        self, event: str, body: dict[str, Any], delivery: str | None = None,
        secret: str | None = None,
    ) -> httpx.Response:  # fmt: skip
        raw = json.dumps(body).encode()
        headers = self.impl.sign(secret or self.secret, delivery or new_delivery(), event, raw)
        return self.cp.client.post(
            f"http://127.0.0.1:{self.cp.port}/.tristage/git",
            content=raw,
            headers={**headers, "Host": "shop.localhost"},
        )

    def push(self, branch: str, before: str, after: str, **kw: Any) -> httpx.Response:
        return self.send(*push_event(self.name, REPO, self.origin.url, branch, before, after), **kw)

    def pr(self, number: int, action: str, branch: str, sha: str, **kw: Any) -> httpx.Response:
        event, body = pull_request_event(self.name, REPO, self.origin.url, number, action,
                                         branch, sha)  # fmt: skip
        return self.send(event, body, **kw)


@pytest.fixture
def recorder() -> Iterator[RecordingApi]:
    server = RecordingApi().start()
    yield server
    server.stop()


def connect(project: Path, host: str, origin: Origin, recorder: RecordingApi) -> dict[str, Any]:
    r = run_cli(
        "connect", host, REPO, "--clone-url", origin.url, "--api-url", recorder.url,
        "--token-stdin", "--json", cwd=project, input=TOKEN + "\n",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def setup(
    repo: Path, tmp_path: Path, cp: ControlPlane, recorder: RecordingApi, host: str
) -> tuple[Path, Origin, Host]:
    project = make_project(repo)
    origin = Origin(tmp_path, project)
    origin.push("main")
    data = connect(project, host, origin, recorder)
    assert data["webhook_url"] == f"http://shop.localhost:{cp.port}/.tristage/git"
    endpoint = f"http://127.0.0.1:{cp.port}/.tristage/git"
    wait_for(
        lambda: cp.client.get(endpoint, headers={"Host": "shop.localhost"}).status_code == 405,
        30, "the router to serve the project's hosts",
    )  # fmt: skip
    return project, origin, Host(host, data["secret"], cp, origin)


def deployments(api: Tristage, **where: str) -> list[Any]:
    return [
        d for d in api.deploys.list_deployments("shop", limit=200)
        if all(getattr(d, k) == v for k, v in where.items())
    ]  # fmt: skip


def outcome(api: Tristage, delivery: str) -> str:
    def done() -> str | None:
        for row in api.git_hosts.deliveries("shop", 500):
            if row["delivery"] == delivery and row["outcome"]:
                return str(row["outcome"])
        return None

    result: str = wait_for(done, 60, f"delivery {delivery} to be acted on")
    return result


def ready(api: Tristage, dep_id: str) -> None:
    wait_for(lambda: api.deploys.get(dep_id).status.value == "ready", 90, f"{dep_id} ready")


@pytest.mark.parametrize("host_name", ["github", "gitlab", "gitea"])
def test_a_signed_push_deploys_from_the_origin_and_forgeries_deploy_nothing(
    repo: Path, tmp_path: Path, cp: ControlPlane, recorder: RecordingApi, api: Tristage,
    host_name: str,
) -> None:  # fmt: skip
    project, origin, host = setup(repo, tmp_path, cp, recorder, host_name)
    git(project, "checkout", "-qb", "test")
    first = commit(project, {"note.txt": "qa\n"}, "qa change")
    origin.push("test")

    # forged: another secret, deploys nothing
    forged = host.push("test", ZERO, first, secret="not-the-secret")
    assert forged.status_code == 401, forged.text
    assert forged.json()["error"] == "bad_signature"

    delivery = new_delivery()
    r = host.push("test", ZERO, first, delivery=delivery)
    assert r.status_code == 202, r.text
    assert "deployment" in outcome(api, delivery)
    (dep,) = deployments(api, branch="test")
    assert dep.commit == first and dep.environment == "preview" and dep.trigger == "git-host"
    ready(api, dep.id)
    wait_for(lambda: cp.serves("preview.shop.localhost") == dep.id, 30, "preview serves it")
    assert cp.serves("test.shop.localhost") == dep.id

    # replayed: the same delivery id is refused
    again = host.push("test", ZERO, first, delivery=delivery)
    assert again.status_code == 409 and again.json()["error"] == "replayed"
    # the same body under a new id: the commit is deployed already
    replay = new_delivery()
    assert host.push("test", ZERO, first, delivery=replay).status_code == 202
    assert outcome(api, replay).startswith("already deployed")
    # an old event replayed after the branch moved on: the origin disagrees
    second = commit(project, {"note.txt": "qa 2\n"}, "qa change 2")
    origin.push("test")
    stale = new_delivery()
    assert host.push("test", second, first, delivery=stale).status_code == 202
    assert outcome(api, stale).startswith("stale")
    assert len(deployments(api, branch="test")) == 1
    shown = run_cli("connection", cwd=project)
    assert shown.returncode == 0, shown.stderr
    assert f"{host_name} {REPO}, fetching from {origin.url}" in shown.stdout
    assert stale in shown.stdout and "stale: the origin's test is at" in shown.stdout
    listed = json.loads(run_cli("connection", "--json", cwd=project).stdout)
    assert {d["delivery"] for d in listed["deliveries"]} >= {delivery, replay, stale}
    assert TOKEN not in shown.stdout and host.secret not in shown.stdout + json.dumps(listed)

    # a malformed signature header, a missing one: refused, nothing recorded
    raw = b"{}"
    bad = cp.client.post(f"http://127.0.0.1:{cp.port}/.tristage/git", content=raw,
                         headers={"Host": "shop.localhost"})  # fmt: skip
    assert bad.status_code == 400
    assert cp.client.get(f"http://127.0.0.1:{cp.port}/.tristage/git",
                         headers={"Host": "shop.localhost"}).status_code == 405  # fmt: skip

    # a delete the origin disagrees with (a replayed or early event) stops nothing
    early = new_delivery()
    event, body = delete_event(host_name, REPO, origin.url, "test", second)
    assert host.send(event, body, delivery=early).status_code == 202
    assert outcome(api, early).startswith("stale: the origin still has test")
    # a deleted branch stops its release (its branch host goes; the environment keeps it)
    origin.delete("test")
    gone = new_delivery()
    event, body = delete_event(host_name, REPO, origin.url, "test", second)
    assert host.send(event, body, delivery=gone).status_code == 202
    assert "release stopped" in outcome(api, gone)
    wait_for(lambda: cp.get("test.shop.localhost").status_code == 404, 30, "branch host gone")
    assert cp.serves("preview.shop.localhost") == dep.id
    assert recorder.statuses() == []  # branch pushes get no commit statuses
    if host_name == "github":  # the own remote keeps deploying
        git(project, "checkout", "-qb", "dev")
        r = push(project, "dev")
        assert r.returncode == 0, r.stderr
        wait_for(lambda: cp.serves("development.shop.localhost"), 60, "dev deployed")


STATUS_PATH = {
    "github": f"/repos/{REPO}/statuses/",
    "gitea": f"/repos/{REPO}/statuses/",
    "gitlab": "/projects/acme%2Fshop/statuses/",
}
COMMENT_PATHS = {  # create, then edit (+ the id)
    "github": (f"/repos/{REPO}/issues/7/comments", "PATCH", f"/repos/{REPO}/issues/comments/"),
    "gitea": (f"/repos/{REPO}/issues/7/comments", "PATCH", f"/repos/{REPO}/issues/comments/"),
    "gitlab": ("/projects/acme%2Fshop/merge_requests/7/notes", "PUT",
               "/projects/acme%2Fshop/merge_requests/7/notes/"),
}  # fmt: skip
AUTH = {
    "github": ("authorization", f"Bearer {TOKEN}"),
    "gitea": ("authorization", f"token {TOKEN}"),
    "gitlab": ("private-token", TOKEN),
}


@pytest.mark.parametrize("host_name", ["github", "gitlab", "gitea"])
def test_pull_request_preview_status_comment_and_teardown(
    repo: Path, tmp_path: Path, cp: ControlPlane, recorder: RecordingApi, api: Tristage,
    host_name: str,
) -> None:  # fmt: skip
    project, origin, host = setup(repo, tmp_path, cp, recorder, host_name)
    git(project, "checkout", "-qb", "feature/x")
    first = commit(project, {"note.txt": "feature\n"}, "feature")
    origin.push("feature/x")
    origin.pull_request(host_name, 7)

    delivery = new_delivery()
    r = host.pr(7, "opened", "feature/x", first, delivery=delivery)
    assert r.status_code == 202, r.text
    assert "preview deployment" in outcome(api, delivery)
    (dep,) = deployments(api, branch="PR #7")
    assert dep.environment == "preview" and dep.commit == first
    ready(api, dep.id)
    url = f"http://pr-7.shop.localhost:{cp.port}"
    wait_for(lambda: cp.serves("pr-7.shop.localhost") == dep.id, 30, "pr-7 serves it")
    assert cp.get("pr-7.shop.localhost").json()["environment"] == "preview"
    assert cp.get("preview.shop.localhost").status_code == 503  # never the environment's host

    def states(sha: str) -> list[str]:
        return [c.json["state"] for c in recorder.statuses(sha)]

    wait_for(lambda: states(first) == ["pending", "success"], 30, "pending then success")
    final = recorder.statuses(first)[-1]
    assert final.json["target_url"] == url
    assert final.path == STATUS_PATH[host_name] + first
    header, value = AUTH[host_name]
    assert final.headers[header] == value
    create_path, edit_method, edit_prefix = COMMENT_PATHS[host_name]
    comments = recorder.comments()
    assert comments[0].method == "POST" and comments[0].path == create_path
    assert url in comments[-1].json["body"]

    # the next push to the pull request: a new deployment, the same comment edited
    second = commit(project, {"note.txt": "feature 2\n"}, "feature 2")
    origin.push("feature/x")
    origin.pull_request(host_name, 7)
    sync = new_delivery()
    assert host.pr(7, "synchronize", "feature/x", second, delivery=sync).status_code == 202
    outcome(api, sync)
    wait_for(lambda: states(second) == ["pending", "success"], 90, "second success")
    newer = [d for d in deployments(api, branch="PR #7") if d.commit == second]
    assert len(newer) == 1
    wait_for(lambda: cp.serves("pr-7.shop.localhost") == newer[0].id, 30, "pr-7 moves on")
    comments = recorder.comments()
    posts = [c for c in comments if c.method == "POST"]
    edits = [c for c in comments if c.method == edit_method]
    assert len(posts) == 1 and len(posts) + len(edits) == len(comments), comments
    comment_id = str(1000 + 1 + recorder.snapshot().index(posts[0]))
    assert edits and {c.path for c in edits} == {edit_prefix + comment_id}
    assert second[:7] in edits[-1].json["body"]

    # closed: the preview is torn down
    closed = new_delivery()
    assert host.pr(7, "closed", "feature/x", second, delivery=closed).status_code == 202
    assert outcome(api, closed) == "preview stopped"
    wait_for(lambda: cp.get("pr-7.shop.localhost").status_code == 404, 30, "pr-7 removed")
    wait_for(lambda: api.deploys.release(newer[0].id) is None, 30, "the release stopped")
    assert "closed" in recorder.comments()[-1].json["body"]

    # a forged pull request event deploys nothing
    forged = host.pr(8, "opened", "feature/x", second, secret="wrong")
    assert forged.status_code == 401
    assert deployments(api, branch="PR #8") == []


def test_connect_errors_and_disconnect(repo: Path, tmp_path: Path) -> None:
    project = make_project(repo)
    r = run_cli("connect", "bitbucket", REPO, "--token-stdin", cwd=project, input="t\n")
    assert r.returncode == 2 and "no git host 'bitbucket'" in r.stderr
    r = run_cli("connect", "github", "not a repo", "--token-stdin", cwd=project, input="t\n")
    assert r.returncode == 2 and "OWNER/NAME" in r.stderr
    r = run_cli("connect", "gitea", REPO, "--url", "ftp://x", "--token-stdin", cwd=project,
                input="t\n")  # fmt: skip
    assert r.returncode == 2 and "--url" in r.stderr
    r = run_cli("connect", "github", REPO, "--token-stdin", cwd=project, input="\n")
    assert r.returncode == 2 and "token" in r.stderr
    r = run_cli("disconnect", cwd=project)
    assert r.returncode == 1 and "not connected" in r.stderr

    r = run_cli("connect", "gitlab", "group/sub/shop", "--url", "https://git.example.com",
                "--token-stdin", cwd=project, input=TOKEN + "\n")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "https://git.example.com/group/sub/shop.git" in r.stdout
    assert "/.tristage/git" in r.stdout and "Push events, Merge request events" in r.stdout
    assert TOKEN not in r.stdout + r.stderr
    # the token and the secret are sealed in the state store
    state = b"".join(p.read_bytes() for p in (tmp_path / "home").glob("state*"))
    assert TOKEN.encode() not in state
    r = run_cli("connect", "gitlab", "group/sub/shop", "--ssh", "--url",
                "https://git.example.com", "--token-stdin", "--json", cwd=project,
                input=TOKEN + "\n")  # fmt: skip
    data = json.loads(r.stdout)
    assert data["clone_url"] == "git@git.example.com:group/sub/shop.git"
    assert data["api_url"] == "https://git.example.com/api/v4"
    r = run_cli("disconnect", cwd=project)
    assert r.returncode == 0 and "disconnected shop from gitlab" in r.stdout


def test_a_pull_request_whose_deploy_fails_gets_a_failure_status(
    repo: Path, tmp_path: Path, cp: ControlPlane, recorder: RecordingApi, api: Tristage
) -> None:
    project, origin, host = setup(repo, tmp_path, cp, recorder, "github")
    git(project, "checkout", "-qb", "feature/broken")
    sha = commit(project, {"MODE": "unhealthy\n"}, "break health")
    origin.push("feature/broken")
    origin.pull_request("github", 9)
    delivery = new_delivery()
    assert host.pr(9, "opened", "feature/broken", sha, delivery=delivery).status_code == 202
    outcome(api, delivery)
    wait_for(lambda: [c.json["state"] for c in recorder.statuses(sha)] == ["pending", "failure"],
             90, "pending then failure")  # fmt: skip
    failed = recorder.statuses(sha)[-1]
    assert "health check" in failed.json["description"]
    assert len(failed.json["description"]) <= 140
    (dep,) = deployments(api, branch="PR #9")
    assert failed.json["target_url"] == f"http://{dep.id}.shop.localhost:{cp.port}"
    # the comment is edited right after the status: wait for it rather than race it
    body = wait_for(lambda: next((c.json["body"] for c in reversed(recorder.comments())
                                  if "failed" in c.json["body"]), None),
                    30, "the comment to say the preview failed")  # fmt: skip
    assert dep.id in body
    assert cp.get("pr-9.shop.localhost").status_code == 404


def test_a_delivery_accepted_before_a_stop_is_acted_on_when_the_control_plane_starts(
    repo: Path, tmp_path: Path, home: Path, recorder: RecordingApi
) -> None:
    project = make_project(repo)
    origin = Origin(tmp_path, project)
    origin.push("main")
    secret = connect(project, "github", origin, recorder)["secret"]
    git(project, "checkout", "-qb", "test")
    sha = commit(project, {"note.txt": "qa\n"}, "qa")
    origin.push("test")
    event, body = push_event("github", REPO, origin.url, "test", ZERO, sha)
    raw = json.dumps(body).encode()
    headers = git_hosts.get("github").sign(secret, new_delivery(), event, raw)
    api = Tristage(home)
    try:  # answered 202, then the control plane went away before acting on it
        assert api.git_hosts.ingest("shop", {k.lower(): v for k, v in headers.items()},
                                    raw).status == 202  # fmt: skip
    finally:
        api.close()
    plane = ControlPlane(home).start()
    try:
        wait_for(lambda: plane.serves("test.shop.localhost"), 90, "the push deployed")
        assert "acted on 1 git host delivery left from before" in plane.output()
    finally:
        plane.stop()
