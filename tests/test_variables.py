"""Variables: resolution precedence, encrypted storage, audit, enforce, redaction, dotenv."""

from __future__ import annotations

import io
import os
import sqlite3
import time
from pathlib import Path

import pytest
from dotenv import dotenv_values
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tristage.api import Tristage
from tristage.domain import dotenv
from tristage.domain.config import parse_config
from tristage.domain.presets import render
from tristage.domain.redaction import build_redactor
from tristage.domain.variables import (
    SHARED,
    Entry,
    default_build,
    looks_secret,
    resolve,
)
from tristage.errors import NotFound, TristageError, UsageError
from tristage.services.variables import RuleViolation

# -- pure resolution -----------------------------------------------------------


def _e(name: str, scope: str, value: str, branch: str | None = None) -> Entry:
    return Entry(name, scope, branch, value, False, False, 0.0)


ENTRIES = [
    _e("A", SHARED, "shared"),
    _e("A", "development", "dev"),
    _e("A", "development", "dev-login", branch="feature/login"),
    _e("B", SHARED, "shared-b"),
    _e("C", "production", "prod-only"),
    _e("D", "preview", "preview-only"),
    _e("E", "preview", "preview-branch", branch="test"),
]


@pytest.mark.parametrize(
    ("preset", "env", "branch", "expected"),
    [
        (
            "professional",
            "development",
            None,
            {"A": ("dev", "environment"), "B": ("shared-b", "shared")},
        ),
        (
            "professional",
            "development",
            "feature/login",
            {"A": ("dev-login", "branch"), "B": ("shared-b", "shared")},
        ),
        (
            "professional",
            "development",
            "feature/other",
            {"A": ("dev", "environment"), "B": ("shared-b", "shared")},
        ),
        (
            "professional",
            "preview",
            "test",
            {
                "A": ("shared", "shared"),
                "B": ("shared-b", "shared"),
                "D": ("preview-only", "environment"),
                "E": ("preview-branch", "branch"),
            },
        ),
        (
            "professional",
            "production",
            None,
            {
                "A": ("shared", "shared"),
                "B": ("shared-b", "shared"),
                "C": ("prod-only", "environment"),
            },
        ),
        # simple: preview resolves development's values, never its own scope
        (
            "simple",
            "preview",
            "feature/login",
            {"A": ("dev-login", "branch"), "B": ("shared-b", "shared")},
        ),
        ("simple", "preview", "x", {"A": ("dev", "environment"), "B": ("shared-b", "shared")}),
    ],
)
def test_resolution_precedence(
    preset: str, env: str, branch: str | None, expected: dict[str, tuple[str, str]]
) -> None:
    config = parse_config(render(preset, "myapp"))  # type: ignore[arg-type]
    got = resolve(config, ENTRIES, env, branch)
    assert {n: (r.value, r.source) for n, r in got.items()} == expected


def test_defaults_for_new_variables() -> None:
    assert default_build("NEXT_PUBLIC_CLERK_PUBLISHABLE_KEY")
    assert not default_build("CLERK_SECRET_KEY")
    assert looks_secret("CLERK_SECRET_KEY", "x")
    assert looks_secret("DATABASE_URL", "postgres://u:p@h/db")
    assert looks_secret("ANYTHING", "sk_test_abc")
    assert looks_secret("HOOK", "whsec_abc")
    assert not looks_secret("NEXT_PUBLIC_CLERK_PUBLISHABLE_KEY", "pk_test_abc")
    assert not looks_secret("API_URL", "https://x")


# -- redaction -------------------------------------------------------------------


def test_redactor_hides_all_forms_and_keeps_short_values() -> None:
    redact = build_redactor(
        [
            "sk_live_abcdef",
            "sk_live_abcdefghij",  # a prefix of another secret: the longest wins
            "postgresql://app:s3cr%40t-pw@db/app",
            "-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf\n-----END KEY-----",
            "short",
            "a.b*c(d)e[f]",
        ]
    )
    text = (
        "key=sk_live_abcdefghij other=sk_live_abcdef url=postgresql://app:s3cr%40t-pw@db/app "
        "pw=s3cr@t-pw line=MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf short a.b*c(d)e[f] ok"
    )
    out = redact(text)
    assert out == ("key=**** other=**** url=**** pw=**** line=**** short **** ok"), out
    assert build_redactor([])("unchanged") == "unchanged"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.text(st.characters(blacklist_characters="*"), min_size=6, max_size=20),
        min_size=1,
        max_size=8,
    ),
    st.text(st.characters(blacklist_characters="*"), max_size=40),
)
def test_redactor_never_leaks(secrets: list[str], noise: str) -> None:
    # the minimum length counts what a value holds, not its line breaks and blanks
    # (matching ignores a line break and the indentation after it)
    assume(all(len("".join(s.split())) >= 6 for s in secrets))
    # a value that begins with blanks, printed right after a line break, is not matched
    # (the blanks are taken for indentation): a documented limit of the redactor
    assume(all(not s[:1].isspace() for s in secrets))
    redact = build_redactor(secrets)
    text = noise.join(secrets) + noise
    out = redact(text)
    for s in secrets:
        assert s not in out


# -- dotenv round trip -------------------------------------------------------------

TRICKY = {
    "PLAIN": "abc123",
    "QUOTES": """he said "hi" and 'bye'""",
    "NEWLINES": "line1\nline2\r\nline3\n",
    "HASH": "value # not a comment",
    "HASH_START": "#start",
    "EQUALS": "a=b==c",
    "SPACES": "  padded  ",
    "UNICODE": "ünïcødé ✓ 日本語 🚀",
    "BACKSLASH": "C:\\path\\n\\t\\\\",
    "EMPTY": "",
    "PEM": "-----BEGIN KEY-----\nAAA=\n-----END KEY-----",
    "TAB": "a\tb",
    "DOLLAR": "cost $5",
}


def test_dotenv_render_reads_back_identically() -> None:
    text = dotenv.render(TRICKY, "header\nsecond line")
    assert dotenv_values(stream=io.StringIO(text)) == TRICKY
    assert dotenv.parse(text) == TRICKY


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[A-Z_][A-Z0-9_]{0,10}", fullmatch=True),
        st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")).filter(
            lambda v: "${" not in v
        ),
        max_size=6,
    )
)
def test_dotenv_round_trip_property(values: dict[str, str]) -> None:
    text = dotenv.render(values)
    assert dotenv_values(stream=io.StringIO(text)) == values


def test_dotenv_parse_reports_bad_lines() -> None:
    with pytest.raises(UsageError) as exc:
        dotenv.parse("GOOD=1\nNOVALUE\n9BAD=2\n", "x.env")
    msg = exc.value.message
    assert "x.env: 2 problems" in msg and "line 2" in msg and "line 3" in msg


# -- the service over the real store ------------------------------------------------


@pytest.fixture
def project(api: Tristage, repo: Path) -> str:
    api.init_project(repo, "professional")
    return api.open_project(repo).name


def _raw_bytes(home: Path) -> bytes:
    data = b""
    for suffix in ("", "-wal", "-shm"):
        p = home / f"state.db{suffix}"
        if p.exists():
            data += p.read_bytes()
    return data


def test_secret_never_in_store_bytes(api: Tristage, project: str, home: Path) -> None:
    secret = "sk_test_Zq9SECRETneverPLAIN_4821"
    api.variables.set(project, "STRIPE_SECRET_KEY", secret, environments=["development"])
    api.variables.set(project, "PUBLIC_NOTE", "plain-visible-value", environments=["development"])
    # a plain value that becomes secret leaves no plain copy behind
    api.variables.set(project, "LATER", "was-plain-then-secret-77", environments=["development"])
    api.variables.set(project, "LATER", "was-plain-then-secret-77", environments=["development"],
                      secret=True)  # fmt: skip
    raw = _raw_bytes(home)
    assert b"plain-visible-value" in raw  # the test can see plain values...
    assert secret.encode() not in raw  # ...but never a secret
    assert b"was-plain-then-secret-77" not in raw
    api.close()
    assert secret.encode() not in _raw_bytes(home)
    assert b"was-plain-then-secret-77" not in _raw_bytes(home)
    fresh = Tristage(home, actor="other")
    try:
        got = fresh.variables.get(project, "STRIPE_SECRET_KEY", "development", reveal=True)
        assert got.value == secret and got.secret
    finally:
        fresh.close()


def test_ciphertext_is_bound_to_its_variable(api: Tristage, project: str, home: Path) -> None:
    api.variables.set(project, "A_SECRET", "value-of-a-123", environments=["development"])
    api.variables.set(project, "B_SECRET", "value-of-b-456", environments=["development"])
    db = sqlite3.connect(home / "state.db")
    with db:
        a = db.execute("SELECT sealed FROM variables WHERE name='A_SECRET'").fetchone()[0]
        db.execute("UPDATE variables SET sealed=? WHERE name='B_SECRET'", (a,))
    db.close()
    with pytest.raises(TristageError, match="could not be decrypted"):
        api.variables.get(project, "B_SECRET", "development")


def test_set_reports_changes_and_keeps_set_time(api: Tristage, project: str) -> None:
    (r,) = api.variables.set(project, "API_URL", "https://a", environments=["production"])
    assert (r.change, r.secret, r.build) == ("added", False, False)
    first = api.variables.get(project, "API_URL", "production").set_at
    time.sleep(0.01)
    (r,) = api.variables.set(project, "API_URL", "https://a", environments=["production"])
    assert r.change == "unchanged"
    assert api.variables.get(project, "API_URL", "production").set_at == first
    (r,) = api.variables.set(project, "API_URL", "https://b", environments=["production"])
    assert r.change == "changed"
    assert api.variables.get(project, "API_URL", "production").set_at > first
    (r,) = api.variables.set(project, "NEXT_PUBLIC_URL", "https://x", environments=["preview"])
    assert r.build and not r.secret


def test_set_validates(api: Tristage, project: str) -> None:
    with pytest.raises(UsageError, match="not a variable name"):
        api.variables.set(project, "BAD-NAME", "x", environments=["development"])
    with pytest.raises(NotFound, match="no environment named 'staging'"):
        api.variables.set(project, "A", "x", environments=["staging"])
    with pytest.raises(UsageError, match="no environment given"):
        api.variables.set(project, "A", "x")
    with pytest.raises(UsageError, match="--branch needs an environment"):
        api.variables.set(project, "A", "x", all_environments=True, branch="main")
    with pytest.raises(UsageError, match="NUL"):
        api.variables.set(project, "A", "x\x00y", environments=["development"])
    assert api.variables.entries(project) == []


def test_simple_preset_preview_shares_development(api: Tristage, repo: Path) -> None:
    api.init_project(repo, "simple")
    name = api.open_project(repo).name
    with pytest.raises(UsageError, match="shares development") as exc:
        api.variables.set(name, "A", "x", environments=["preview"])
    assert exc.value.hint and "--env development" in exc.value.hint
    api.variables.set(name, "A", "dev-value", environments=["development"])
    api.variables.set(name, "A", "branch-value", environments=["development"], branch="qa-1")
    assert api.variables.runtime_env(name, "preview", None) == {"A": "dev-value"}
    assert api.variables.runtime_env(name, "preview", "qa-1") == {"A": "branch-value"}


def test_audit_events_never_hold_values(api: Tristage, project: str) -> None:
    api.variables.set(
        project, "STRIPE_SECRET_KEY", "sk_live_prodvalue99", environments=["production"]
    )
    api.variables.get(project, "STRIPE_SECRET_KEY", "production")  # masked: no reveal event
    assert api.audit.events(project=project, action="env.reveal") == []
    api.variables.get(project, "STRIPE_SECRET_KEY", "production", reveal=True)
    api.variables.remove(project, "STRIPE_SECRET_KEY", environments=["production"])
    actions = [e.action for e in api.audit.events(project=project, action="env.*")]
    assert actions == ["env.rm", "env.reveal", "env.set"]
    for e in api.audit.events(project=project):
        assert "sk_live_prodvalue99" not in repr(e)
    with pytest.raises(NotFound):
        api.variables.remove(project, "STRIPE_SECRET_KEY", environments=["production"])


def test_development_reveal_is_not_audited(api: Tristage, project: str) -> None:
    api.variables.set(project, "X_SECRET", "dev-secret-value", environments=["development"])
    api.variables.get(project, "X_SECRET", "development", reveal=True)
    assert api.audit.events(project=project, action="env.reveal") == []


def test_pull_refuses_production_secrets_without_consent(api: Tristage, project: str) -> None:
    api.variables.set(project, "CLERK_SECRET_KEY", "sk_live_abc12345", environments=["production"])
    api.variables.set(project, "API_URL", "https://x", environments=["production"])
    with pytest.raises(TristageError, match=r"refusing to write 1 production secret"):
        api.variables.pull(project, "production")
    result = api.variables.pull(project, "production", allow_production_secrets=True)
    assert dotenv_values(stream=io.StringIO(result.text)) == {
        "API_URL": "https://x",
        "CLERK_SECRET_KEY": "sk_live_abc12345",
    }
    (event,) = api.audit.events(project=project, action="env.reveal")
    assert event.details == {"via": "pull", "names": ["CLERK_SECRET_KEY"]}


def test_runtime_build_env_and_hash(api: Tristage, project: str) -> None:
    v = api.variables
    v.set(project, "NEXT_PUBLIC_API", "https://api", all_environments=True)
    v.set(project, "SENTRY_AUTH_TOKEN", "tok-123456", environments=["production"], build=True)
    v.set(project, "RUNTIME_ONLY", "r", environments=["production"])
    assert v.build_env(project, "production", "main") == {
        "NEXT_PUBLIC_API": "https://api",
        "SENTRY_AUTH_TOKEN": "tok-123456",
    }
    assert v.runtime_env(project, "production", "main") == {
        "NEXT_PUBLIC_API": "https://api",
        "SENTRY_AUTH_TOKEN": "tok-123456",
        "RUNTIME_ONLY": "r",
    }
    h1 = v.build_hash(project, "production", "main")
    v.set(project, "RUNTIME_ONLY", "r2", environments=["production"])
    assert v.build_hash(project, "production", "main") == h1  # runtime change: same artifact
    v.set(project, "NEXT_PUBLIC_API", "https://api2", environments=["production"])
    h2 = v.build_hash(project, "production", "main")
    assert h2 != h1 and len(h2) == 16
    assert v.build_hash(project, "production", "main") == h2  # stable


def test_enforce_refuses_live_key_in_preview(api: Tristage, project: str) -> None:
    api.variables.set(project, "STRIPE_SECRET_KEY", "sk_live_51HxyzLIVE", environments=["preview"])
    with pytest.raises(RuleViolation) as exc:
        api.variables.enforce(project, "preview")
    err = exc.value
    assert isinstance(err, TristageError) and err.exit_code == 1
    assert "[stripe.live-outside-production] STRIPE_SECRET_KEY" in err.message
    assert "tristage env set STRIPE_SECRET_KEY --env preview --secret" in err.message
    assert "sk_live_51HxyzLIVE" not in str(err)
    assert api.variables.enforce(project, "production") == []


def test_enforce_returns_warnings(api: Tristage, project: str) -> None:
    api.variables.set(project, "STRIPE_SECRET_KEY", "sk_test_abcdef", environments=["production"])
    (line,) = api.variables.enforce(project, "production")
    assert line.startswith("warning [stripe.test-in-production] production STRIPE_SECRET_KEY")


def test_enforce_branch_override(api: Tristage, project: str) -> None:
    api.variables.set(project, "X_KEY", "sk_live_abcdefg", environments=["preview"], branch="qa")
    assert api.variables.enforce(project, "preview") == []
    with pytest.raises(RuleViolation, match=r"keys\.live-outside-production"):
        api.variables.enforce(project, "preview", branch="qa")


def test_rotation_uses_the_recorded_set_time(api: Tristage, project: str) -> None:
    api.variables.set(project, "SESSION_SECRET", "s" * 40, environments=["production"])
    assert api.variables.check(project, "production") == []
    later = time.time() + 91 * 86400
    (f,) = api.variables.check(project, "production", now=later)
    assert (f.rule, f.severity, f.variable) == ("rotation.overdue", "warning", "SESSION_SECRET")


def test_redactor_of_project(api: Tristage, project: str) -> None:
    api.variables.set(project, "A_SECRET", "alpha-secret-1", environments=["development"])
    api.variables.set(project, "B_TOKEN", "beta-token-22", all_environments=True)
    api.variables.set(project, "PLAIN", "visible", environments=["development"])
    redact = api.variables.redactor(project)
    assert redact("a alpha-secret-1 b beta-token-22 visible") == "a **** b **** visible"


def test_import_reports_added_changed_unchanged(api: Tristage, project: str) -> None:
    v = api.variables
    v.set(project, "KEEP", "same", environments=["development"])
    v.set(project, "CHANGE", "old", environments=["development"])
    report = v.import_dotenv(
        project, "KEEP=same\nCHANGE=new\nNEW_SECRET='sk_test_x1'\n", environments=["development"]
    )
    assert report.as_json() == {
        "added": ["NEW_SECRET"],
        "changed": ["CHANGE"],
        "unchanged": ["KEEP"],
    }
    assert v.get(project, "NEW_SECRET", "development").secret
    with pytest.raises(UsageError, match="line 2"):
        v.import_dotenv(project, "OK=1\nbroken line\n", environments=["development"])
    with pytest.raises(NotFound):
        v.get(project, "OK", "development")  # all or nothing


def test_the_master_key_is_redacted_however_it_is_printed(
    api: Tristage, project: str, home: Path
) -> None:
    key_file = Path(os.environ["TRISTAGE_MASTER_KEY_FILE"])
    assert api.secret_box.key_text  # the key file exists once the box is opened
    written = key_file.read_text().strip()
    out = api.variables.redactor(project)(f"cat master.key: {written}\n")
    assert written not in out and "****" in out
