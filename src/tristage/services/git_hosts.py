"""Deploys from a git host: a project connected to its repository on GitHub, GitLab or
Gitea (`tristage connect`), its push endpoint, and pull-request previews.

The endpoint (`/.tristage/git` on any host of the project, served by the router like
the webhook ingest) verifies the host's signature in constant time, refuses a delivery
id it has seen, answers at once (202) and leaves the work to a background thread:

- a push fetches the branch from the origin with git into the project's hosted
  repository and deploys its commit by the branch rules, as a push to the tristage
  remote does; a deleted branch stops its release;
- a pull request opened or updated deploys its head at `pr-N.APP…` with the variables
  of the preview-tier environment (it never takes that environment's host), sets a
  pending and then a success or failure commit status with the URL, and keeps one
  comment on the pull request up to date; closed or merged, its preview is stopped.

The event is only acted on if the origin agrees: the fetched branch (or pull request
head) must be at the event's commit, so a replayed old event (even with a new delivery
id: GitHub and Gitea sign the body only) deploys nothing.
"""

from __future__ import annotations

import json
import logging
import re
import secrets as pysecrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..domain import aliases as alias_domain
from ..domain.config import Tier
from ..domain.deployments import ACTIVE, Deployment, Status
from ..domain.git_events import (
    INGEST_PATH,
    PULL_REQUEST,
    GitEvent,
    Ignored,
    Ping,
    PullRequest,
    Push,
    StatusState,
    comment_text,
    from_json,
    pr_branch,
    pr_label,
    to_json,
)
from ..domain.hostnames import expand
from ..edges import git
from ..edges import git_hosts as hosts
from ..edges.git_hosts import GitHost, HostApi, HostApiError, VerificationError
from ..edges.store import Row
from ..errors import NotFound, TristageError, UsageError

if TYPE_CHECKING:
    from ..api import Tristage

log = logging.getLogger("tristage.git_hosts")

REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+\Z")
DELIVERY_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}\Z")
DELIVERY_DAYS = 30  # delivery ids are remembered this long
CLAIM_LEASE = 900.0  # seconds: a claimed delivery not done by then is taken over
OUTCOME_TIMEOUT = 1800.0  # how long a preview's status waits for its deployment
STATUS_CONTEXT = "tristage/preview"


@dataclass(frozen=True)
class Connection:
    project: str
    host: str
    repo: str
    web_url: str
    api_url: str
    clone_url: str
    created_at: float
    created_by: str

    def as_json(self) -> dict[str, Any]:
        return {
            "project": self.project, "host": self.host, "repo": self.repo,
            "web_url": self.web_url, "api_url": self.api_url, "clone_url": self.clone_url,
            "created_at": self.created_at, "created_by": self.created_by,
        }  # fmt: skip


@dataclass(frozen=True)
class Connected:
    """What `tristage connect` prints: where to point the host's webhook, with what."""

    connection: Connection
    webhook_url: str
    secret: str
    events: tuple[str, ...]
    replaced: bool


@dataclass(frozen=True)
class Job:
    project: str
    delivery: str
    event: GitEvent


@dataclass(frozen=True)
class GitIngest:
    status: int
    body: dict[str, Any]
    job: Job | None = None


def _row(row: Row) -> Connection:
    return Connection(
        row["project"], row["host"], row["repo"], row["web_url"], row["api_url"],
        row["clone_url"], row["created_at"], row["created_by"],
    )  # fmt: skip


def _event_name(event: GitEvent) -> str:
    if isinstance(event, Push):
        return "push (deleted)" if event.deleted else "push"
    if isinstance(event, PullRequest):
        return f"pull_request {event.action}"
    if isinstance(event, Ping):
        return "ping"
    return f"ignored: {event.reason}"


class GitHostService:
    def __init__(self, api: Tristage) -> None:
        self.api = api
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._threads: set[threading.Thread] = set()

    # -- connecting ----------------------------------------------------------------
    def connect(
        self,
        project: str,
        host_name: str,
        repo: str,
        token: str,
        *,
        url: str | None = None,
        api_url: str | None = None,
        clone_url: str | None = None,
        ssh: bool = False,
    ) -> Connected:
        """Store the token and a new webhook secret (sealed) and the origin's clone URL."""
        host = hosts.get(host_name)
        self.api.config_for(project)  # the project must exist
        repo = repo.strip().strip("/").removesuffix(".git")
        if not REPO_RE.match(repo):
            raise UsageError(
                f"{repo!r} is not a repository as OWNER/NAME",
                "e.g. 'tristage connect github acme/shop' (GitLab: GROUP/SUBGROUP/NAME)",
            )
        token = token.strip()
        if not token or any(c.isspace() for c in token):
            raise UsageError(
                "the API token is empty or has spaces in it",
                "paste the token alone, or pipe it to --token-stdin",
            )
        web = _http_url(url or host.default_url, "--url")
        api_base = _http_url(api_url, "--api-url") if api_url else host.api_base(web)
        https, ssh_url = host.clone_urls(web, repo)
        origin = clone_url or (ssh_url if ssh else https)
        if origin.startswith(("https://", "http://")) and "@" in origin.split("/")[2]:
            raise UsageError(
                "the clone URL has credentials in it",
                "give the URL without them; the token is sent to git in a header",
            )
        secret = pysecrets.token_urlsafe(32)
        box = self.api.secret_box
        now = time.time()
        git.ensure_bare(self.api.deploys.bare_repo(project), self.api.home, project)
        with self.api.store.transaction():
            replaced = self._row(project) is not None
            self.api.store.execute(
                "INSERT INTO git_connections (project, host, repo, web_url, api_url, clone_url,"
                " token, secret, created_at, created_by) VALUES (?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (project) DO UPDATE SET host=excluded.host, repo=excluded.repo,"
                " web_url=excluded.web_url, api_url=excluded.api_url,"
                " clone_url=excluded.clone_url, token=excluded.token, secret=excluded.secret,"
                " created_at=excluded.created_at, created_by=excluded.created_by",
                (project, host.name, repo, web, api_base, origin,
                 box.encrypt_text(token, _context(project, "token")),
                 box.encrypt_text(secret, _context(project, "secret")), now, self.api.actor),
            )  # fmt: skip
            self.api.audit.record(
                "git.connect",
                project=project,
                details={"host": host.name, "repo": repo, "clone_url": origin},
            )
        self.api.deploys.nudge()  # the router serves the new project's hosts at once
        conn = self.connection(project)
        return Connected(conn, self.webhook_url(project), secret, host.events, replaced)

    def disconnect(self, project: str) -> Connection:
        conn = self.connection(project)
        with self.api.store.transaction():
            self.api.store.execute("DELETE FROM git_connections WHERE project=?", (project,))
            self.api.audit.record("git.disconnect", project=project, details={"host": conn.host})
        return conn

    def _row(self, project: str) -> Row | None:
        return self.api.store.query_one("SELECT * FROM git_connections WHERE project=?", (project,))

    def connection(self, project: str) -> Connection:
        row = self._row(project)
        if row is None:
            raise NotFound(
                f"{project} is not connected to a git host",
                "run 'tristage connect github|gitlab|gitea OWNER/REPO'",
            )
        return _row(row)

    def webhook_url(self, project: str) -> str:
        """The endpoint on the production environment's public domain if it has one
        (the host must reach it), else on its local host."""
        cfg = self.api.config_for(project)
        env = cfg.production or next(iter(cfg.environments))
        public = alias_domain.public_url(cfg.public_names().get(env, alias_domain.NO_NAMES))
        return (public or self.api.deploys.environment_url(project, env)) + INGEST_PATH

    def _sealed(self, row: Row, what: str) -> str:
        return self.api.secret_box.decrypt_text(bytes(row[what]), _context(row["project"], what))

    # -- the endpoint ----------------------------------------------------------------
    def ingest(self, project: str, headers: Mapping[str, str], body: bytes) -> GitIngest:
        """Verify and record one delivery; the job to run in the background (if any)."""
        row = self._row(project)
        if row is None:
            return _refused(404, "not_connected", "this project is not connected to a git host")
        host = hosts.get(row["host"])
        try:
            delivery = host.verify(self._sealed(row, "secret"), headers, body)
        except VerificationError as exc:
            log.warning("%s: %s delivery refused: %s", project, host.name, exc.message)
            return _refused(exc.status, exc.reason, exc.message)
        if not DELIVERY_RE.match(delivery):
            return _refused(400, "malformed", "the delivery id is malformed")
        try:
            event = host.parse(headers, body)
        except ValueError as exc:
            return _refused(400, "malformed", str(exc))
        now = time.time()
        with self.api.store.transaction():
            self.api.store.execute(
                "DELETE FROM git_deliveries WHERE received_at < ?", (now - DELIVERY_DAYS * 86400,)
            )
            seen = self.api.store.query_one(
                "SELECT received_at FROM git_deliveries WHERE project=? AND delivery=?",
                (project, delivery),
            )
            if seen is None:
                job = None if isinstance(event, Ping | Ignored) else json.dumps(to_json(event))
                self.api.store.execute(
                    "INSERT INTO git_deliveries (project, delivery, host, event, received_at,"
                    " job) VALUES (?,?,?,?,?,?)",
                    (project, delivery, host.name, _event_name(event), now, job),
                )
        if seen is not None:
            log.warning("%s: %s delivery %s replayed: refused", project, host.name, delivery)
            return _refused(409, "replayed", f"delivery {delivery} was already received")
        if isinstance(event, Ping):
            self._outcome(project, delivery, "pong")
            return GitIngest(200, {"ok": True, "delivery": delivery, "pong": True})
        if isinstance(event, Ignored):
            self._outcome(project, delivery, event.reason)
            return GitIngest(200, {"ok": True, "delivery": delivery, "ignored": event.reason})
        return GitIngest(202, {"ok": True, "delivery": delivery, "accepted": _event_name(event)},
                         Job(project, delivery, event))  # fmt: skip

    def start(self, job: Job) -> threading.Thread:
        """Run `job` on a thread of its own (the endpoint has answered already)."""
        return self._spawn(self.run_recorded, f"git-{job.project}-{job.delivery[:8]}", job)

    def _spawn(self, target: Any, name: str, *args: Any) -> threading.Thread:
        def body() -> None:
            try:
                target(*args)
            except Exception as exc:  # a background thread logs what went wrong, whatever it was
                log.error("%s failed: %s: %s", name, type(exc).__name__, exc)
            finally:
                self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=body, daemon=True, name=name)
        self._threads.add(thread)
        thread.start()
        return thread

    def _claim(self, job: Job) -> bool:
        """Take the delivery for this process (False: another one acts on it, or did)."""
        now = time.time()
        return bool(self.api.store.execute(
            "UPDATE git_deliveries SET claimed_at=? WHERE project=? AND delivery=?"
            " AND outcome IS NULL AND (claimed_at IS NULL OR claimed_at < ?)",
            (now, job.project, job.delivery, now - CLAIM_LEASE),
        ))  # fmt: skip

    def run_recorded(self, job: Job) -> str | None:
        """`run`, and what it did recorded with the delivery (its event then forgotten);
        None when another process has claimed it."""
        if not self._claim(job):
            return None
        try:
            outcome = self.run(job)
        except Exception as exc:  # recorded with the delivery, whatever it was
            outcome = f"error: {exc}" if isinstance(exc, TristageError) else (
                f"error: {type(exc).__name__}: {exc}")  # fmt: skip
            log.error("%s: delivery %s failed: %s", job.project, job.delivery, outcome)
        self._outcome(job.project, job.delivery, outcome)
        return outcome

    def _outcome(self, project: str, delivery: str, outcome: str) -> None:
        self.api.store.execute(
            "UPDATE git_deliveries SET outcome=?, job=NULL WHERE project=? AND delivery=?",
            (outcome[:500], project, delivery),
        )

    def resume(self, *, reports: bool = True, min_age: float = 0.0) -> int:
        """Act on the deliveries that were answered 202 but not acted on: never claimed
        (and received at least `min_age` seconds ago), or whose claim expired; in the order
        they came. With `reports` (a control plane that starts), also report the previews
        whose status is still pending. The number of deliveries acted on."""
        now = time.time()
        rows = self.api.store.query(
            "SELECT project, delivery, job FROM git_deliveries WHERE outcome IS NULL"
            " AND job IS NOT NULL AND received_at > ? AND ((claimed_at IS NULL AND"
            " received_at <= ?) OR claimed_at < ?) ORDER BY received_at",
            (now - 86400, now - min_age, now - CLAIM_LEASE),
        )
        done = 0
        for r in rows:
            job = Job(r["project"], r["delivery"], from_json(json.loads(r["job"])))
            done += self.run_recorded(job) is not None
        if reports:
            self._resume_reports()
        return done

    def _resume_reports(self) -> None:
        for pr in self.api.store.query(
            "SELECT p.project, p.number, p.deployment FROM pull_requests p"
            " JOIN git_connections c ON c.project = p.project"
            " WHERE p.state=? AND p.reported=? AND p.deployment IS NOT NULL",
            ("open", "pending"),
        ):
            conn = self._row(pr["project"])
            if conn is not None:
                dep = self.api.deploys.get(pr["deployment"])
                self._spawn(self._report, f"git-report-{dep.id}", conn, pr["number"], dep)

    def deliveries(self, project: str, limit: int = 50) -> list[dict[str, Any]]:
        return self.api.store.query(
            "SELECT delivery, host, event, received_at, outcome FROM git_deliveries"
            " WHERE project=? ORDER BY received_at DESC LIMIT ?",
            (project, limit),
        )

    def _lock(self, project: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(project, threading.Lock())

    # -- the background work -----------------------------------------------------------
    def run(self, job: Job) -> str:
        """Act on a verified event; what was done, in a few words."""
        row = self._row(job.project)
        if row is None:
            return "ignored: the project was disconnected"
        event = job.event
        if isinstance(event, Push):
            with self._lock(job.project):
                return self._push(row, event)
        if isinstance(event, PullRequest):
            if event.action == "close":
                with self._lock(job.project):
                    return self._close(row, event)
            with self._lock(job.project):
                dep, outcome = self._open(row, event)
            if dep is not None:
                self._spawn(self._report, f"git-report-{dep.id}", row, event.number, dep)
            return outcome
        return "ignored"

    def _auth(self, row: Row) -> tuple[str, str] | None:
        """What git sends with an https origin: the host's user name and the token."""
        if row["clone_url"].startswith(("https://", "http://")):
            return hosts.get(row["host"]).basic_user, self._sealed(row, "token")
        return None

    def _fetch(self, row: Row, ref: str, into: str) -> str:
        """Fetch `ref` of the origin into `into` of the hosted repository; its commit."""
        bare = self.api.deploys.bare_repo(row["project"])
        git.ensure_bare(bare, self.api.home, row["project"])
        git.fetch(bare, row["clone_url"], [f"+{ref}:{into}"], basic_auth=self._auth(row))
        return git.rev_parse(bare, into)

    def _push(self, row: Row, event: Push) -> str:
        project, host = row["project"], hosts.get(row["host"])
        if event.deleted:
            bare = self.api.deploys.bare_repo(project)
            still = git.remote_commit(bare, row["clone_url"], f"refs/heads/{event.branch}",
                                      basic_auth=self._auth(row))  # fmt: skip
            if still is not None:
                return f"stale: the origin still has {event.branch} (at {still[:12]})"
            stopped = self.api.deploys.stop_branch(
                project, event.branch, f"branch deleted on {host.title}"
            )
            return f"{event.branch} deleted: " + ("release stopped" if stopped else "not running")
        tip = self._fetch(row, f"refs/heads/{event.branch}", _origin_ref("heads", event.branch))
        if tip != event.after:
            return f"stale: the origin's {event.branch} is at {tip[:12]}, not {event.after[:12]}"
        latest = self.api.store.query_one(
            "SELECT id, commit_sha FROM deployments WHERE project=? AND branch=? AND trigger=?"
            " ORDER BY seq DESC LIMIT 1",
            (project, event.branch, "git-host"),
        )
        if latest is not None and latest["commit_sha"] == tip:
            return f"already deployed as {latest['id']}"
        dep, _ = self.api.deploys.create(project, event.branch, tip, "git-host")
        return f"deployment {dep.id} ({dep.environment}, {dep.status.value})"

    def _preview_environment(self, project: str, head_branch: str) -> str:
        cfg = self.api.config_for(project)
        for name, env in cfg.environments.items():
            if env.tier == Tier.preview:
                return name
        return self.api.resolve_branch(cfg, head_branch).environment

    def _pr_row(self, project: str, number: int) -> Row | None:
        return self.api.store.query_one(
            "SELECT * FROM pull_requests WHERE project=? AND number=?", (project, number)
        )

    def _open(self, row: Row, event: PullRequest) -> tuple[Deployment | None, str]:
        project, host = row["project"], hosts.get(row["host"])
        if event.from_fork:
            # its author's code would run with preview's variables (secrets included)
            return None, "ignored: a pull request from a fork gets no preview"
        tip = self._fetch(row, host.pull_ref(event.number), _origin_ref("pull", str(event.number)))
        if event.head_sha and tip != event.head_sha:
            return None, f"stale: the pull request's head is {tip[:12]}, not {event.head_sha[:12]}"
        pr = self._pr_row(project, event.number)
        if pr is not None and pr["state"] == "open" and pr["head_sha"] == tip and pr["deployment"]:
            return None, f"already deployed as {pr['deployment']}"
        env = self._preview_environment(project, event.head_branch)
        dep, _ = self.api.deploys.create(project, pr_branch(event.number), tip, PULL_REQUEST, env)
        now = time.time()
        self.api.store.execute(
            "INSERT INTO pull_requests (project, number, head_branch, head_sha, state,"
            " deployment, updated_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT (project, number)"
            " DO UPDATE SET head_branch=excluded.head_branch, head_sha=excluded.head_sha,"
            " state=excluded.state, deployment=excluded.deployment,"
            " updated_at=excluded.updated_at",
            (project, event.number, event.head_branch, tip, "open", dep.id, now),
        )
        url = self.preview_url(project, event.number, env)
        if dep.status == Status.error:
            self._tell(row, event.number, tip, "failure", url, dep, dep.reason)
            return None, f"deployment {dep.id} refused: {dep.reason}"
        self._tell(row, event.number, tip, "pending", url, dep)
        return dep, f"preview deployment {dep.id} ({env})"

    def _close(self, row: Row, event: PullRequest) -> str:
        project = row["project"]
        stopped = self.api.deploys.stop_branch(
            project, pr_branch(event.number), "pull request merged" if event.merged else
            "pull request closed",
        )  # fmt: skip
        pr = self._pr_row(project, event.number)
        if pr is None:
            return "closed: no preview"
        self.api.store.execute(
            "UPDATE pull_requests SET state=?, updated_at=? WHERE project=? AND number=?",
            ("closed", time.time(), project, event.number),
        )
        if pr["comment_id"]:
            body = comment_text(event.number, state="closed", commit=pr["head_sha"], url=None,
                                deployment=pr["deployment"])  # fmt: skip
            existing = pr["comment_id"]
            self._api_call(row, lambda api: api.upsert_comment(event.number, body, existing))
        return "preview stopped" if stopped else "preview already stopped"

    def preview_url(self, project: str, number: int, environment: str) -> str:
        """`https://` and the environment's `branch_domain` with `pr-N`, if it has one;
        else the local host `pr-N.APP.localhost`."""
        names = self.api.config_for(project).public_names().get(environment)
        if names is not None and names.branch_domain:
            return "https://" + expand(names.branch_domain, pr_label(number))
        host = alias_domain.branch_host(project, pr_branch(number))
        return alias_domain.url(host, self.api.deploys.router_address()[1])

    def _report(self, row: Row, number: int, dep: Deployment) -> None:
        """Wait for the deployment to settle, then tell the host how it went."""
        deadline = time.monotonic() + OUTCOME_TIMEOUT
        while True:
            dep = self.api.deploys.get(dep.id)
            if dep.status not in ACTIVE or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        url = self.preview_url(row["project"], number, dep.environment)
        state: StatusState = "success" if dep.status == Status.ready else "failure"
        reason = dep.reason or (f"still {dep.status.value}" if dep.status in ACTIVE else None)
        with self._lock(row["project"]):
            pr = self._pr_row(row["project"], number)
            if pr is None or pr["deployment"] != dep.id or pr["state"] != "open":
                # superseded by a newer push, or closed: only the commit's status
                self._api_call(row, lambda api: api.set_status(
                    dep.commit, state, url if state == "success" else None,
                    _describe(state, reason)))  # fmt: skip
                return
            self._tell(row, number, dep.commit, state, url, dep, reason)

    def _tell(
        self, row: Row, number: int, sha: str, state: StatusState, url: str,
        dep: Deployment, reason: str | None = None,
    ) -> None:  # fmt: skip
        """The commit status and the one comment of a pull request, for `state`."""
        link = url if state != "failure" else self.api.deploys.deployment_url(dep)
        self._api_call(row, lambda api: api.set_status(sha, state, link, _describe(state, reason)))
        pr = self._pr_row(row["project"], number)
        body = comment_text(number, state=state, commit=sha, url=url, deployment=dep.id,
                            reason=reason)  # fmt: skip
        existing = pr["comment_id"] if pr is not None else None
        new_id = self._api_call(row, lambda api: api.upsert_comment(number, body, existing))
        self.api.store.execute(
            "UPDATE pull_requests SET comment_id=?, reported=? WHERE project=? AND number=?",
            (new_id or existing, state, row["project"], number),
        )

    def _api_call(self, row: Row, call: Any) -> Any:
        """One call to the host's API; a failure is logged, never raised (the deploy
        goes on without its status)."""
        host = hosts.get(row["host"])
        try:
            with HostApi(host, row["api_url"], self._sealed(row, "token"), row["repo"]) as api:
                return call(api)
        except HostApiError as exc:
            log.warning("%s: %s", row["project"], exc.message)
            return None


def _refused(status: int, error: str, message: str) -> GitIngest:
    return GitIngest(status, {"ok": False, "error": error, "message": message})


def _describe(state: StatusState, reason: str | None) -> str:
    if state == "pending":
        return "Deploying the preview"
    if state == "success":
        return "The preview is ready"
    return ("The deploy failed: " + (reason or "see the build log"))[:140]


def _context(project: str, what: str) -> str:
    return f"git-host:{project}:{what}"


def _origin_ref(kind: str, name: str) -> str:
    return f"refs/tristage/origin/{kind}/{name}"


def _http_url(value: str, option: str) -> str:
    value = value.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+(/\S*)?\Z", value):
        raise UsageError(
            f"{option} {value!r} is not an http(s) URL",
            f"e.g. {option} https://git.example.com",
        )
    return value


__all__ = ["Connected", "Connection", "GitHost", "GitHostService", "GitIngest", "Job"]
