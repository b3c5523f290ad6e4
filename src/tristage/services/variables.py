"""Variables and secrets per environment: storage, resolution, rules, redaction.

Secret values are sealed with the platform's secrets box (AES-256-GCM), each bound
to its variable's identity (project, scope, branch, name): the state store never
holds a secret in the clear. Every set/rm and every reveal of a production secret
writes an audit event (names only, never values).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from ..domain import dotenv
from ..domain.config import PipelineConfig, Tier
from ..domain.redaction import Redactor, build_redactor
from ..domain.rules import ERROR, Context, Finding, RuleViolation, run
from ..domain.variables import (
    SHARED,
    Entry,
    Resolved,
    default_build,
    looks_secret,
    resolve,
    resolve_all,
    scope_label,
    valid_name,
)
from ..edges.store import Store
from ..errors import Conflict, NotFound, UsageError

if TYPE_CHECKING:
    from ..api import Tristage
    from ..domain.deployments import Deployment

__all__ = ["ImportReport", "PullResult", "RuleViolation", "SetResult", "VariableService"]

Change = Literal["added", "changed", "unchanged"]
_BRANCH_RE = re.compile(r"^[A-Za-z0-9._/-]+\Z")


@dataclass(frozen=True)
class SetResult:
    name: str
    scope: str
    branch: str | None
    change: Change
    secret: bool
    build: bool
    # rule findings about this variable once written (`tristage check`'s, of its scope)
    findings: tuple[Finding, ...] = ()

    @property
    def where(self) -> str:
        return scope_label(self.scope, self.branch)


@dataclass(frozen=True)
class ImportReport:
    results: list[SetResult]

    def names(self, change: Change) -> list[str]:
        return sorted({r.name for r in self.results if r.change == change})

    def as_json(self) -> dict[str, list[str]]:
        return {c: self.names(c) for c in ("added", "changed", "unchanged")}


@dataclass(frozen=True)
class PullResult:
    text: str
    names: list[str]
    secrets: list[str]
    interpolated: list[str]  # values a ${NAME}-expanding loader would change


def _context(project: str, scope: str, branch: str | None, name: str) -> str:
    return f"tristage/variable/{project}/{scope}/{branch or ''}/{name}"


class VariableService:
    def __init__(self, api: Tristage) -> None:
        self.api = api

    @property
    def store(self) -> Store:
        return self.api.store

    # -- reading -----------------------------------------------------------
    def _config(self, project: str) -> PipelineConfig:
        return self.api.config_for(project)

    def _entry(self, project: str, row: dict[str, Any]) -> Entry:
        branch = row["branch"] or None
        if row["secret"]:
            value = self.api.secret_box.decrypt_text(
                bytes(row["sealed"]), _context(project, row["scope"], branch, row["name"])
            )
        else:
            value = row["value"]
        return Entry(
            name=row["name"],
            scope=row["scope"],
            branch=branch,
            value=value,
            secret=bool(row["secret"]),
            build=bool(row["build"]),
            set_at=row["set_at"],
        )

    def entries(self, project: str, environment: str | None = None) -> list[Entry]:
        """Stored variables (values decrypted), of one environment's scope if given."""
        self._config(project)  # the project must exist
        sql = "SELECT * FROM variables WHERE project=?"
        params: list[Any] = [project]
        if environment is not None:
            sql += " AND scope=?"
            params.append(self._config(project).owner(environment))
        sql += " ORDER BY name, scope, branch"
        return [self._entry(project, r) for r in self.store.query(sql, params)]

    def resolve(
        self, project: str, environment: str, branch: str | None = None
    ) -> dict[str, Resolved]:
        """What a deployment of `environment` from `branch` receives, with each value's source."""
        config = self._config(project)
        config.env(environment)
        return resolve(config, self.entries(project), environment, branch)

    def get(
        self,
        project: str,
        name: str,
        environment: str,
        branch: str | None = None,
        *,
        reveal: bool = False,
    ) -> Resolved:
        resolved = self.resolve(project, environment, branch).get(name)
        if resolved is None:
            raise NotFound(
                f"{name} is not set for {environment}",
                f"set it with: tristage env set {name} --env {environment}",
            )
        if reveal and resolved.secret:
            self._audit_reveal(project, environment, [name], via="get")
        return resolved

    def _audit_reveal(self, project: str, environment: str, names: list[str], via: str) -> None:
        if self._config(project).env(environment).tier == Tier.production and names:
            self.api.audit.record(
                "env.reveal",
                project=project,
                environment=environment,
                target=",".join(names),
                details={"via": via, "names": names},
            )

    # -- writing -----------------------------------------------------------
    def _scopes(
        self,
        config: PipelineConfig,
        environments: Sequence[str],
        all_environments: bool,
        branch: str | None,
    ) -> list[str]:
        if all_environments:
            if environments:
                raise UsageError(
                    "give either --env or --all, not both",
                    "--all sets the value every environment shares; --env E sets one",
                )
            if branch:
                raise UsageError(
                    "--branch needs an environment: a branch value belongs to one environment",
                    "use --env E --branch B",
                )
            return [SHARED]
        if not environments:
            raise UsageError(
                "no environment given", "pass --env E (repeatable) or --all for every environment"
            )
        if branch is not None and not _BRANCH_RE.match(branch):
            raise UsageError(
                f"{branch!r} is not a branch name", "use a git branch name, e.g. feature/login"
            )
        scopes: list[str] = []
        for env in environments:
            cfg = config.env(env)
            if cfg.shares:
                raise UsageError(
                    f"{env} shares {cfg.shares}'s variables (preset simple)",
                    f"set it on {cfg.shares}: --env {cfg.shares}",
                )
            if env not in scopes:
                scopes.append(env)
        return scopes

    def _write(
        self,
        project: str,
        name: str,
        value: str,
        scope: str,
        branch: str | None,
        secret: bool | None,
        build: bool | None,
        via: str,
    ) -> tuple[SetResult, bool]:
        """Insert or update one variable (inside the caller's transaction).

        Returns the result and whether a plain value was replaced by a secret one.
        """
        now = time.time()
        row = self.store.query_one(
            "SELECT * FROM variables WHERE project=? AND scope=? AND branch=? AND name=?",
            (project, scope, branch or "", name),
        )
        old = self._entry(project, row) if row else None
        is_secret = (
            secret if secret is not None else (old.secret if old else looks_secret(name, value))
        )
        is_build = build if build is not None else (old.build if old else default_build(name))
        sealed = (
            self.api.secret_box.encrypt_text(value, _context(project, scope, branch, name))
            if is_secret
            else None
        )
        plain = None if is_secret else value
        if row is None or old is None:
            change: Change = "added"
            self.store.execute(
                "INSERT INTO variables (project, scope, branch, name, secret, build, value,"
                " sealed, set_at, updated_at, set_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    project, scope, branch or "", name, int(is_secret), int(is_build),
                    plain, sealed, now, now, self.api.actor,
                ),
            )  # fmt: skip
        else:
            same_value = old.value == value
            if same_value and old.secret == is_secret and old.build == is_build:
                change = "unchanged"
            else:
                change = "changed"
                self.store.execute(
                    "UPDATE variables SET secret=?, build=?, value=?, sealed=?, set_at=?,"
                    " updated_at=?, set_by=? WHERE id=?",
                    (
                        int(is_secret), int(is_build), plain, sealed,
                        old.set_at if same_value else now, now, self.api.actor, row["id"],
                    ),
                )  # fmt: skip
        result = SetResult(name, scope, branch, change, is_secret, is_build)
        if change != "unchanged":
            self.api.audit.record(
                "env.set",
                project=project,
                environment=None if scope == SHARED else scope,
                target=name,
                details={
                    "scope": scope_label(scope, branch),
                    "branch": branch,
                    "secret": is_secret,
                    "build": is_build,
                    "change": change,
                    "via": via,
                },
            )
        return result, bool(old and not old.secret and is_secret)

    def set(
        self,
        project: str,
        name: str,
        value: str,
        *,
        environments: Sequence[str] = (),
        all_environments: bool = False,
        branch: str | None = None,
        secret: bool | None = None,
        build: bool | None = None,
        strict: bool = False,
    ) -> list[SetResult]:
        """Set `name` in each environment (or for all); `secret`/`build` None = infer.

        The rules run on the new value at once: their findings about it come back in each
        result; with `strict`, a rule error refuses the change and nothing is written.
        """
        if not valid_name(name):
            raise UsageError(
                f"{name!r} is not a variable name", "use letters, digits and '_' (e.g. API_URL)"
            )
        if "\x00" in value:
            raise UsageError(
                f"the value of {name} contains a NUL byte, which no process accepts",
                "remove the NUL byte (a binary value can be stored base64-encoded)",
            )
        scopes = self._scopes(self._config(project), environments, all_environments, branch)
        return self._write_many(
            project, {name: value}, scopes, branch, secret, build, "set", strict=strict
        )

    def _write_many(
        self,
        project: str,
        values: dict[str, str],
        scopes: Sequence[str],
        branch: str | None,
        secret: bool | None,
        build: bool | None,
        how: str,
        *,
        strict: bool = False,
    ) -> list[SetResult]:
        """Write every value into every scope in one transaction, run the rules on what was
        written (a rule error with `strict` rolls it all back), then scrub if needed."""
        results: list[SetResult] = []
        scrub = False
        with self.store.transaction():
            for scope in scopes:
                for name, value in values.items():
                    result, converted = self._write(
                        project, name, value, scope, branch, secret, build, how
                    )
                    results.append(result)
                    scrub = scrub or converted
            results = self._with_findings(project, results, branch)
            errors = [f for r in results for f in r.findings if f.severity == ERROR]
            if strict and errors:
                raise RuleViolation(errors[0].environment, errors, action="change refused")
        if scrub:  # no copy of the plain value left at rest (a busy reader: the next writes)
            self.store.scrub()
        return results

    def import_values(
        self,
        project: str,
        values: dict[str, str],
        *,
        environments: Sequence[str] = (),
        all_environments: bool = False,
        branch: str | None = None,
        secret: bool | None = None,
        build: bool | None = None,
    ) -> ImportReport:
        """Set many variables at once, all or nothing."""
        bad = [n for n in values if not valid_name(n)]
        if bad:
            raise UsageError(
                f"not variable names: {', '.join(bad)}",
                "use letters, digits and '_' (e.g. API_URL); nothing was imported",
            )
        scopes = self._scopes(self._config(project), environments, all_environments, branch)
        return ImportReport(
            self._write_many(project, values, scopes, branch, secret, build, "import")
        )

    def import_dotenv(
        self, project: str, text: str, source: str = ".env", **kwargs: Any
    ) -> ImportReport:
        return self.import_values(project, dotenv.parse(text, source), **kwargs)

    def remove(
        self,
        project: str,
        name: str,
        *,
        environments: Sequence[str] = (),
        all_environments: bool = False,
        branch: str | None = None,
    ) -> list[str]:
        """Remove `name` from each scope; returns where it was removed. NotFound if nowhere."""
        config = self._config(project)
        scopes = self._scopes(config, environments, all_environments, branch)
        removed: list[str] = []
        with self.store.transaction():
            for scope in scopes:
                n = self.store.execute(
                    "DELETE FROM variables WHERE project=? AND scope=? AND branch=? AND name=?",
                    (project, scope, branch or "", name),
                )
                if n:
                    removed.append(scope_label(scope, branch))
                    self.api.audit.record(
                        "env.rm",
                        project=project,
                        environment=None if scope == SHARED else scope,
                        target=name,
                        details={"scope": scope_label(scope, branch), "branch": branch},
                    )
        if not removed:
            where = ", ".join(scope_label(s, branch) for s in scopes)
            raise NotFound(f"{name} is not set in {where}", "see 'tristage env ls'")
        return removed

    # -- local files -------------------------------------------------------
    def pull(
        self,
        project: str,
        environment: str,
        branch: str | None = None,
        *,
        allow_production_secrets: bool = False,
    ) -> PullResult:
        """The dotenv text of an environment's resolved variables (secrets in the clear)."""
        config = self._config(project)
        resolved = self.resolve(project, environment, branch)
        secrets = [n for n, r in resolved.items() if r.secret]
        production = config.env(environment).tier == Tier.production
        if production and secrets and not allow_production_secrets:
            raise Conflict(
                f"refusing to write {len(secrets)} production secret"
                f"{'s' if len(secrets) != 1 else ''} to a file ({', '.join(secrets)})",
                "production secrets do not belong on a workstation; pass --yes if you must "
                "(the reveal is audited)",
            )
        values = {n: r.value for n, r in resolved.items()}
        header = (
            f"{environment} variables of {project}"
            + (f" (branch {branch})" if branch else "")
            + ", written by 'tristage env pull'. Do not commit this file."
        )
        text = dotenv.render(values, header)
        if production:
            self._audit_reveal(project, environment, secrets, via="pull")
        return PullResult(text, list(values), secrets, dotenv.interpolated(values))

    def changed_scopes(self, results: Sequence[SetResult]) -> list[str]:
        return [r.scope for r in results if r.change != "unchanged"]

    def redeploy_after(self, project: str, scopes: Sequence[str]) -> list[Deployment]:
        """With `[app] redeploy_on_change`, redeploy the live deployment of every environment
        that changed `scopes` reach (none when the setting is off)."""
        config = self._config(project)
        if not config.app.redeploy_on_change:
            return []
        envs = {env for scope in scopes for env in self._reach(config, scope)}
        deploys = self.api.deploys
        return [
            deploys.redeploy(project, environment=env)
            for env in sorted(envs)
            if deploys.live(project, env) is not None
        ]

    @staticmethod
    def _reach(config: PipelineConfig, scope: str) -> frozenset[str]:
        """The environments a value in `scope` reaches (those sharing it included)."""
        if scope == SHARED:
            return frozenset(config.environments)
        return frozenset({scope} | {n for n, e in config.environments.items() if e.shares == scope})

    # -- rules -------------------------------------------------------------
    def _with_findings(
        self, project: str, results: list[SetResult], branch: str | None
    ) -> list[SetResult]:
        """Each result with the findings about its variable in the environments it reaches."""
        config = self._config(project)
        reach = {r.scope: self._reach(config, r.scope) for r in results}
        envs = sorted({env for reached in reach.values() for env in reached})
        found = [f for env in envs for f in self.check(project, env, branch)]
        return [
            replace(
                r,
                findings=tuple(
                    f for f in found if f.variable == r.name and f.environment in reach[r.scope]
                ),
            )
            for r in results
        ]

    def check(
        self,
        project: str,
        environment: str | None = None,
        branch: str | None = None,
        *,
        now: float | None = None,
    ) -> list[Finding]:
        """Every rule finding (of one environment if given; `branch` narrows its values)."""
        config = self._config(project)
        if environment is not None:
            config.env(environment)
        values = resolve_all(
            config, self.entries(project), {environment: branch} if environment else None
        )
        ctx = Context(
            config=config,
            values=values,
            now=time.time() if now is None else now,
            databases=self.api.data.stores.auth_facts(project, environment),
        )
        return run(ctx, environment)

    # -- the deploy engine's contract ----------------------------------------
    def runtime_env(self, project: str, environment: str, branch: str | None) -> dict[str, str]:
        """Every variable a running release of `environment` receives (build ones included).

        `DATABASE_URL` is included only when set as a variable; the deploy engine adds the
        environment's data store otherwise (`api.data.database_url`).
        """
        return {n: r.value for n, r in self.resolve(project, environment, branch).items()}

    def build_env(self, project: str, environment: str, branch: str | None) -> dict[str, str]:
        """The build-time variables (flagged `--build`) the build step receives."""
        return {
            n: r.value for n, r in self.resolve(project, environment, branch).items() if r.build
        }

    def build_hash(self, project: str, environment: str, branch: str | None) -> str:
        """A stable keyed hash of the build-time variables: promote rebuilds when it differs.

        Keyed with the project's salt, so a stored hash reveals nothing about secret values.
        """
        data = json.dumps(self.build_env(project, environment, branch), sort_keys=True)
        key = self.api.project_salt(project) or b""
        return hmac.new(key, data.encode("utf-8"), hashlib.sha256).hexdigest()[:16]

    def enforce(self, project: str, environment: str, *, branch: str | None = None) -> list[str]:
        """Run the rules before a deploy of `environment`: raise on errors, return warnings."""
        findings = self.check(project, environment, branch)
        errors = [f for f in findings if f.severity == ERROR]
        if errors:
            raise RuleViolation(environment, errors)
        return [f.line() for f in findings]

    def secret_values(self, project: str) -> list[str]:
        """Every secret value of the project (its variables' and its data stores' role
        passwords), for a redactor here or in another process."""
        return [
            *(e.value for e in self.entries(project) if e.secret),
            *self.api.data.stores.secret_values(project),
            self.api.secret_box.key_text,  # the master key itself, however it is written
        ]

    def redactor(self, project: str) -> Redactor:
        """The redactor of the project's secret values: every form a value takes in
        output (escaped, URL-encoded, base64, hex, split across lines) becomes ****.

        Call it on a line or a text (`redactor(text)`), or `feed`/`flush` a stream;
        see `tristage.domain.redaction`.
        """
        return build_redactor(self.secret_values(project))
