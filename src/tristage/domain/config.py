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
from .limits import parse_size

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


class Tier(StrEnum):
    development = "development"
    preview = "preview"
    production = "production"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseConfig(Strict):
    """The data store of an environment; the app receives it as ``DATABASE_URL``."""

    engine: Literal["sqlite", "postgres"] = "sqlite"
    # sqlite: a file path (default: under the platform home); postgres: a server URL
    # such as ``postgresql://127.0.0.1:5432`` in which tristage creates the environment's database.
    url: str | None = None
    # postgres only: the database name (default: ``tristage_<project>_<environment>``).
    name: str | None = None


class Retention(Strict):
    daily: int = Field(default=7, ge=0, le=3650)
    weekly: int = Field(default=4, ge=0, le=520)
    monthly: int = Field(default=12, ge=0, le=1200)


class BackupConfig(Strict):
    # a cron expression; None = no scheduled backups
    schedule: str | None = None
    keep: Retention = Field(default_factory=Retention)
    encrypt: bool = False

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


class WebhookSource(Strict):
    kind: Literal["clerk", "stripe", "standard"]
    # the variable that holds the signing secret in this environment
    secret_var: str
    # the app path deliveries are forwarded to
    path: str = "/webhooks"
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    # retry schedule in seconds after the first attempt (default close to Svix's)
    retry_schedule: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
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


class ProcessSettings(Strict):
    """Settings an environment may override from the top-level ``[app]`` table."""

    web: str | None = None  # falls back to the Procfile's web: line
    build: str | None = None
    migrate: str | None = None
    health_path: str | None = None
    health_timeout: float | None = Field(default=None, gt=0, le=600)
    memory: str | None = Field(
        default=None,
        description="memory limit of each process of a release or one-off, e.g. '512M', '1G'",
    )
    cpus: float | None = Field(
        default=None, gt=0, le=256, description="CPU limit in cores, e.g. 0.5 or 2"
    )
    pids: int | None = Field(
        default=None, ge=16, le=1_000_000, description="most processes and threads at once"
    )

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
    health_path: str | None = "/"
    health_timeout: float | None = Field(default=30.0, gt=0, le=600)
    memory: str | None = "1G"
    cpus: float | None = Field(default=1.0, gt=0, le=256)
    pids: int | None = Field(default=512, ge=16, le=1_000_000)
    # how many previous production releases are kept running for instant rollback
    keep_warm: int = Field(default=2, ge=0, le=10)
    # seconds a replaced release keeps serving in-flight requests before it is stopped
    drain_seconds: float = Field(default=5.0, ge=0, le=600)


class EnvironmentConfig(ProcessSettings):
    tier: Tier
    branches: list[BranchPattern] = Field(default_factory=list)
    # `simple` preset: share variables and data store with another environment
    shares: str | None = None
    required: list[VarName] = Field(default_factory=list)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    backups: BackupConfig = Field(default_factory=BackupConfig)
    webhooks: dict[str, WebhookSource] = Field(default_factory=dict)


class ProjectSection(Strict):
    name: str
    preset: Literal["simple", "professional", "custom"] = "custom"

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
    strict: bool = False
    rotation_days: int = Field(default=90, ge=1)
    sandbox: Literal["on", "off"] = Field(
        default="on",
        description=(
            "'off' lets preview and production run without the sandbox where it cannot "
            "run (reported by `tristage check`, audited at every start)"
        ),
    )


class MonitorConfig(Strict):
    """Request metrics, alerts and automatic rollback (`[monitor]`, docs/monitoring.md)."""

    # roll a just-live production deployment back when it fails within `watch_seconds`
    auto_rollback: bool = True
    # failing: (5xx + upstream errors) / requests over `window_seconds` reaches this
    error_rate: float = Field(default=0.2, gt=0, le=1)
    # fewer requests than this in the window decide nothing
    min_requests: int = Field(default=20, ge=1)
    window_seconds: float = Field(default=60.0, gt=0, le=86400)
    watch_seconds: float = Field(default=600.0, ge=0, le=604800)
    # alerts are also POSTed as JSON here ("" = not sent)
    alert_url: str = ""
    # seconds between health probes of each live release
    health_interval: float = Field(default=10.0, gt=0, le=3600)
    # failed health probes in a row that raise an alert
    health_failures: int = Field(default=3, ge=1, le=1000)

    @field_validator("alert_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not re.match(r"^https?://[^\s/]+(/\S*)?\Z", v):
            raise ValueError('must be an http:// or https:// URL, or "" for none')
        return v


class PipelineConfig(Strict):
    project: ProjectSection
    app: AppConfig = Field(default_factory=AppConfig)
    policy: Policy = Field(default_factory=Policy)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    environments: dict[str, EnvironmentConfig]
    # sanitization rules for clones from production: "table.column" -> transform
    sanitize: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _cross_checks(self) -> PipelineConfig:
        problems: list[str] = []
        if not self.environments:
            raise ValueError("declare at least one environment")
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
        prods = [n for n, e in self.environments.items() if e.tier == Tier.production]
        if len(prods) > 1:
            problems.append(
                f"environments: only one environment may have tier 'production' (found {prods})"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

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
        if not path and "; " in msg and msg.startswith("environments"):
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


def procfile_web(root: Path) -> str | None:
    """The `web:` line of a Procfile in `root`, if any."""
    procfile = root / "Procfile"
    if not procfile.is_file():
        return None
    for line in procfile.read_text(encoding="utf-8").splitlines():
        key, sep, cmd = line.partition(":")
        if sep and key.strip() == "web" and cmd.strip():
            return cmd.strip()
    return None
