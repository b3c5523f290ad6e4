"""Quickstart: the deployment guide's whole workflow, end to end, on the reference app.

One `Quickstart.run()` creates (or reuses) a git repository holding `examples/saas-app`
and a `tristage.toml`, sets each environment's variables (test keys outside production,
clearly fake live-looking keys in production, a distinct webhook secret per
environment), starts the control plane (or uses the running one), pushes `dev`, `test`
and `main`, seeds production, takes a verified production backup, clones production
into preview with sanitization, sends a signed `user.created` through each
environment's ingest URL and waits for its delivery, then reports every environment.

Everything goes through the Python API; progress is reported to a `Reporter`, so the
command line decides how it looks. Running it twice is safe: existing files, variables
and live deployments are kept, missing pieces are added.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..domain import aliases
from ..domain.config import FILE_NAME, PipelineConfig, Tier, parse_config
from ..domain.deployments import ACTIVE, Status
from ..domain.presets import Preset, render
from ..domain.rules import ERROR
from ..errors import NotFound, TristageError, UsageError

if TYPE_CHECKING:
    from ..api import Tristage
    from .deploys import ControlPlaneInfo

DEFAULT_PORT = 8080
APP_ENV = "TRISTAGE_EXAMPLE_APP"
SEED_USERS = {Tier.production: 24, Tier.development: 6}
CONTROLPLANE_START_TIMEOUT = 30.0
DEPLOY_TIMEOUT = 600.0
DELIVERY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0

# The columns of the reference app that hold personal data (docs/example-app.md).
SANITIZE_RULES = {
    "users.clerk_id": "keep",  # Clerk's own id: webhooks in preview name the same users
    "users.email": "email",
    "users.first_name": "fake:first_name",
    "users.last_name": "fake:last_name",
    "users.phone": "phone",
    "users.created_at": "keep",
    "users.updated_at": "keep",
    "users.deleted": "keep",
    "payment_attempts.clerk_payment_id": "keep",
    "payment_attempts.amount_cents": "keep",
    "payment_attempts.currency": "keep",
    "payment_attempts.status": "keep",
    "payment_attempts.card_last4": "redact",
    "payment_attempts.created_at": "keep",
    "payment_attempts.updated_at": "keep",
    "webhook_events.svix_id": "keep",
    "webhook_events.event_type": "keep",
    "webhook_events.received_at": "keep",
    "schema_migrations.applied_at": "keep",
}
IDENTITY = "quickstart@example.invalid"
PUBLIC = {"CLERK_PUBLISHABLE_KEY"}  # a publishable key is not a secret
BRANCHES = {Tier.development: "dev", Tier.preview: "test", Tier.production: "main"}
IGNORED = ("__pycache__", "*.pyc", "*.sqlite3", "*.sqlite3-*", ".env", ".env.*")
GITIGNORE = "__pycache__/\n*.pyc\n*.sqlite3\n*.sqlite3-*\n.env\n.env.local\n"


class QuickstartFailed(TristageError):
    """A step of the quickstart failed; the message says which and how to look closer."""


class Reporter(Protocol):
    """Where progress goes (the command line draws it with Rich)."""

    def step(self, title: str) -> None: ...  # a step begins
    def detail(self, text: str) -> None: ...  # what the current step is doing now
    def done(self, text: str) -> None: ...  # the current step succeeded
    def note(self, text: str) -> None: ...  # a line worth keeping (warning, reuse)


class SilentReporter:
    def step(self, title: str) -> None:
        pass

    def detail(self, text: str) -> None:
        pass

    def done(self, text: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass


@dataclass(frozen=True)
class Options:
    directory: Path
    preset: Preset = "professional"
    port: int | None = None  # None: 8080 for a control plane it starts


@dataclass(frozen=True)
class EnvironmentReport:
    environment: str
    tier: str
    branch: str
    deployment: str | None
    url: str
    health: str
    users: int
    payment_attempts: int
    webhook: str | None  # the delivery id of the test event

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Summary:
    project: str
    root: Path
    router_port: int
    controlplane_pid: int
    started_controlplane: bool
    environments: list[EnvironmentReport] = field(default_factory=list)
    backup: str | None = None
    cloned_rows: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def env(self, tier: str) -> EnvironmentReport:
        return next(e for e in self.environments if e.tier == tier)

    def as_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "root": str(self.root),
            "router_port": self.router_port,
            "controlplane_pid": self.controlplane_pid,
            "started_controlplane": self.started_controlplane,
            "environments": [e.as_json() for e in self.environments],
            "backup": self.backup,
            "cloned_rows": self.cloned_rows,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 1),
        }


def example_app() -> Path:
    """The reference app: `$TRISTAGE_EXAMPLE_APP`, the source tree, or the installed copy."""
    import tristage

    candidates: list[Path] = []
    if os.environ.get(APP_ENV):
        candidates.append(Path(os.environ[APP_ENV]))
    candidates.append(Path(tristage.__file__).resolve().parents[2] / "examples" / "saas-app")
    candidates.append(Path(sys.prefix) / "share" / "tristage" / "examples" / "saas-app")
    for path in candidates:
        if (path / "app.py").is_file() and (path / "migrate.py").is_file():
            return path
    raise NotFound(
        "the reference app examples/saas-app is not available to this installation",
        f"install tristage from its source tree (pip install -e .), or set {APP_ENV} "
        "to a copy of examples/saas-app",
    )


def project_name(root: Path) -> str:
    import re

    name = re.sub(r"[^a-z0-9-]+", "-", root.name.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"app-{name}".strip("-")
    return name[:40].rstrip("-")


def pipeline_text(preset: Preset, project: str) -> str:
    """The preset's tristage.toml, filled in for the reference app."""
    text = render(preset, project)
    replacements = {
        '# migrate = "python migrate.py"': 'migrate = "python migrate.py"  ',
        'health_path = "/"              ': 'health_path = "/health"        ',
    }
    for old, new in replacements.items():
        if old not in text:
            raise AssertionError(f"preset template changed: {old!r} not found")
        text = text.replace(old, new, 1)
    config = parse_config(text, FILE_NAME)
    hooks = ["\n# The Clerk webhook endpoint of each environment (its own signing secret)."]
    for env in config.environments:
        hooks.append(
            f"[environments.{env}.webhooks.clerk]\n"
            'kind = "clerk"\n'
            'secret_var = "CLERK_WEBHOOK_SECRET"\n'
            'path = "/clerk-users-webhook"\n'
        )
    marker = '[sanitize]\n# "users.email" = "email"\n'
    rules = "[sanitize]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in SANITIZE_RULES.items())
    if marker in text:
        text = text.replace(marker, rules)
    else:
        text += "\n" + rules
    text += "\n".join(hooks)
    parse_config(text, FILE_NAME)  # always valid
    return text


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _token(n: int = 24) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(n))


def sample_variables(project: str, tier: Tier) -> dict[str, str]:
    """Provider keys that pass the key-format rules, and fresh secrets, for one tier.

    Production gets live-looking keys that say FAKE in them; the others test keys.
    """
    if tier == Tier.production:
        mode, clerk_host = "live", f"clerk.{project}.example"
    else:
        mode, clerk_host = "test", f"{project}-{tier.value}.clerk.example"
    return {
        "CLERK_PUBLISHABLE_KEY": f"pk_{mode}_" + _b64(f"{clerk_host}$".encode()),
        "CLERK_SECRET_KEY": f"sk_{mode}_FAKE{_token(32)}",
        "STRIPE_SECRET_KEY": f"sk_{mode}_FAKE{_token(40)}",
        "CLERK_WEBHOOK_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode(),
        "SESSION_SECRET": secrets.token_urlsafe(32),
        "CSRF_SECRET": secrets.token_urlsafe(32),
    }


class Quickstart:
    def __init__(self, api: Tristage, options: Options, reporter: Reporter | None = None) -> None:
        self.api = api
        self.options = options
        self.out: Reporter = reporter or SilentReporter()
        self.root = options.directory.resolve()
        self.project = project_name(self.root)
        self.child: subprocess.Popen[bytes] | None = None
        self.pushes: list[subprocess.Popen[bytes]] = []
        self.summary: Summary | None = None

    # -- the whole flow ----------------------------------------------------
    def run(self) -> Summary:
        started = time.monotonic()
        self.out.step("Repository")
        done = self.prepare_repository()
        self.out.done(done)
        cfg = self.api.config_for(self.project)

        self.out.step("Variables")
        done, warnings = self.set_variables(cfg)
        self.out.done(done)

        self.out.step("Control plane")
        info = self.ensure_controlplane()
        self.out.done(
            f"{'started' if self.child else 'using the running one'} (pid {info.pid}), "
            f"router on http://127.0.0.1:{info.router_port}"
        )
        summary = Summary(
            self.project, self.root, info.router_port, info.pid, self.child is not None
        )
        summary.warnings = warnings
        self.summary = summary

        self.out.step("Deploy dev, test and main")
        self.out.done(self.deploy_all(cfg))

        self.out.step("Sample data")
        self.out.done(self.seed(cfg))

        self.out.step("Production backup")
        summary.backup, done = self.backup(cfg)
        self.out.done(done)

        preview = self._by_tier(cfg, Tier.preview)
        self.out.step(f"Clone production into {preview}")
        summary.cloned_rows, done = self.clone(cfg)
        self.out.done(done)

        self.out.step("Test webhooks")
        deliveries, done = self.send_webhooks(cfg)
        self.out.done(done)

        summary.environments = self.report(cfg, deliveries)
        summary.seconds = time.monotonic() - started
        return summary

    # -- 1. repository -------------------------------------------------------
    def _git(self, *args: str, check: bool = True) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_DIR")}
        env["GIT_TERMINAL_PROMPT"] = "0"
        proc = subprocess.run(
            ["git", *self._identity(), *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if check and proc.returncode != 0:
            raise QuickstartFailed(
                f"git {' '.join(args)} failed in {self.root}: {proc.stderr.strip()}"
            )
        return proc.stdout.strip()

    def _identity(self) -> list[str]:
        """A committer identity when git has none configured (a fresh machine)."""
        if os.environ.get("GIT_COMMITTER_EMAIL") and os.environ.get("GIT_AUTHOR_EMAIL"):
            return []
        probe = subprocess.run(
            ["git", "config", "user.email"],
            cwd=self.root if self.root.exists() else None,
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.stdout.strip():
            return []
        return [
            "-c",
            "user.name=tristage quickstart",
            "-c",
            "user.email=quickstart@example.invalid",
        ]

    def prepare_repository(self) -> str:
        root = self.root
        toml = root / FILE_NAME
        fresh = not (root / ".git").exists()
        if fresh:
            if root.exists() and any(root.iterdir()):
                raise UsageError(
                    f"{root} exists, is not empty and is not a quickstart repository",
                    "pass --dir with a new or empty directory",
                )
            self.out.detail(f"copying the reference app into {root}")
            root.mkdir(parents=True, exist_ok=True)
            shutil.copytree(
                example_app(), root, ignore=shutil.ignore_patterns(*IGNORED), dirs_exist_ok=True
            )
            (root / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
            toml.write_text(pipeline_text(self.options.preset, self.project), encoding="utf-8")
            self._git("init", "-q", "-b", "main")
            self._git("add", "-A")
            self._git("commit", "-q", "-m", "saas-app: the reference app and its pipeline")
        elif not toml.exists() or not (root / "app.py").exists():
            raise UsageError(
                f"{root} is a git repository but not a quickstart one (no {FILE_NAME} and app.py)",
                "pass --dir with a new or empty directory",
            )
        ref = self.api.open_project(root)
        if ref.name != self.project:
            self.project = ref.name
        if not fresh and ref.config.project.preset != self.options.preset:
            self.out.note(
                f"{FILE_NAME} keeps preset {ref.config.project.preset!r}; "
                "use a new --dir for another preset"
            )
        if not self._git("rev-parse", "--verify", "-q", "HEAD", check=False):
            self._git("add", "-A")
            self._git("commit", "-q", "-m", "saas-app: the reference app and its pipeline")
        head = self._git("rev-parse", "HEAD")
        for branch in BRANCHES.values():
            if not self._git("rev-parse", "--verify", "-q", f"refs/heads/{branch}", check=False):
                self._git("branch", branch, head)
        for line in self.api.deploys.setup_git(self.project, root):
            self.out.detail(line)
        what = "created" if fresh else "reusing"
        return f"{what} {root} (project {self.project}, preset {ref.config.project.preset})"

    # -- 2. variables ------------------------------------------------------------
    def _by_tier(self, cfg: PipelineConfig, tier: Tier) -> str:
        for name, env in cfg.environments.items():
            if env.tier == tier:
                return name
        raise UsageError(
            f"{FILE_NAME} declares no {tier.value} environment",
            f'add an environment with tier = "{tier.value}", or use --preset professional',
        )

    def set_variables(self, cfg: PipelineConfig) -> tuple[str, list[str]]:
        existing: dict[str, set[str]] = {}
        for entry in self.api.variables.entries(self.project):
            existing.setdefault(entry.scope, set()).add(entry.name)
        added = 0
        for name, env in cfg.environments.items():
            if cfg.owner(name) != name:
                continue  # shares another environment's variables
            have = existing.get(name, set())
            values = {
                k: v for k, v in sample_variables(self.project, env.tier).items() if k not in have
            }
            public = {k: v for k, v in values.items() if k in PUBLIC}
            hidden = {k: v for k, v in values.items() if k not in PUBLIC}
            for group, secret in ((public, False), (hidden, True)):
                if group:
                    self.out.detail(f"{name}: {', '.join(sorted(group))}")
                    self.api.variables.import_values(
                        self.project, group, environments=[name], secret=secret
                    )
            added += len(values)
        findings = self.api.variables.check(self.project)
        errors = [f.line() for f in findings if f.severity == ERROR]
        if errors:
            raise QuickstartFailed(
                "tristage check found errors:\n  " + "\n  ".join(errors),
                "fix them with 'tristage env set', then run quickstart again",
            )
        warnings = [f.line() for f in findings]
        for w in warnings:
            self.out.note(f"check: {w}")
        owners = [n for n in cfg.environments if cfg.owner(n) == n]
        what = f"{added} set" if added else "all present"
        return (
            f"{what} for {', '.join(owners)}; tristage check passes"
            + (
                f" ({len(warnings)} warning{'s' if len(warnings) != 1 else ''})" if warnings else ""
            ),
            warnings,
        )

    # -- 3. control plane --------------------------------------------------------
    def ensure_controlplane(self) -> ControlPlaneInfo:
        info = self.api.deploys.controlplane()
        if info is not None:
            if self.options.port not in (None, 0, info.router_port):
                self.out.note(
                    f"a control plane already runs for {self.api.home} with its router on port "
                    f"{info.router_port}; using it (not --port {self.options.port})"
                )
            return info
        log_path = self.controlplane_log
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "tristage", "--home", str(self.api.home), "up"]
        port = DEFAULT_PORT if self.options.port is None else self.options.port
        cmd += ["--port", str(port)]
        self.out.detail(f"starting: tristage up --port {port}")
        with log_path.open("ab") as log:
            self.child = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TRISTAGE_HOME": str(self.api.home)},
                start_new_session=True,  # our Ctrl-C stops it in order, through stop()
            )
        deadline = time.monotonic() + CONTROLPLANE_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.child.poll() is not None:
                tail = _tail(log_path, 6)
                self.child = None
                hint = f"see {log_path}"
                if "address already in use" in tail.lower():
                    hint = f"port {port} is taken: pass --port with a free one (0 picks one)"
                raise QuickstartFailed(f"the control plane did not start:\n{tail}", hint)
            info = self.api.deploys.controlplane()
            if info is not None and info.pid == self.child.pid:
                return info
            time.sleep(0.05)
        raise QuickstartFailed(
            f"the control plane did not come up within {CONTROLPLANE_START_TIMEOUT:.0f}s",
            f"see {log_path}",
        )

    @property
    def controlplane_log(self) -> Path:
        return self.api.home / "logs" / "controlplane.log"

    def stop(self) -> bool:
        """Stop what this run started (pushes, the control plane); True if it stopped one."""
        for push in self.pushes:
            if push.poll() is None:
                push.terminate()
        child = self.child
        if child is None:
            return False
        if child.poll() is None:
            child.send_signal(signal.SIGINT)  # it stops its releases, then exits
            try:
                child.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        self.child = None
        return True

    def detach(self) -> int | None:
        """Leave the control plane running after this process exits; returns its pid."""
        child, self.child = self.child, None
        return child.pid if child is not None else None

    def wait(self, should_stop: Callable[[], bool]) -> int | None:
        """Serve until `should_stop()` or the control plane exits; its exit code if it did."""
        child = self.child
        while child is not None and not should_stop():
            code = child.poll()
            if code is not None:
                self.child = None
                return code
            time.sleep(0.2)
        return None

    # -- 4. deploys --------------------------------------------------------------
    def deploy_all(self, cfg: PipelineConfig) -> str:
        svc = self.api.deploys
        targets: dict[str, str] = {}  # environment -> branch
        for branch in BRANCHES.values():
            env = self.api.resolve_branch(cfg, branch).environment
            targets[env] = branch
        shas = {b: self._git("rev-parse", f"refs/heads/{b}") for b in targets.values()}
        since = time.time() - 1
        logs = {b: self.api.home / "logs" / self.project / f"push-{b}.log" for b in shas}
        for b, path in logs.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as log:  # the push prints the hook's build log
                self.pushes.append(
                    subprocess.Popen(
                        ["git", "push", "tristage", f"refs/heads/{b}:refs/heads/{b}"],
                        cwd=self.root,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
                    )
                )
        found: dict[str, str] = {}
        for push in self.pushes:
            while push.poll() is None:
                self._show_progress(targets, shas, since, found)
                time.sleep(0.1)
        self.pushes = []
        deadline = time.monotonic() + DEPLOY_TIMEOUT
        lines = []
        for env, branch in targets.items():
            dep = found.get(env) or self._find(env, shas[branch], since)
            if dep is None:
                dep = self._live_or_redeploy(env, branch, shas[branch])
                if dep is None:
                    lines.append(f"{env} already live")
                    continue
            found[env] = dep
        # wait for every deployment to settle and be routed
        while True:
            self._show_progress(targets, shas, since, found)
            pending = [e for e, d in found.items() if svc.get(d).status in ACTIVE]
            if not pending:
                break
            if time.monotonic() > deadline:
                raise QuickstartFailed(f"deploys did not finish in time: {', '.join(pending)}")
            time.sleep(0.1)
        for env, dep_id in found.items():
            settled = svc.get(dep_id)
            if settled.status != Status.ready:
                out = _tail(logs[targets[env]], 12)
                raise QuickstartFailed(
                    f"the {env} deployment {dep_id} is {settled.status.value}: "
                    f"{settled.reason or ''}" + (f"\n{out}" if out else ""),
                    f"see 'tristage logs {dep_id} --build' in {self.root}",
                )
            if not svc.wait_routed(self.project, env, dep_id, 60):
                raise QuickstartFailed(
                    f"the {env} deployment {dep_id} is ready but the router does not serve it",
                    f"see {self.controlplane_log}",
                )
            lines.append(f"{env} {dep_id}")
        return "ready and routed: " + ", ".join(lines)

    def _find(self, env: str, sha: str, since: float) -> str | None:
        """The deployment of `sha` this run made, or one still pending from an earlier run."""
        for dep in self.api.deploys.list_deployments(self.project, env, limit=5):
            if dep.commit == sha and (dep.created_at >= since or dep.status in ACTIVE):
                return dep.id
        return None

    def _live_or_redeploy(self, env: str, branch: str, sha: str) -> str | None:
        """Nothing new was pushed: keep the live deployment if it serves `sha`, else deploy."""
        svc = self.api.deploys
        live = svc.live(self.project, env)
        if live is not None and svc.get(live).commit == sha:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # a restarted control plane starts it again
                if svc.live_upstream(self.project, env) is not None:
                    return None
                if svc.get(live).status != Status.ready:
                    break
                self.out.detail(f"{env}: waiting for {live} to come up")
                time.sleep(0.1)
        self.out.detail(f"{env}: deploying {branch} ({sha[:7]})")
        dep, _warnings = svc.deploy(self.project, self.root, branch=branch)
        return dep.id

    def _show_progress(
        self, targets: dict[str, str], shas: dict[str, str], since: float, found: dict[str, str]
    ) -> None:
        parts = []
        for env, branch in targets.items():
            dep_id = found.get(env) or self._find(env, shas[branch], since)
            if dep_id is None:
                parts.append(f"{env}: pushing {branch}")
                continue
            found[env] = dep_id
            dep = self.api.deploys.get(dep_id)
            text = f"{env}: {dep.status.value}"
            if dep.status in ACTIVE:
                last = _tail(self.api.deploys.log_path(self.project, dep_id, build=True), 1)
                if last:
                    text += f" ({last[:60]})"
            parts.append(text)
        self.out.detail(" | ".join(parts))

    # -- 5. sample data -------------------------------------------------------
    def seed(self, cfg: PipelineConfig) -> str:
        done = []
        for name, env in cfg.environments.items():
            count = SEED_USERS.get(env.tier)
            if count is None or cfg.owner(name) != name:
                continue
            if env.tier != Tier.production and any(
                cfg.owner(o) == name and e.tier == Tier.preview for o, e in cfg.environments.items()
            ):
                continue  # the simple preset's shared store is filled by the clone
            self.out.detail(f"{name}: python seed.py --count {count}")
            url = self.api.data.database_url(self.project, name)
            proc = subprocess.run(
                [sys.executable, "seed.py", "--count", str(count), "--seed", name],
                cwd=self.root,
                capture_output=True,
                text=True,
                env={**os.environ, "DATABASE_URL": url, "TRISTAGE_ENV": name},
                timeout=120,
                check=False,
            )
            if proc.returncode != 0:
                raise QuickstartFailed(
                    f"seed.py failed for {name}: {(proc.stderr or proc.stdout).strip()}"
                )
            users, payments = self.rows(name)
            done.append(f"{name} {users} users, {payments} payment attempts")
        return "; ".join(done)

    def rows(self, environment: str) -> tuple[int, int]:
        store = self.api.data.open_store(self.project, environment)
        with store.read() as r:
            names = {t.name for t in r.tables()}
            users = r.count("users") if "users" in names else 0
            payments = r.count("payment_attempts") if "payment_attempts" in names else 0
        return users, payments

    # -- 6. backup -----------------------------------------------------------
    def backup(self, cfg: PipelineConfig) -> tuple[str, str]:
        prod = self._by_tier(cfg, Tier.production)
        self.out.detail(f"backing up {prod}")
        info = self.api.data.backup(self.project, prod, kind="manual", note="quickstart")
        self.out.detail(f"drill: restoring {info.id} into a scratch store")
        report = self.api.data.drill(self.project, prod, info.id)
        if not report.passed:
            raise QuickstartFailed(
                f"backup {info.id} failed its drill: {'; '.join(report.problems[:3])}",
                f"run 'tristage db drill {prod}' in {self.root}",
            )
        return info.id, (
            f"{info.id}: {info.rows} rows in {info.tables} tables, {info.size} bytes; "
            f"drill PASS ({len(report.checks)} tables, {report.seconds:.2f}s)"
        )

    # -- 7. clone ----------------------------------------------------------------
    def clone(self, cfg: PipelineConfig) -> tuple[int, str]:
        prod = self._by_tier(cfg, Tier.production)
        preview = self._by_tier(cfg, Tier.preview)
        self.out.detail(f"tristage db clone {prod} {preview}")
        report = self.api.data.clone(self.project, prod, preview, yes=True)
        rows = sum(report.rows.values())
        columns = sum(len(c) for c in report.transformed.values())
        return rows, (
            f"{rows} rows into {report.target}, {columns} personal-data columns sanitized"
            + (f" (safety backup {report.safety_backup})" if report.safety_backup else "")
        )

    # -- 8. webhooks -------------------------------------------------------------
    def send_webhooks(self, cfg: PipelineConfig) -> tuple[dict[str, str], str]:
        hooks = self.api.webhooks
        sent: dict[str, str] = {}
        for env in cfg.environments:
            if "clerk" not in cfg.env(env).webhooks:
                continue
            self.out.detail(f"{env}: send-test clerk user.created")
            result = hooks.send_test(self.project, env, "clerk", "user.created")
            delivery = result.response.get("delivery")
            if result.status != 200 or not isinstance(delivery, str):
                raise QuickstartFailed(
                    f"the {env} ingest URL answered {result.status}: {result.response}",
                    f"see 'tristage hooks urls' in {self.root}",
                )
            sent[env] = delivery
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        waiting = dict(sent)
        while waiting:
            for env, delivery in list(waiting.items()):
                d = hooks.show(delivery).delivery
                if d.status == "delivered":
                    del waiting[env]
                elif d.status == "dead" or time.monotonic() > deadline:
                    raise QuickstartFailed(
                        f"the test webhook of {env} was not delivered ({d.status}, "
                        f"{d.attempts} attempt(s), last: {d.last_status or d.last_error})",
                        f"see 'tristage hooks show {delivery}' in {self.root}",
                    )
            if waiting:
                self.out.detail("waiting for delivery: " + ", ".join(waiting))
                time.sleep(0.05)
        return sent, "user.created delivered to " + ", ".join(
            f"{env} ({d})" for env, d in sent.items()
        )

    # -- 9. report ---------------------------------------------------------------
    def report(self, cfg: PipelineConfig, deliveries: dict[str, str]) -> list[EnvironmentReport]:
        out: list[EnvironmentReport] = []
        branch_of = {self.api.resolve_branch(cfg, b).environment: b for b in BRANCHES.values()}
        for row in self.api.deploys.status(self.project):
            env = row["environment"]
            users, payments = self.rows(env)
            out.append(
                EnvironmentReport(
                    environment=env,
                    tier=row["tier"],
                    branch=row["branch"] or branch_of.get(env, ""),
                    deployment=row["deployment"],
                    url=row["url"],
                    health=row["health"],
                    users=users,
                    payment_attempts=payments,
                    webhook=deliveries.get(env),
                )
            )
        order = list(Tier)
        return sorted(out, key=lambda e: order.index(Tier(e.tier)))

    # -- what to try next ----------------------------------------------------------
    def next_steps(self, summary: Summary) -> list[tuple[str, str]]:
        """(command, what it shows) pairs, concrete for this project."""
        preview = summary.env("preview")
        prod_host = aliases.project_host(self.project)
        port = summary.router_port
        forged = (
            f"curl -si http://127.0.0.1:{port}/.tristage/webhooks/clerk -H 'Host: {prod_host}' "
            f"-H 'svix-id: msg_forged' -H \"svix-timestamp: $(date +%s)\" "
            '-H \'svix-signature: v1,Zm9yZ2Vk\' -d \'{"type":"user.created","data":{}}\''
        )
        broken = (
            "git checkout -b feature/broken && echo 'raise SystemExit(\"boom\")' > app.py"
            " && git commit -qam 'a broken release' && git push tristage feature/broken;"
            " git checkout main"
        )
        return [
            (f"cd {self.root}", "the project's working copy"),
            ("tristage status", "each environment: live deployment, URL, health"),
            (
                f"tristage promote {preview.deployment or 'ID'}",
                "move preview's build to production (its artifact is reused)",
            ),
            ("tristage rollback", "production back to its previous deployment, instantly"),
            (broken, "a failing deploy: refused at the health check, development keeps serving"),
            (forged, "a forged webhook: answered 401, never stored or forwarded"),
            ("tristage hooks deliveries", "every delivery and its attempts"),
            ("tristage db backups production", "the verified backup"),
            ("tristage check", "the isolation rules over every environment's variables"),
        ]


def _tail(path: Path, n: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 4096))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return _last_lines(data, n)


def _last_lines(text: str, n: int) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-n:])


__all__ = [
    "Options",
    "Quickstart",
    "QuickstartFailed",
    "Reporter",
    "Summary",
    "example_app",
    "pipeline_text",
    "sample_variables",
]
