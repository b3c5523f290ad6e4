"""Every rule, with passing and failing inputs (pure: no store, no files)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import pytest

from tristage.domain.config import parse_config
from tristage.domain.presets import render
from tristage.domain.rules import Context, DatabaseAuth, Finding, modules, run
from tristage.domain.rules.clerk import frontend_host
from tristage.domain.rules.isolation import url_target
from tristage.domain.variables import SHARED, Entry, looks_secret, resolve_all

NOW = 1_800_000_000.0
DAY = 86400.0
PRO = render("professional", "myapp")
SIMPLE = render("simple", "myapp")
STRICT = PRO.replace("strict = false", "strict = true")


def pk(host: str, mode: str = "test") -> str:
    return f"pk_{mode}_" + base64.b64encode(f"{host}$".encode()).decode().rstrip("=")


def context(
    values: dict[str, dict[str, str]],
    toml: str = PRO,
    ages: dict[str, float] | None = None,
    databases: dict[str, DatabaseAuth] | None = None,
) -> Context:
    config = parse_config(toml)
    entries = [
        Entry(
            name=name,
            scope=scope,
            branch=None,
            value=value,
            secret=looks_secret(name, value),
            build=False,
            set_at=NOW - (ages or {}).get(name, 0.0) * DAY,
        )
        for scope, vars_ in values.items()
        for name, value in vars_.items()
    ]
    return Context(
        config=config, values=resolve_all(config, entries), now=NOW, databases=databases or {}
    )


def auth(outcome: str, detail: str = "") -> DatabaseAuth:
    return DatabaseAuth("db.internal:5432", "tristage_myapp_x", outcome, detail)  # type: ignore[arg-type]


@dataclass
class Case:
    id: str
    values: dict[str, dict[str, str]]
    rule: str  # the rule id prefix under test
    expect: set[tuple[str, str, str | None]]  # (severity, environment, variable)
    toml: str = PRO
    ages: dict[str, float] = field(default_factory=dict)
    databases: dict[str, DatabaseAuth] = field(default_factory=dict)


CLERK_DEV = {
    "NEXT_PUBLIC_CLERK_PUBLISHABLE_KEY": pk("dev-clerk.accounts.dev"),
    "CLERK_SECRET_KEY": "sk_test_devsecret123",
}
CLERK_PROD = {
    "NEXT_PUBLIC_CLERK_PUBLISHABLE_KEY": pk("clerk.myapp.com", "live"),
    "CLERK_SECRET_KEY": "sk_live_prodsecret123",
}

CASES = [
    # -- clerk -------------------------------------------------------------
    Case("clerk-ok", {"development": CLERK_DEV, "production": CLERK_PROD}, "clerk", set()),
    Case(
        "clerk-live-in-preview",
        {"preview": {**CLERK_PROD}},
        "clerk.live",
        {
            ("error", "preview", "NEXT_PUBLIC_CLERK_PUBLISHABLE_KEY"),
            ("error", "preview", "CLERK_SECRET_KEY"),
        },
    ),
    Case(
        "clerk-test-in-production",
        {"production": CLERK_DEV},
        "clerk.test-in-production",
        {
            ("warning", "production", "NEXT_PUBLIC_CLERK_PUBLISHABLE_KEY"),
            ("warning", "production", "CLERK_SECRET_KEY"),
        },
    ),
    Case(
        "clerk-mixed-modes",
        {"production": {**CLERK_PROD, "CLERK_SECRET_KEY": "sk_test_x123456"}},
        "clerk.mixed-modes",
        {("error", "production", "CLERK_SECRET_KEY")},
    ),
    Case(
        "clerk-missing-secret",
        {"development": {"NEXT_PUBLIC_CLERK_PUBLISHABLE_KEY": pk("a.clerk.accounts.dev")}},
        "clerk.missing-key",
        {("error", "development", "CLERK_SECRET_KEY")},
    ),
    Case(
        "clerk-missing-publishable",
        {"development": {"CLERK_SECRET_KEY": "sk_test_abc123"}},
        "clerk.missing-key",
        {("error", "development", "NEXT_PUBLIC_CLERK_PUBLISHABLE_KEY")},
    ),
    Case(
        "clerk-frontend-ok",
        {
            "production": {
                **CLERK_PROD,
                "NEXT_PUBLIC_CLERK_FRONTEND_API_URL": "https://clerk.myapp.com",
            }
        },
        "clerk.frontend",
        set(),
    ),
    Case(
        "clerk-frontend-mismatch",
        {
            "production": {
                **CLERK_PROD,
                "NEXT_PUBLIC_CLERK_FRONTEND_API_URL": "https://clerk.other.com",
            }
        },
        "clerk.frontend-api-mismatch",
        {("error", "production", "NEXT_PUBLIC_CLERK_FRONTEND_API_URL")},
    ),
    Case(
        "clerk-malformed-publishable",
        {
            "development": {
                "NEXT_PUBLIC_CLERK_PUBLISHABLE_KEY": "pk_test_!!notbase64",
                "CLERK_SECRET_KEY": "sk_test_abc123",
            }
        },
        "clerk.malformed-key",
        {("error", "development", "NEXT_PUBLIC_CLERK_PUBLISHABLE_KEY")},
    ),
    # -- stripe ------------------------------------------------------------
    Case(
        "stripe-ok",
        {
            "development": {
                "STRIPE_SECRET_KEY": "sk_test_1",
                "STRIPE_PUBLISHABLE_KEY": "pk_test_1",
            },
            "production": {"STRIPE_SECRET_KEY": "sk_live_1", "STRIPE_PUBLISHABLE_KEY": "pk_live_1"},
        },
        "stripe",
        set(),
    ),
    Case(
        "stripe-live-in-preview",
        {"preview": {"STRIPE_SECRET_KEY": "sk_live_abcdef"}},
        "stripe.live-outside-production",
        {("error", "preview", "STRIPE_SECRET_KEY")},
    ),
    Case(
        "stripe-restricted-live-in-development",
        {"development": {"STRIPE_RESTRICTED_KEY": "rk_live_abcdef"}},
        "stripe.live-outside-production",
        {("error", "development", "STRIPE_RESTRICTED_KEY")},
    ),
    Case(
        "stripe-live-shared-by-all",
        {SHARED: {"STRIPE_SECRET_KEY": "sk_live_abcdef"}},
        "stripe.live-outside-production",
        {("error", "development", "STRIPE_SECRET_KEY"), ("error", "preview", "STRIPE_SECRET_KEY")},
    ),
    Case(
        "stripe-mixed-modes",
        {"production": {"STRIPE_SECRET_KEY": "sk_live_1", "STRIPE_PUBLISHABLE_KEY": "pk_test_1"}},
        "stripe.mixed-modes",
        {("error", "production", "STRIPE_PUBLISHABLE_KEY")},
    ),
    Case(
        "stripe-test-in-production",
        {"production": {"STRIPE_SECRET_KEY": "sk_test_1"}},
        "stripe.test-in-production",
        {("warning", "production", "STRIPE_SECRET_KEY")},
    ),
    # -- keys not claimed by a provider -------------------------------------
    Case(
        "unclaimed-live-key",
        {"preview": {"PAYMENTS_KEY": "sk_live_abcdef"}},
        "keys",
        {("error", "preview", "PAYMENTS_KEY")},
    ),
    Case("unclaimed-live-key-production", {"production": {"X_KEY": "sk_live_a1"}}, "keys", set()),
    # -- convex ------------------------------------------------------------
    Case(
        "convex-ok",
        {
            "development": {
                "CONVEX_DEPLOY_KEY": "dev:happy-otter-1|tok1",
                "CONVEX_DEPLOYMENT": "dev:happy-otter-1 # team: me",
                "NEXT_PUBLIC_CONVEX_URL": "https://happy-otter-1.convex.cloud",
            },
            "production": {"CONVEX_DEPLOY_KEY": "prod:brave-lion-2|tok2"},
        },
        "convex",
        set(),
    ),
    Case(
        "convex-prod-key-in-development",
        {"development": {"CONVEX_DEPLOY_KEY": "prod:brave-lion-2|tok2"}},
        "convex.prod-key-in-development",
        {("error", "development", "CONVEX_DEPLOY_KEY")},
    ),
    Case(
        "convex-shared-key",
        {
            "preview": {"CONVEX_DEPLOY_KEY": "prod:brave-lion-2|tok2"},
            "production": {"CONVEX_DEPLOY_KEY": "prod:brave-lion-2|tok2"},
        },
        "convex.shared-deploy-key",
        {("error", "preview", "CONVEX_DEPLOY_KEY")},
    ),
    Case(
        "convex-simple-preset-shares-by-design",
        {"development": {"CONVEX_DEPLOY_KEY": "dev:a|t"}},
        "convex",
        set(),
        toml=SIMPLE,
    ),
    Case(
        "convex-url-mismatch",
        {
            "development": {
                "CONVEX_DEPLOYMENT": "dev:happy-otter-1",
                "NEXT_PUBLIC_CONVEX_URL": "https://sad-otter-9.convex.cloud",
            }
        },
        "convex.url-mismatch",
        {("error", "development", "NEXT_PUBLIC_CONVEX_URL")},
    ),
    # -- webhooks ----------------------------------------------------------
    Case(
        "webhooks-distinct",
        {
            "preview": {"CLERK_WEBHOOK_SECRET": "whsec_preview1"},
            "production": {"CLERK_WEBHOOK_SECRET": "whsec_prod1"},
        },
        "webhooks",
        set(),
    ),
    Case(
        "webhooks-shared",
        {
            "development": {"CLERK_WEBHOOK_SECRET": "whsec_same"},
            "production": {"CLERK_WEBHOOK_SECRET": "whsec_same"},
        },
        "webhooks.shared-secret",
        {("error", "development", "CLERK_WEBHOOK_SECRET")},
    ),
    Case(
        "webhooks-shared-under-other-name",
        {
            "development": {"HOOK_SIGNING": "whsec_same"},
            "preview": {"STRIPE_WEBHOOK_SECRET": "whsec_same"},
        },
        "webhooks.shared-secret",
        {("error", "development", "HOOK_SIGNING"), ("error", "preview", "STRIPE_WEBHOOK_SECRET")},
    ),
    Case(
        "webhooks-declared-source-missing-secret",
        {"production": {}},
        "webhooks.missing-secret",
        {("error", "production", "CLERK_WEBHOOK_SECRET")},
        toml=PRO + '\n[environments.production.webhooks.clerk]\nkind = "clerk"\n'
        'secret_var = "CLERK_WEBHOOK_SECRET"\n',
    ),
    # -- CSRF / session secrets ---------------------------------------------
    Case(
        "csrf-distinct",
        {"preview": {"CSRF_SECRET": "a" * 32}, "production": {"CSRF_SECRET": "b" * 32}},
        "secrets",
        set(),
    ),
    Case(
        "csrf-shared-warning",
        {"preview": {"CSRF_SECRET": "a" * 32}, "production": {"CSRF_SECRET": "a" * 32}},
        "secrets.shared-with-production",
        {("warning", "preview", "CSRF_SECRET")},
    ),
    Case(
        "session-shared-strict-error",
        {"development": {"SESSION_SECRET": "s" * 32}, "production": {"SESSION_SECRET": "s" * 32}},
        "secrets.shared-with-production",
        {("error", "development", "SESSION_SECRET")},
        toml=STRICT,
    ),
    # -- required ----------------------------------------------------------
    Case(
        "required-present",
        {"production": {"API_URL": "https://x"}},
        "required",
        set(),
        toml=PRO.replace(
            'branches = ["main"]\nrequired = []', 'branches = ["main"]\nrequired = ["API_URL"]'
        ),
    ),
    Case(
        "required-missing-and-empty",
        {"production": {"B": ""}},
        "required.missing",
        {("error", "production", "A"), ("error", "production", "B")},
        toml=PRO.replace(
            'branches = ["main"]\nrequired = []', 'branches = ["main"]\nrequired = ["A", "B"]'
        ),
    ),
    # -- data isolation ----------------------------------------------------
    Case(
        "isolation-own-urls",
        {
            "preview": {"DATABASE_URL": "postgresql://u:p@db:5432/app_preview"},
            "production": {"DATABASE_URL": "postgresql://u:p@db:5432/app"},
        },
        "isolation",
        set(),
    ),
    Case(
        "isolation-preview-uses-production-url",
        {
            "preview": {"DATABASE_URL": "postgres://other:pw@DB/app?sslmode=require"},
            "production": {"DATABASE_URL": "postgresql://u:p@db:5432/app"},
        },
        "isolation.database",
        {("error", "preview", "DATABASE_URL")},
    ),
    Case(
        "isolation-url-points-at-production-config",
        {"development": {"DATABASE_URL": "postgresql://localhost/shop"}},
        "isolation.database",
        {("error", "development", "DATABASE_URL")},
        toml=PRO + '\n[environments.production.database]\nengine = "postgres"\n'
        'url = "postgresql://127.0.0.1:5432"\nname = "shop"\n',
    ),
    Case(
        "isolation-config-is-production",
        {},
        "isolation.database",
        {("error", "preview", None)},
        toml=PRO + '\n[environments.production.database]\nurl = "/srv/prod.sqlite3"\n'
        '\n[environments.preview.database]\nurl = "/srv/../srv/prod.sqlite3"\n',
    ),
    # -- database servers ---------------------------------------------------
    Case(
        "database-checks-passwords",
        {},
        "database",
        set(),
        databases={"production": auth("password"), "preview": auth("password")},
    ),
    Case(
        "sanitize-typo",
        {},
        "sanitize",
        {("error", "production", None)},
        toml=PRO.replace("[sanitize]", '[sanitize]\n"users.plan" = "kep"', 1)
        if "[sanitize]" in PRO
        else PRO + '\n[sanitize]\n"users.plan" = "kep"\n',
    ),
    Case(
        "sanitize-ok",
        {},
        "sanitize",
        set(),
        toml=PRO.replace("[sanitize]", '[sanitize]\n"users.plan" = "keep"', 1)
        if "[sanitize]" in PRO
        else PRO + '\n[sanitize]\n"users.plan" = "keep"\n',
    ),
    Case(
        "sanitize-files-everything",
        {},
        "sanitize_files",
        {("warning", "production", None)},
        toml=PRO + '\n[sanitize.files]\ncopy = ["public/**", "**"]\n',
    ),
    Case(
        "sanitize-files-public",
        {},
        "sanitize_files",
        set(),
        toml=PRO + '\n[sanitize.files]\ncopy = ["public/**", "media/*.png"]\n',
    ),
    Case(
        "database-production-trusts",
        {},
        "database.no-password",
        {("error", "production", None), ("warning", "preview", None)},
        databases={"production": auth("trust"), "preview": auth("trust")},
    ),
    Case(
        "database-development-trusts",
        {},
        "database.no-password",
        {("warning", "development", None)},
        databases={"development": auth("trust"), "production": auth("password")},
    ),
    Case(
        "database-role-refused",
        {},
        "database.role-refused",
        {("warning", "production", None)},
        databases={"production": auth("other", 'no pg_hba.conf entry for host "10.0.0.5"')},
    ),
    Case(
        "database-unreachable",
        {},
        "database.unreachable",
        {("warning", "preview", None)},
        databases={"preview": auth("unreachable", "Connection refused")},
    ),
    Case(  # a sharing environment is its owner's store: reported once, for the owner
        "database-shared-store",
        {},
        "database.no-password",
        {("warning", "development", None)},
        toml=SIMPLE,
        databases={"development": auth("trust"), "production": auth("password")},
    ),
    # -- rotation ----------------------------------------------------------
    Case(
        "rotation-fresh",
        {"production": {"CLERK_WEBHOOK_SECRET": "whsec_x"}},
        "rotation",
        set(),
        ages={"CLERK_WEBHOOK_SECRET": 89},
    ),
    Case(
        "rotation-overdue",
        {"production": {"CLERK_WEBHOOK_SECRET": "whsec_x", "PLAIN": "x"}},
        "rotation.overdue",
        {("warning", "production", "CLERK_WEBHOOK_SECRET")},
        ages={"CLERK_WEBHOOK_SECRET": 91, "PLAIN": 400},
    ),
    Case(
        "rotation-custom-period",
        {"production": {"API_TOKEN": "tok_abcdef"}},
        "rotation.overdue",
        {("warning", "production", "API_TOKEN")},
        toml=PRO.replace("rotation_days = 90", "rotation_days = 30"),
        ages={"API_TOKEN": 31},
    ),
]


def _matching(findings: list[Finding], rule: str) -> set[tuple[str, str, str | None]]:
    return {
        (f.severity, f.environment, f.variable)
        for f in findings
        if f.rule == rule or f.rule.startswith(rule + ".") or f.rule.startswith(rule + "-")
    }


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rule(case: Case) -> None:
    findings = run(context(case.values, case.toml, case.ages, case.databases))
    assert _matching(findings, case.rule) == case.expect, [f.line() for f in findings]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_findings_never_print_secret_values(case: Case) -> None:
    findings = run(context(case.values, case.toml, case.ages, case.databases))
    secrets = [
        v
        for vars_ in case.values.values()
        for n, v in vars_.items()
        if looks_secret(n, v) and len(v) >= 6
    ]
    for f in findings:
        assert "tristage " in f.message or "tristage.toml" in f.message, f.line()
        for s in secrets:
            assert s not in f.line()


def test_every_rule_module_is_covered() -> None:
    names = {m.__name__.rsplit(".", 1)[1] for m in modules()}
    assert names == {
        "clerk",
        "convex",
        "database",
        "isolation",
        "keys",
        "required",
        "rotation",
        "sandbox",
        "sanitize",
        "sanitize_files",
        "secrets",
        "stripe",
        "webhooks",
    }
    # sandbox: test_sandbox_off_is_reported_for_preview_and_production
    covered = {c.rule.split(".")[0] for c in CASES} | {"sandbox"}
    assert names <= covered


def test_filter_by_environment_and_order() -> None:
    ctx = context(
        {
            "preview": {"STRIPE_SECRET_KEY": "sk_live_abcdef", "CSRF_SECRET": "c" * 32},
            "production": {"CSRF_SECRET": "c" * 32},
        }
    )
    only = run(ctx, "preview")
    assert {f.environment for f in only} == {"preview"}
    assert [f.severity for f in only] == ["error", "warning"]
    assert run(ctx, "production") == []


def test_simple_preset_preview_reports_development_values() -> None:
    ctx = context({"development": {"STRIPE_SECRET_KEY": "sk_live_abcdef"}}, SIMPLE)
    found = run(ctx, "preview")
    assert [f.rule for f in found] == ["stripe.live-outside-production"]
    assert "--env development" in found[0].message
    assert "inherited from development" in found[0].message


def test_database_findings_say_how_to_fix_the_server() -> None:
    found = run(context({}, databases={"production": auth("trust")}))
    (f,) = [f for f in found if f.rule == "database.no-password"]
    assert "db.internal:5432" in f.message and "tristage_myapp_x" in f.message
    assert "pg_hba.conf" in f.message and "scram-sha-256" in f.message and "trust" in f.message


def test_relative_sqlite_paths_are_each_environment_own() -> None:
    toml = (
        PRO + '\n[environments.production.database]\nurl = "app.sqlite3"\n'
        '\n[environments.preview.database]\nurl = "app.sqlite3"\n'
    )
    assert not [f for f in run(context({}, toml)) if f.rule == "isolation.database"]


def test_frontend_host_decoding() -> None:
    assert frontend_host(pk("clerk.example.com")) == "clerk.example.com"
    assert frontend_host(pk("Clerk.Example.com", "live")) == "clerk.example.com"
    assert frontend_host("pk_test_" + base64.b64encode(b"no-dollar").decode()) is None
    assert frontend_host("sk_test_abc") is None


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("postgres://a:b@localhost/app", "postgresql://127.0.0.1:5432/app", True),
        ("postgresql+psycopg://h:5433/app", "postgresql://h:5432/app", False),
        ("postgresql://h/app", "postgresql://h/app2", False),
        ("sqlite:////srv/x.db", "/srv/./x.db", True),
        ("sqlite://///srv/x.db", "sqlite:////srv/x.db", True),
        ("//srv/x.db", "/srv/x.db", True),
        ("sqlite:///rel.db", "rel.db", True),
        ("mysql://h/app", "MYSQL://h/app", True),
    ],
)
def test_url_targets(a: str, b: str, same: bool) -> None:
    assert (url_target(a) == url_target(b)) is same


def test_sandbox_off_is_reported_for_preview_and_production() -> None:
    from tristage.domain.config import parse_config
    from tristage.domain.presets import render
    from tristage.domain.rules import Context, run

    cfg = parse_config(render("professional", "shop"))
    assert not [f for f in run(Context(config=cfg, values={}, now=0)) if f.rule == "sandbox.off"]
    off = cfg.model_copy(update={"policy": cfg.policy.model_copy(update={"sandbox": "off"})})
    found = {f.environment for f in run(Context(config=off, values={}, now=0))
             if f.rule == "sandbox.off"}  # fmt: skip
    assert found == {"preview", "production"}
