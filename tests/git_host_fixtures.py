"""Git host stand-ins for tests: webhook payloads shaped like GitHub's, GitLab's and
Gitea's push and pull-request events (from their webhook documentation), and a small
recording HTTP server that plays each host's REST API for commit statuses and
pull-request comments (request and response shapes from their API docs)."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ZERO = "0" * 40


def _repo_github(full: str, clone: str) -> dict[str, Any]:
    owner, name = full.split("/", 1)
    return {
        "id": 1296269,
        "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5",
        "name": name,
        "full_name": full,
        "private": False,
        "owner": {"login": owner, "id": 1, "type": "User"},
        "html_url": f"https://github.com/{full}",
        "clone_url": clone,
        "ssh_url": f"git@github.com:{full}.git",
        "default_branch": "main",
    }


def _repo_gitea(full: str, clone: str) -> dict[str, Any]:
    owner, name = full.split("/", 1)
    return {
        "id": 140,
        "owner": {"id": 1, "login": owner, "username": owner},
        "name": name,
        "full_name": full,
        "private": False,
        "html_url": f"http://gitea.example/{full}",
        "clone_url": clone,
        "ssh_url": f"git@gitea.example:{full}.git",
        "default_branch": "main",
    }


def _project_gitlab(full: str, clone: str) -> dict[str, Any]:
    return {
        "id": 15,
        "name": full.rsplit("/", 1)[1],
        "web_url": f"https://gitlab.example/{full}",
        "git_ssh_url": f"git@gitlab.example:{full}.git",
        "git_http_url": clone,
        "namespace": full.split("/", 1)[0],
        "path_with_namespace": full,
        "default_branch": "main",
    }


def push_event(
    host: str, full: str, clone: str, branch: str, before: str, after: str
) -> tuple[str, dict[str, Any]]:
    """(event name as the host names it, body) of a push; `after` ZERO deletes."""
    deleted = after == ZERO
    commit = {
        "id": after,
        "message": "change",
        "timestamp": "2026-12-01T12:00:00+00:00",
        "author": {"name": "Dev", "email": "dev@example.invalid"},
    }
    commits = [] if deleted else [commit]
    if host == "github":
        return "push", {
            "ref": f"refs/heads/{branch}",
            "before": before,
            "after": after,
            "created": before == ZERO,
            "deleted": deleted,
            "forced": False,
            "base_ref": None,
            "compare": f"https://github.com/{full}/compare/{before[:12]}...{after[:12]}",
            "commits": commits,
            "head_commit": None if deleted else commit,
            "repository": _repo_github(full, clone),
            "pusher": {"name": "dev", "email": "dev@example.invalid"},
            "sender": {"login": "dev", "id": 2, "type": "User"},
        }
    if host == "gitlab":
        return "Push Hook", {
            "object_kind": "push",
            "event_name": "push",
            "before": before,
            "after": after,
            "ref": f"refs/heads/{branch}",
            "ref_protected": False,
            "checkout_sha": None if deleted else after,
            "user_id": 4,
            "user_name": "Dev",
            "user_username": "dev",
            "project_id": 15,
            "project": _project_gitlab(full, clone),
            "commits": commits,
            "total_commits_count": len(commits),
            "repository": {"name": full.rsplit("/", 1)[1], "git_http_url": clone},
        }
    return "push", {
        "ref": f"refs/heads/{branch}",
        "before": before,
        "after": after,
        "compare_url": f"http://gitea.example/{full}/compare/{before}...{after}",
        "commits": commits,
        "total_commits": len(commits),
        "head_commit": None if deleted else commit,
        "repository": _repo_gitea(full, clone),
        "pusher": {"id": 1, "login": "dev", "username": "dev"},
        "sender": {"id": 1, "login": "dev", "username": "dev"},
    }


def delete_event(
    host: str, full: str, clone: str, branch: str, before: str
) -> tuple[str, dict[str, Any]]:
    """A deleted branch as the host reports it (Gitea: its `delete` event)."""
    if host == "gitea":
        return "delete", {
            "ref": branch,
            "ref_type": "branch",
            "pusher_type": "user",
            "repository": _repo_gitea(full, clone),
            "sender": {"id": 1, "login": "dev", "username": "dev"},
        }
    return push_event(host, full, clone, branch, before, ZERO)


def pull_request_event(
    host: str, full: str, clone: str, number: int, action: str, head_branch: str, head_sha: str,
    *, merged: bool = False, fork: str | None = None,
) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """A pull request event; `action` is ours: opened, synchronize, closed."""
    if host == "gitlab":
        gl_action = {"opened": "open", "synchronize": "update", "closed": "close"}[action]
        if merged:
            gl_action = "merge"
        state = {"open": "opened", "update": "opened", "close": "closed", "merge": "merged"}
        attrs: dict[str, Any] = {
            "id": 99,
            "iid": number,
            "target_branch": "main",
            "source_branch": head_branch,
            "source_project_id": 16 if fork else 15,
            "target_project_id": 15,
            "title": "A change",
            "state": state[gl_action],
            "merge_status": "unchecked",
            "url": f"https://gitlab.example/{full}/-/merge_requests/{number}",
            "last_commit": {"id": head_sha, "message": "change", "title": "change"},
            "action": gl_action,
        }
        if gl_action == "update":
            attrs["oldrev"] = "1" * 40
        return "Merge Request Hook", {
            "object_kind": "merge_request",
            "event_type": "merge_request",
            "user": {"id": 1, "name": "Dev", "username": "dev"},
            "project": _project_gitlab(full, clone),
            "object_attributes": attrs,
            "repository": {"name": full.rsplit("/", 1)[1]},
            "changes": {},
        }
    gh = host == "github"
    pr_action = action if gh or action != "synchronize" else "synchronized"
    repo = _repo_github(full, clone) if gh else _repo_gitea(full, clone)
    head_repo = repo
    if fork:
        head_repo = _repo_github(fork, clone) if gh else _repo_gitea(fork, clone)
    body = {
        "action": pr_action,
        "number": number,
        "pull_request": {
            "id": 1000 + number,
            "number": number,
            "state": "closed" if action == "closed" else "open",
            "title": "A change",
            "merged": merged,
            "html_url": f"{repo['html_url']}/pull/{number}",
            "head": {"label": f"dev:{head_branch}", "ref": head_branch, "sha": head_sha,
                     "repo": head_repo},
            "base": {"label": "dev:main", "ref": "main", "sha": "2" * 40, "repo": repo},
        },
        "repository": repo,
        "sender": {"login": "dev", "id": 2},
    }  # fmt: skip
    event = "pull_request"
    if host == "gitea" and action == "synchronize":
        event = "pull_request_sync"
    return event, body


def new_delivery() -> str:
    return str(uuid.uuid4())


@dataclass
class Call:
    method: str
    path: str
    json: dict[str, Any]
    headers: dict[str, str]


@dataclass
class RecordingApi:
    """A loopback HTTP server that answers like the hosts' REST APIs and records calls."""

    calls: list[Call] = field(default_factory=list)
    next_id: int = 1000
    fail: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> RecordingApi:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                data = json.loads(raw) if raw else {}
                call = Call(self.command, self.path, data,
                            {k.lower(): v for k, v in self.headers.items()})  # fmt: skip
                with recorder._lock:
                    recorder.calls.append(call)
                    recorder.next_id += 1
                    new_id = recorder.next_id
                status, body = recorder.respond(call, new_id)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_POST = do_PATCH = do_PUT = do_GET = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def respond(self, call: Call, new_id: int) -> tuple[int, dict[str, Any]]:
        if self.fail:
            return 401, {"message": "Bad credentials"}
        if "/statuses/" in call.path:
            # GitHub/Gitea: 201 with the status; GitLab: 201 with the commit status
            return 201, {"id": new_id, "state": call.json.get("state") or "",
                         "context": call.json.get("context", call.json.get("name")),
                         "target_url": call.json.get("target_url")}  # fmt: skip
        if call.method == "POST" and (
            call.path.endswith("/comments") or call.path.endswith("/notes")
        ):
            return 201, {"id": new_id, "body": call.json.get("body", "")}
        if call.method in ("PATCH", "PUT"):
            return 200, {"id": int(call.path.rsplit("/", 1)[1]), "body": call.json.get("body")}
        return 404, {"message": "Not Found"}

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def statuses(self, sha: str | None = None) -> list[Call]:
        return [c for c in self.snapshot() if "/statuses/" in c.path
                and (sha is None or c.path.endswith(sha))]  # fmt: skip

    def comments(self) -> list[Call]:
        return [c for c in self.snapshot() if "/comments" in c.path or "/notes" in c.path]
