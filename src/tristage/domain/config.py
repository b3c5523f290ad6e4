"""The pipeline file `tristage.toml`: its schema, its two presets, and loading with precise errors.

Pure: parsing takes text and returns a `PipelineConfig` or raises `ConfigError`
listing every problem with its key path (``environments.preview.branches[1]``).
"""

from __future__ import annotations

import re
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import ConfigError, Problem
from .cleanup import CleanupPolicy
from .hostnames import PublicNames, check_hostname, check_pattern
from .limits import parse_size

PROCESS_TYPE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,29}\Z")
MAX_REPLICAS = 32

FILE_NAME = "tristage.toml"
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}\Z")
VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
BRANCH_PATTERN_RE = re.compile(r"^[A-Za-z0-9._/*?\[\]!-]+\Z")


def _check_pattern(p: str) -> str:
    if not p or not BRANCH_PATTERN_RE.match(p):
        raise ValueError(
            f"{p!r} is not a branch pattern: use branch names and globs "
            "such as 'main', 'feature/*' or '*'"
        )
    return p


def _check_var(name: str) -> str:
    if not VAR_RE.match(name):
        raise ValueError(f"{name!r} is not a variable name (letters, digits, '_')")
    return name


BranchPattern = Annotated[str, AfterValidator(_check_pattern)]
VarName = Annotated[str, AfterValidator(_check_var)]


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")


def parse_duration(text: str) -> float:
    """`"90s"`, `"30m"`, `"2h"`, `"1d"` (a bare number is seconds) -> seconds (> 0)."""
    m = _DURATION_RE.match(str(text))
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration: use e.g. '90s', '30m' or '2h'")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2) or "s"]


class Tier(StrEnum):
    development = "development"
    preview = "preview"
    production = "production"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseConfig(Strict):
    """The data store of an environment; the app receives it as `DATABASE_URL`
    (docs/data.md)."""

    engine: Literal["sqlite", "postgres"] = Field(
        default="sqlite",
        description="`sqlite`: a file under the platform home; `postgres`: a database on a "
        "PostgreSQL server.",
    )
    url: str | None = Field(
        default=None,
        description="sqlite: the file path (default `$TRISTAGE_HOME/data/<project>/<env>.sqlite3`"
        "; a relative path is under `$TRISTAGE_HOME/data/<project>/`); postgres: the server URL "
        "in which tristage creates the environment's database (default "
        "`postgresql://127.0.0.1:5432`).",
    )
    name: str | None = Field(
        default=None,
        description="postgres only: the database name "
        "(default `tristage_<project>_<environment>`).",
    )


class Retention(Strict):
    """How many backups `tristage db prune` and the scheduler keep (docs/data.md)."""

    daily: int = Field(
        default=7, ge=0, le=3650, description="The newest backup of each of this many days."
    )
    weekly: int = Field(
        default=4, ge=0, le=520, description="The newest backup of each of this many weeks."
    )
    monthly: int = Field(
        default=12, ge=0, le=1200, description="The newest backup of each of this many months."
    )


def _cron_or_error(v: str) -> str:
    from croniter import croniter

    if not croniter.is_valid(v):
        raise ValueError(f"{v!r} is not a cron expression (e.g. '0 4 * * 1' for Mondays at 04:00)")
    return v


class BackupConfig(Strict):
    """Scheduled backups of an environment's data store (docs/data.md)."""

    schedule: str | None = Field(
        default=None,
        description="A cron expression in local time (e.g. `0 2 * * *`, daily at 02:00), run "
        "by `tristage up`; unset: no scheduled backups.",
    )
    keep: Retention = Field(
        default_factory=Retention,
        description="Retention: how many daily, weekly and monthly backups are kept.",
    )
    encrypt: bool | None = Field(
        default=None,
        description="Encrypt backups (AES-256-GCM under the platform master key); default: "
        "`true` for production, `false` elsewhere.",
    )
    keep_manual: int | None = Field(
        default=None,
        ge=0,
        description="How many manual backups (`tristage db backup`) `prune` keeps, newest "
        "first; unset: every one, until deleted by hand (`tristage db delete`).",
    )
    keep_undo: int = Field(
        default=1,
        ge=0,
        description="PostgreSQL: how many databases replaced by `tristage db restore` are "
        "kept (renamed, closed to connections) so the restore can be undone with `tristage "
        "db restore ENV --undo`, newest first; `0`: none (each is dropped after its restore).",
    )
    target: str | None = Field(
        default=None,
        description="Where backups go, by URL: `file:///abs/dir` or `s3://bucket/prefix` "
        "(`?endpoint=https://host:9000` for an S3-compatible server); each environment "
        "gets `<project>/<env>/` below it. Unset: `$TRISTAGE_HOME/backups/`.",
    )
    endpoint_url: str | None = Field(
        default=None,
        description="The endpoint of an S3-compatible server (MinIO, Ceph, Garage…), if "
        "not in `target`'s `?endpoint=`.",
    )
    region: str | None = Field(default=None, description="The S3 region, if it matters.")
    drill: str | None = Field(
        default=None,
        description="A cron expression for restore drills of the latest backup; default "
        "monthly (`0 4 1 * *`) when `schedule` is set; `off` for none.",
    )

    @field_validator("drill")
    @classmethod
    def _drill_cron(cls, v: str | None) -> str | None:
        if v is None or v == "off":
            return v
        return _cron_or_error(v)

    def drill_schedule(self) -> str | None:
        if self.drill == "off":
            return None
        return self.drill or ("0 4 1 * *" if self.schedule else None)

    @field_validator("target")
    @classmethod
    def _target(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if v.startswith("file://"):
            if not v[len("file://") :].startswith("/"):
                raise ValueError(f"{v!r}: a file:// target needs an absolute path (file:///dir)")
            return v
        if v.startswith("s3://") and len(v) > len("s3://") and not v[5:].startswith("/"):
            return v
        raise ValueError(f"{v!r} is not a backup target: use file:///abs/dir or s3://bucket/prefix")

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from croniter import croniter

        if not croniter.is_valid(v):
            raise ValueError(
                f"{v!r} is not a cron expression (e.g. '0 2 * * *' for daily at 02:00)"
            )
        return v


class SanitizeTable(Strict):
    """A `[sanitize]` rule written as a table: a forced keep or rules by JSON path."""

    keep: bool | None = Field(
        default=None,
        description="`true`: keep the values even if they look like personal data "
        "(needs `reason`, recorded with every clone).",
    )
    reason: str | None = Field(
        default=None, description="Why the kept values are not personal data."
    )
    json_: dict[str, str] | None = Field(
        default=None,
        alias="json",
        description='Rules by JSON path, `{ "$.email" = "email", "$.address" = "address" }`; '
        "fields no path names are kept (and checked).",
    )

    def model_dump_rule(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.keep is not None:
            out["keep"] = self.keep
        if self.reason is not None:
            out["reason"] = self.reason
        if self.json_ is not None:
            out["json"] = self.json_
        return out


class SanitizeFiles(Strict):
    """`[sanitize.files]`: the files of production's data directory a clone copies."""

    copy_: list[str] = Field(
        default_factory=list,
        alias="copy",
        description='Glob patterns relative to the data directory (`["public/**"]`): `*` '
        "and `?` within a path segment, `**` any number of segments. A clone from "
        "production copies the files they match and no other (default: none); a clone "
        "from another environment copies every file.",
    )

    @field_validator("copy_")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        from . import data_files

        try:
            return data_files.check_patterns(v)
        except data_files.GlobError as exc:
            raise ValueError(f"[sanitize.files] copy: {exc}") from None


class WebhookDestination(Strict):
    """One place a source's deliveries are forwarded to, with its own attempts and
    status: a path of the environment's live deployment, or a URL."""

    name: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9_.:-]{0,62}$",
        description="Its name in listings; default `app` for a path, the URL's host:port "
        "for a URL.",
    )
    path: str | None = Field(
        default=None,
        description="A path of the environment's live deployment (e.g. `/clerk-users-webhook`).",
    )
    url: str | None = Field(
        default=None,
        description="An http(s) URL outside the deployment (another process's port, an "
        "archive service); it gets the same body and signature headers.",
    )

    @model_validator(mode="after")
    def _one_target(self) -> WebhookDestination:
        if (self.path is None) == (self.url is None):
            raise ValueError("a destination has exactly one of `path` or `url`")
        if self.path is not None and not self.path.startswith("/"):
            raise ValueError("path must start with '/', e.g. '/clerk-users-webhook'")
        if self.url is not None and not re.match(r"^https?://[^\s/]+(/\S*)?\Z", self.url):
            raise ValueError("url must be an http:// or https:// URL")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.url is not None:
            from urllib.parse import urlsplit

            return urlsplit(self.url).netloc.lower()
        return "app"


class WebhookSource(Strict):
    """A webhook provider endpoint of an environment, served at
    `/.tristage/webhooks/SOURCE` of the environment's host (docs/webhooks.md)."""

    kind: str = Field(
        pattern=r"^[a-z][a-z0-9_-]{0,39}$",
        description="How deliveries are signed: `clerk` (Svix), `stripe`, `standard` "
        "(Standard Webhooks), or the name of a registered provider plug-in.",
    )
    secret_var: str = Field(
        description="The variable that holds the signing secret in this environment, e.g. "
        "`CLERK_WEBHOOK_SECRET`."
    )
    path: str = Field(
        default="/webhooks",
        description="The path of the live deployment that deliveries are forwarded to.",
    )
    max_body_bytes: int = Field(
        default=1_048_576,
        gt=0,
        description="Larger bodies are refused with 413 (and not read past the limit).",
    )
    retry_schedule: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        description="Seconds between forwarding attempts after the first (close to Svix's "
        "schedule); after the last the delivery is dead-lettered.",
    )
    retain_days: float | None = Field(
        default=None,
        gt=0,
        description="Days a finished delivery (delivered, dead-lettered or filtered) keeps "
        "its body (sealed at rest); after that only its record stays (id, times, status, "
        "event type). Unset: the environment's `webhook_retain_days`.",
    )
    events: list[str] = Field(
        default_factory=list,
        description='Event types forwarded, names or globs (`["user.*", '
        '"paymentAttempt.updated"]`); any other is stored as `filtered` and not forwarded. '
        "Empty: every event type.",
    )
    destinations: list[WebhookDestination] = Field(
        default_factory=list,
        description="Where deliveries go, each with its own attempts and status; empty: the "
        "live deployment's `path` only.",
    )
    max_in_flight: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="Most deliveries of this source being forwarded at once; unset: no "
        "limit but the forwarder's own (16).",
    )
    rate: str | None = Field(
        default=None,
        description='Most deliveries forwarded per second, minute or hour (`"10/s"`, '
        '`"600/m"`, `"1000/h"`); unset: no limit.',
    )
    pause_after: float | None = Field(
        default=432000.0,
        gt=0,
        description="Seconds a destination may keep failing (no 2xx since its first failure) "
        "before it is paused with an alert (`tristage hooks resume` or a successful "
        "`hooks send-test` resumes it); the default is 5 days; unset never pauses.",
    )

    @field_validator("secret_var")
    @classmethod
    def _var(cls, v: str) -> str:
        if not VAR_RE.match(v):
            raise ValueError("must be a variable name such as CLERK_WEBHOOK_SECRET")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must start with '/', e.g. '/clerk-users-webhook'")
        return v

    @field_validator("events")
    @classmethod
    def _events(cls, v: list[str]) -> list[str]:
        for pattern in v:
            if not EVENT_PATTERN_RE.match(pattern):
                raise ValueError(
                    f"{pattern!r} is not an event type or glob (e.g. 'user.*', "
                    "'paymentAttempt.updated')"
                )
        return v

    @field_validator("rate")
    @classmethod
    def _rate(cls, v: str | None) -> str | None:
        if v is not None:
            parse_rate(v)
        return v

    @model_validator(mode="after")
    def _destination_names(self) -> WebhookSource:
        seen: set[str] = set()
        for d in self.destinations:
            if d.label in seen:
                raise ValueError(
                    f"two destinations are named {d.label!r}: give each a distinct `name`"
                )
            seen.add(d.label)
        return self

    def routes(self) -> list[WebhookDestination]:
        """The destinations deliveries go to (the live deployment's `path` by default)."""
        return self.destinations or [WebhookDestination.model_construct(path=self.path)]


EVENT_PATTERN_RE = re.compile(r"^[A-Za-z0-9_.:*?\[\]!-]{1,200}\Z")
RATE_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(text: str) -> float:
    """`"10/s"`, `"600/m"`, `"1000/h"` -> deliveries per second."""
    count, _, unit = text.strip().partition("/")
    try:
        n = float(count)
    except ValueError:
        n = -1.0
    if n <= 0 or unit.strip() not in RATE_UNITS:
        raise ValueError(f"{text!r} is not a rate: use COUNT/UNIT, e.g. '10/s', '600/m', '1000/h'")
    return n / RATE_UNITS[unit.strip()]


class ProcessSettings(Strict):
    """Settings an environment may override from the top-level `[app]` table."""

    web: str | None = Field(
        default=None,
        description="The web process command; unset: the `web:` line of the Procfile.",
    )
    build: str | None = Field(
        default=None,
        description="A build command, run after the dependencies are installed "
        "(e.g. `npm run build`).",
    )
    migrate: str | None = Field(
        default=None,
        description="A migration command, run before a new release takes traffic, after a "
        "snapshot of the data store.",
    )
    health_path: str | None = Field(
        default=None,
        description="The path that must answer 2xx/3xx before a release takes traffic.",
    )
    health_timeout: float | None = Field(
        default=None,
        gt=0,
        le=600,
        description="Seconds a new release has to pass its health check.",
    )
    memory: str | None = Field(
        default=None,
        description="Memory limit of a release or a one-off command (all its processes), "
        "e.g. `512M`, `1G` (binary units; at least `16M`); a build gets at least `2G`.",
    )
    cpus: float | None = Field(
        default=None, gt=0, le=256, description="CPU limit in cores, e.g. `0.5` or `2`."
    )
    pids: int | None = Field(
        default=None,
        ge=16,
        le=1_000_000,
        description="Most processes and threads at once; a build gets at least 1024.",
    )
    processes: dict[str, int] | None = Field(
        default=None,
        description="Replicas per Procfile process type (`web = 2`, `worker = 1`; 0 stops "
        "a type); an environment's table overrides `[app]`'s type by type. Unset types "
        "run 1 replica; `tristage scale` overrides both at run time.",
        json_schema_extra={"key": "TYPE"},
    )

    @field_validator("processes")
    @classmethod
    def _processes(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        for name, count in (v or {}).items():
            if not PROCESS_TYPE_RE.match(name):
                raise ValueError(
                    f"{name!r} is not a process type (lowercase letters, digits, '_' and "
                    "'-', as in the Procfile)"
                )
            if isinstance(count, bool) or not 0 <= count <= MAX_REPLICAS:
                raise ValueError(f"{name} = {count!r}: replicas must be 0 to {MAX_REPLICAS}")
            if name == "release":
                raise ValueError("'release' runs once per deployment; it has no replicas")
            if name == "web" and count < 1:
                raise ValueError("web = 0: web needs at least 1 replica (it serves the release)")
        return v

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | None) -> str | None:
        if v is not None:
            parse_size(v)
        return v

    @field_validator("health_path")
    @classmethod
    def _health(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError("must start with '/', e.g. '/health'")
        return v


class AppConfig(ProcessSettings):
    """How the app is built, migrated, started and checked: the defaults of every
    environment (docs/deploys.md)."""

    health_path: str | None = "/"
    health_timeout: float | None = Field(default=30.0, gt=0, le=600)
    memory: str | None = "1G"
    cpus: float | None = Field(default=1.0, gt=0, le=256)
    pids: int | None = Field(default=512, ge=16, le=1_000_000)
    keep_warm: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Previous production releases kept running, for an instant rollback.",
    )
    drain_seconds: float = Field(
        default=5.0,
        ge=0,
        le=600,
        description="Seconds a replaced release keeps serving its in-flight requests before "
        "it is stopped.",
    )
    redeploy_on_change: bool = Field(
        default=False,
        description="Redeploy an environment's live deployment when one of its variables "
        "changes (`env set`, `env rm`, `env import`); otherwise the change waits for the next "
        "deploy or `tristage redeploy`.",
    )


class EnvironmentConfig(ProcessSettings):
    """One environment (`NAME`: lowercase letters, digits and '-'). The process keys
    of `[app]` may be set here too; an unset one takes the `[app]` value."""

    tier: Tier = Field(
        description="`development`, `preview` or `production`; exactly one environment "
        "may be production."
    )
    branches: list[BranchPattern] = Field(
        default_factory=list,
        description="Branch names and globs (`dev`, `feature/*`, `*`) deployed here; the "
        "rules of all environments match in file order and the first match wins.",
    )
    shares: str | None = Field(
        default=None,
        description="Use another environment's variables and data store (the `simple` "
        "preset's preview shares development); never with production.",
    )
    required: list[VarName] = Field(
        default_factory=list,
        description="Variables that must be set (and not empty) before a deploy.",
    )
    database: DatabaseConfig = Field(
        default_factory=DatabaseConfig, description="The environment's data store."
    )
    backups: BackupConfig = Field(
        default_factory=BackupConfig, description="Scheduled backups of the data store."
    )
    refresh: str | None = Field(
        default=None,
        description="A cron expression (e.g. `0 4 * * 1`, Mondays 04:00): refill this "
        "environment's data store from production by a sanitized clone, run by "
        "`tristage up`; never on production.",
    )

    @field_validator("refresh")
    @classmethod
    def _refresh_cron(cls, v: str | None) -> str | None:
        return v if v is None else _cron_or_error(v)

    webhooks: dict[str, WebhookSource] = Field(
        default_factory=dict,
        description="Webhook sources by name (the `SOURCE` of the ingest path).",
        json_schema_extra={"key": "SOURCE"},
    )
    cron: dict[str, str] = Field(
        default_factory=dict,
        description="Scheduled jobs: a cron expression in local time (quoted, e.g. "
        '`"0 3 * * *"`) to the command run in a fresh process of the live release '
        "(`tristage cron ls`, `tristage cron runs`).",
        json_schema_extra={"key": "SCHEDULE"},
    )

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: dict[str, str]) -> dict[str, str]:
        from croniter import croniter

        for schedule, command in v.items():
            if not croniter.is_valid(schedule):
                raise ValueError(
                    f"{schedule!r} is not a cron expression (e.g. '0 3 * * *' for daily at 03:00)"
                )
            if not command.strip():
                raise ValueError(f"{schedule!r}: the command is empty")
        return v

    domains: list[str] = Field(
        default_factory=list,
        description="Public host names of the environment's live deployment, e.g. "
        '`["shop.example.com", "www.shop.example.com"]`: the first is canonical (the app\'s '
        "`TRISTAGE_URL`), the production edge redirects the others to it (docs/server.md). "
        "A name serves one environment; `*.localhost` names exist already.",
    )
    branch_domain: str | None = Field(
        default=None,
        description="A host pattern for the environment's branch and deployment hosts, with "
        "`{branch}` in its first label, e.g. `{branch}.preview.shop.example.com`: branch "
        "`feature/x` is served at `feature-x.preview...`, a deployment at `ID.preview...`.",
    )

    @field_validator("domains")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for name in v:
            host = check_hostname(name)
            if host in out:
                raise ValueError(f"{host!r} is listed twice")
            out.append(host)
        return out

    @field_validator("branch_domain")
    @classmethod
    def _branch_domain(cls, v: str | None) -> str | None:
        return None if v is None else check_pattern(v)

    webhook_retain_days: float = Field(
        default=30.0,
        gt=0,
        le=36500,
        description="Days the bodies of this environment's finished webhook deliveries are "
        "kept (a source's `retain_days` overrides it); after that only a stub stays.",
    )

    protect: Literal["password", "token"] | None = Field(
        default=None,
        description="Require sign-in on this environment's hosts (its own, its branch and "
        "deployment hosts): `password` (the environment's secret variable "
        "`TRISTAGE_ACCESS_PASSWORD`, or a tristage API token) or `token` (a tristage API token "
        "only); `false` or unset: public. Webhook ingest paths stay open. Refused on the "
        "production tier unless `protect_production = true`.",
    )
    sleep_after: str | None = Field(
        default=None,
        description="Stop a branch or pull-request preview release of this environment after "
        "this long without a request (`90s`, `30m`, `2h`); the next request to its host is "
        "held while it starts again. The environment's own host and production never "
        "sleep.",
    )

    @field_validator("sleep_after")
    @classmethod
    def _sleep_after(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    protect_production: bool = Field(
        default=False,
        description="Allow `protect` on the production tier (production is public otherwise).",
    )

    @field_validator("protect", mode="before")
    @classmethod
    def _protect(cls, v: object) -> object:
        return None if v is False else v

    @model_validator(mode="after")
    def _public_production(self) -> EnvironmentConfig:
        if self.sleep_after and self.tier == Tier.production:
            raise ValueError("sleep_after: production never sleeps; remove it")
        if self.protect and self.tier == Tier.production and not self.protect_production:
            raise ValueError(
                "protect: production stays public; remove 'protect', or set "
                "'protect_production = true' to require sign-in on production too"
            )
        return self


class ProjectSection(Strict):
    """The project."""

    name: str = Field(
        description="Lowercase letters, digits and '-', starting with a letter, at most 40 "
        "characters; it becomes the host name (`myapp.localhost`)."
    )
    preset: Literal["simple", "professional", "custom"] = Field(
        default="custom",
        description="The preset the file was written from (informational).",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                "must be lowercase letters, digits and '-', starting with a letter, "
                "at most 40 characters (it becomes a host name)"
            )
        return v


class Policy(Strict):
    """How strict `tristage check` and the pre-deploy rules are (docs/variables.md)."""

    strict: bool = Field(
        default=False,
        description="Equal `CSRF_SECRET`/`SESSION_SECRET` values across environments are an "
        "error, not a warning.",
    )
    rotation_days: int = Field(
        default=90, ge=1, description="Secrets last set longer ago than this are reported."
    )
    sandbox: Literal["on", "off"] = Field(
        default="on",
        description="`off` lets preview and production run without the sandbox where it "
        "cannot run (reported by `tristage check`, audited at every start).",
    )


class MonitorConfig(Strict):
    """Request metrics, alerts and automatic rollback (docs/monitoring.md)."""

    auto_rollback: bool = Field(
        default=True,
        description="Roll a just-live production deployment back when it fails within "
        "`watch_seconds`.",
    )
    error_rate: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="Failing: (5xx + upstream errors) / requests over `window_seconds` "
        "reaches this.",
    )
    min_requests: int = Field(
        default=20, ge=1, description="A window with fewer requests decides nothing."
    )
    window_seconds: float = Field(
        default=60.0,
        gt=0,
        le=86400,
        description="The error rate is measured over this many seconds.",
    )
    watch_seconds: float = Field(
        default=600.0,
        ge=0,
        le=604800,
        description="Automatic rollback only this long after a deployment went live.",
    )
    alert_url: str = Field(
        default="",
        description='Alerts are also POSTed here as JSON (an http(s) URL; "" = not sent).',
    )
    health_interval: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Seconds between health probes of each live release.",
    )
    health_failures: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Failed health probes in a row that raise an alert.",
    )

    @field_validator("alert_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not re.match(r"^https?://[^\s/]+(/\S*)?\Z", v):
            raise ValueError('must be an http:// or https:// URL, or "" for none')
        return v


class CleanupConfig(Strict):
    """Which old deployments `tristage gc` and the scheduler remove, with their
    artifacts and logs (docs/deploys.md). The live deployment of every environment,
    deployments in progress and production's rollback targets are always kept."""

    keep_per_environment: int = Field(
        default=10,
        ge=1,
        le=10_000,
        description="The newest deployments kept per environment, of those that take its "
        "host (its exact branches, promotes).",
    )
    keep_per_branch: int = Field(
        default=3,
        ge=1,
        le=10_000,
        description="The newest deployments kept per branch a glob caught (`feature/*`, "
        "`*`), within `branch_max_age_days`.",
    )
    keep_production: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Previous production deployments kept for `tristage rollback`.",
    )
    branch_max_age_days: float = Field(
        default=14.0,
        gt=0,
        le=3650,
        description="Deployments of branches a glob caught (`feature/*`, `*`) older than "
        "this are removed, the latest of the branch included (its branch host goes).",
    )
    interval_hours: float = Field(
        default=6.0,
        gt=0,
        le=720,
        description="How often the control plane's scheduler runs the cleanup.",
    )

    def policy(self) -> CleanupPolicy:
        return CleanupPolicy(
            keep_per_environment=self.keep_per_environment,
            keep_per_branch=self.keep_per_branch,
            keep_production=self.keep_production,
            branch_max_age_days=self.branch_max_age_days,
        )


class PipelineConfig(Strict):
    """The top-level tables of `tristage.toml`."""

    project: ProjectSection = Field(description="The project: its name and preset.")
    app: AppConfig = Field(
        default_factory=AppConfig,
        description="Process settings, the defaults of every environment.",
    )
    policy: Policy = Field(default_factory=Policy, description="Rule strictness.")
    monitor: MonitorConfig = Field(
        default_factory=MonitorConfig,
        description="Request metrics, alerts and automatic rollback.",
    )
    cleanup: CleanupConfig = Field(
        default_factory=CleanupConfig,
        description="Removal of old deployments, their artifacts and logs.",
    )
    environments: dict[str, EnvironmentConfig] = Field(
        description="The environments by name (at least one).",
        json_schema_extra={"key": "NAME"},
    )
    sanitize: dict[str, str | SanitizeTable | SanitizeFiles] = Field(
        default_factory=dict,
        description="Clones from production: one transform per column, "
        '`"table.column" = "TRANSFORM"` with TRANSFORM one of `email`, `name`, `phone`, '
        "`address`, `scrub`, `null`, `hash`, `redact`, `keep`, `fake:<provider>`, "
        '`{ json = { "$.path" = "TRANSFORM" } }` or `{ keep = true, reason = "…" }` '
        '(docs/data.md); and `[sanitize.files] copy = ["public/**"]`, the files of the '
        "data directory a clone copies (default: none).",
    )

    @field_validator("sanitize", mode="before")
    @classmethod
    def _sanitize_files(cls, v: Any) -> Any:
        """`[sanitize.files]` is the files rule, checked on its own (clear errors)."""
        if not isinstance(v, dict) or "files" not in v:
            return v
        raw = v["files"]
        example = '[sanitize.files] copy = ["public/**"]'
        if not isinstance(raw, dict):
            raise ValueError(f"[sanitize.files] must be a table, e.g. {example}")
        unknown = sorted(set(raw) - {"copy"})
        if unknown:
            raise ValueError(
                f"[sanitize.files]: unknown key(s) {', '.join(unknown)}; its one key is "
                f"copy, e.g. {example}"
            )
        copy = raw.get("copy", [])
        if not isinstance(copy, list) or not all(isinstance(p, str) for p in copy):
            raise ValueError(
                f"[sanitize.files] copy must be a list of glob patterns, e.g. {example}"
            )
        from . import data_files

        try:
            data_files.check_patterns(copy)
        except data_files.GlobError as exc:
            raise ValueError(f"[sanitize.files] copy: {exc}") from None
        return {**v, "files": SanitizeFiles.model_validate(raw)}

    @property
    def sanitize_files(self) -> SanitizeFiles | None:
        """`[sanitize.files]`, if given."""
        v = self.sanitize.get("files")
        return v if isinstance(v, SanitizeFiles) else None

    @property
    def sanitize_columns(self) -> dict[str, str | SanitizeTable]:
        """The column rules of `[sanitize]` (without `[sanitize.files]`)."""
        return {k: v for k, v in self.sanitize.items() if not isinstance(v, SanitizeFiles)}

    @model_validator(mode="after")
    def _cross_checks(self) -> PipelineConfig:
        problems: list[str] = []
        if not self.environments:
            raise ValueError("declare at least one environment")
        for ref, rule in self.sanitize.items():
            if isinstance(rule, SanitizeFiles) and ref != "files":
                raise ValueError(
                    f"[sanitize] {ref!r}: 'copy' belongs in [sanitize.files] "
                    '(copy = ["public/**"]), not in a column rule'
                )
        for name, env in self.environments.items():
            if not NAME_RE.match(name):
                problems.append(
                    f"environments.{name}: environment names are lowercase letters, digits and '-'"
                )
            if env.shares is not None:
                other = self.environments.get(env.shares)
                if other is None:
                    problems.append(
                        f"environments.{name}.shares: no environment named {env.shares!r} "
                        f"(declared: {', '.join(self.environments)})"
                    )
                elif other.shares is not None:
                    problems.append(
                        f"environments.{name}.shares: {env.shares!r} itself shares "
                        f"{other.shares!r}; share the owning environment directly"
                    )
                elif other.tier == Tier.production or env.tier == Tier.production:
                    problems.append(
                        f"environments.{name}.shares: production never shares its instances"
                    )
            if env.refresh is not None and env.tier == Tier.production:
                problems.append(
                    f"environments.{name}.refresh: production is never refreshed from "
                    "another environment; remove it"
                )
            elif env.refresh is not None and env.shares is not None:
                problems.append(
                    f"environments.{name}.refresh: {name} shares {env.shares}'s data store; "
                    f"set refresh on {env.shares}"
                )
        problems += self._domain_problems()
        prods = [n for n, e in self.environments.items() if e.tier == Tier.production]
        if len(prods) > 1:
            problems.append(
                f"environments: only one environment may have tier 'production' (found {prods})"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _domain_problems(self) -> list[str]:
        """A host name or branch pattern claimed by two environments."""
        problems: list[str] = []
        claimed: dict[str, str] = {}
        for name, env in self.environments.items():
            for i, host in enumerate(env.domains):
                other = claimed.setdefault(host, name)
                if other != name:
                    problems.append(
                        f"environments.{name}.domains[{i}]: {host!r} is also a domain of "
                        f"environment {other!r} (a host serves one environment: remove it "
                        "from one of them)"
                    )
        patterns: dict[str, str] = {}
        for name, env in self.environments.items():
            if env.branch_domain is None:
                continue
            other = patterns.setdefault(env.branch_domain, name)
            if other != name:
                problems.append(
                    f"environments.{name}.branch_domain: {env.branch_domain!r} is also the "
                    f"branch_domain of environment {other!r} (give each its own)"
                )
        return problems

    # -- derived views -------------------------------------------------
    def env(self, name: str) -> EnvironmentConfig:
        from ..errors import NotFound

        try:
            return self.environments[name]
        except KeyError:
            raise NotFound(
                f"no environment named {name!r}",
                f"declared environments: {', '.join(self.environments)}",
            ) from None

    @property
    def production(self) -> str | None:
        for name, env in self.environments.items():
            if env.tier == Tier.production:
                return name
        return None

    def public_names(self) -> dict[str, PublicNames]:
        """Each environment's public host names (empty ones left out)."""
        return {
            name: PublicNames(tuple(env.domains), env.branch_domain)
            for name, env in self.environments.items()
            if env.domains or env.branch_domain
        }

    def owner(self, name: str) -> str:
        """The environment whose instances (variables, data store) `name` uses."""
        return self.env(name).shares or name

    def settings(self, name: str) -> ProcessSettings:
        """Process settings of an environment, with `[app]` defaults filled in."""
        env = self.env(name)
        merged: dict[str, Any] = {}
        for key in ProcessSettings.model_fields:
            value = getattr(env, key)
            merged[key] = value if value is not None else getattr(self.app, key)
        if env.processes is not None and self.app.processes is not None:
            merged["processes"] = {**self.app.processes, **env.processes}
        return ProcessSettings(**merged)


# ---------------------------------------------------------------------------
# Loading with precise errors


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-after", "function-before", "function-wrap")):
            continue
        else:
            out += ("." if out else "") + part
    return out


def _problems(err: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    for e in err.errors():
        path = _loc(tuple(e["loc"]))
        msg = e["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                msg = msg[len(prefix) :]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling against docs/configuration.md)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] in ("literal_error", "enum"):
            msg = f"{msg}; got {e.get('input')!r}"
        if not path and msg.startswith("environments"):
            # cross-check problems carry their own path
            for part in msg.split("; "):
                p, _, m = part.partition(": ")
                problems.append(Problem(p, m))
            continue
        problems.append(Problem(path, msg))
    return problems


def parse_config(text: str, source: str = FILE_NAME) -> PipelineConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [Problem("", f"not valid TOML: {exc}")]) from None
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _problems(exc)) from None


def load_config(path: Path) -> PipelineConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        from ..errors import NotFound

        raise NotFound(
            f"no {FILE_NAME} at {path.parent}",
            "run 'tristage init' in your project's git working copy",
        ) from None
    return parse_config(text, str(path))


def find_config(start: Path) -> Path | None:
    for d in [start, *start.parents]:
        candidate = d / FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def procfile_entries(text: str) -> dict[str, str]:
    """A Procfile's `type: command` lines (the first of each type; comments skipped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        key, sep, cmd = line.partition(":")
        if sep and key.strip() and cmd.strip():
            out.setdefault(key.strip(), cmd.strip())
    return out


def procfile_web(root: Path) -> str | None:
    """The `web:` line of a Procfile in `root`, if any."""
    procfile = root / "Procfile"
    if not procfile.is_file():
        return None
    return procfile_entries(procfile.read_text(encoding="utf-8")).get("web")
