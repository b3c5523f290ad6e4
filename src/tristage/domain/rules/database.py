"""Database servers: an environment's PostgreSQL server must check passwords.

tristage gives each PostgreSQL environment its own role and password, so one
environment's DATABASE_URL cannot open another's database. That holds only if the
server checks the password: a `trust` line in pg_hba.conf lets anyone who reaches
the server log in as any role, production's included. The service probes each
server with the environment's role and a wrong password (`Context.databases`).
"""

from __future__ import annotations

from collections.abc import Iterator

from ._base import ERROR, WARNING, Context, Finding

HBA_FIX = (
    "in the server's pg_hba.conf use scram-sha-256 (not trust) on the host lines, e.g. "
    "'host all all 127.0.0.1/32 scram-sha-256', set password_encryption = 'scram-sha-256' "
    "in postgresql.conf, reload the server (SELECT pg_reload_conf()), then run "
    "'tristage check' again"
)


def check(ctx: Context) -> Iterator[Finding]:
    for env in ctx.environments():
        fact = ctx.databases.get(env)
        if fact is None or ctx.config.owner(env) != env:
            continue
        if fact.outcome == "trust":
            yield Finding(
                "database.no-password",
                ERROR if ctx.is_production(env) else WARNING,
                env,
                None,
                f"the PostgreSQL server {fact.server} let role {fact.role} in with a wrong "
                f"password: anyone who can reach it can open {env}'s database (and every "
                f"other one) without a password; {HBA_FIX}",
            )
        elif fact.outcome == "other":
            yield Finding(
                "database.role-refused",
                WARNING,
                env,
                None,
                f"the PostgreSQL server {fact.server} refuses role {fact.role} for a reason "
                f"other than its password ({fact.detail}), so {env}'s app cannot connect; "
                f"{HBA_FIX}",
            )
        elif fact.outcome == "unreachable":
            yield Finding(
                "database.unreachable",
                WARNING,
                env,
                None,
                f"could not check whether the PostgreSQL server {fact.server} requires a "
                f"password ({fact.detail}); start it or fix environments.{env}.database.url "
                "in tristage.toml, then run 'tristage check' again",
            )
