"""The two presets of the deployment guide, rendered as a commented `tristage.toml`."""

from __future__ import annotations

from typing import Literal

Preset = Literal["simple", "professional"]

_HEADER = """\
# tristage.toml: the pipeline of {name}.
# Development -> Preview -> Production. Reference: docs/configuration.md
#
# preset "{preset}": {summary}

[project]
name = "{name}"
preset = "{preset}"

# Defaults for every environment; an environment may override any of them.
[app]
# web = "python -m app"          # the web process; falls back to the Procfile's `web:` line
# build = "npm run build"        # runs after dependencies are installed
# migrate = "python migrate.py"  # runs before a new release takes traffic (snapshot first)
health_path = "/"                # must answer 2xx/3xx before a release takes traffic
health_timeout = 30              # seconds
keep_warm = 2                    # previous production releases kept running: instant rollback

[policy]
strict = false                   # true: equal CSRF/SESSION secrets across environments are errors
rotation_days = 90               # secrets older than this are reported by `tristage check`
"""

_DEVELOPMENT = """
# Development: local work, test keys, its own database.
[environments.development]
tier = "development"
branches = ["dev", "feature/*"]
required = []
"""

_PREVIEW_SIMPLE = """
# Preview: QA on `test`/`staging` and every other branch.
# Simple preset: it shares development's instances (variables and database).
[environments.preview]
tier = "preview"
branches = ["test", "staging", "*"]
shares = "development"
"""

_PREVIEW_PRO = """
# Preview (staging): QA on `test`/`staging`, its own variables and database,
# filled with sanitized production data by `tristage db clone production preview`.
[environments.preview]
tier = "preview"
branches = ["test", "staging", "*"]
required = []
"""

_PRODUCTION_HEAD = """
# Production: `main`, live keys, real users; backed up, monitored, rollback-ready.
# Branch rules match in file order, first match wins: production comes before
# preview's catch-all "*".
[environments.production]
tier = "production"
branches = ["main"]
required = []

[environments.production.backups]
schedule = "0 2 * * *"           # daily at 02:00
keep = { daily = 7, weekly = 4, monthly = 12 }
"""

_PRODUCTION_TAIL = """

# A webhook source per environment, e.g. Clerk (Svix-signed):
# [environments.production.webhooks.clerk]
# kind = "clerk"                 # clerk | stripe | standard
# secret_var = "CLERK_WEBHOOK_SECRET"
# path = "/clerk-users-webhook"

# Data stores: SQLite files under the platform home by default. For PostgreSQL:
# [environments.production.database]
# engine = "postgres"
# url = "postgresql://127.0.0.1:5432"

# Sanitization for clones from production ("table.column" = rule): every column
# needs one (keys of integer/uuid type and timestamps aside). Rules: email name phone
# address scrub null hash redact keep fake:<faker provider>,
# { json = { "$.field" = "<rule>" } }, { keep = true, reason = "..." } (docs/data.md)
[sanitize]
# "users.email" = "email"
"""


def render(preset: Preset, name: str) -> str:
    if preset == "simple":
        summary = "preview shares development's instances (variables, database)"
        preview = _PREVIEW_SIMPLE
    else:
        summary = "preview (staging) has its own instances, filled with sanitized data"
        preview = _PREVIEW_PRO
    return (
        _HEADER.format(name=name, preset=preset, summary=summary)
        + _DEVELOPMENT
        + _PRODUCTION_HEAD
        + preview
        + _PRODUCTION_TAIL
    )
