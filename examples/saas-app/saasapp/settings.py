"""The app's settings, read once from the environment tristage starts it with."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from .database import DatabaseURL
from .security import MIN_SECRET_LENGTH
from .signatures import decode_secret

TIERS = ("development", "preview", "production")


class SettingsError(ValueError):
    """A variable is missing or malformed; the message names it and says how to fix it."""


def _tier(env: Mapping[str, str], name: str) -> str:
    declared = env.get("TRISTAGE_TIER", "").strip().lower()
    if declared in TIERS:
        return declared
    lowered = name.lower()
    if lowered.startswith("prod") or lowered == "live":
        return "production"
    if lowered in ("preview", "staging", "test", "qa") or lowered.startswith("preview"):
        return "preview"
    return "development"


def _secret(env: Mapping[str, str], name: str, environment: str) -> str:
    value = env.get(name, "")
    if len(value) < MIN_SECRET_LENGTH:
        problem = "is not set" if not value else f"is shorter than {MIN_SECRET_LENGTH} characters"
        raise SettingsError(
            f"{name} {problem}: set a random value with "
            f"'tristage env set {name} --env {environment} --secret'"
        )
    return value


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    environment: str
    tier: str
    deployment: str
    branch: str
    commit: str
    database: DatabaseURL
    session_secret: str
    csrf_secret: str
    webhook_key: bytes | None  # None: CLERK_WEBHOOK_SECRET not set, webhooks answered 503
    clerk_publishable_key: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        environment = env.get("TRISTAGE_ENV", "").strip() or "local"
        port_text = env.get("PORT", "8000").strip()
        try:
            port = int(port_text)
            if not 0 <= port <= 65535:
                raise ValueError
        except ValueError:
            raise SettingsError(f"PORT={port_text!r} is not a TCP port (0-65535)") from None
        try:
            database = DatabaseURL.parse(env.get("DATABASE_URL"))
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        webhook_key = None
        raw_webhook = env.get("CLERK_WEBHOOK_SECRET", "").strip()
        if raw_webhook:
            try:
                webhook_key = decode_secret(raw_webhook)
            except ValueError as exc:
                raise SettingsError(f"CLERK_WEBHOOK_SECRET is not usable: {exc}") from None
        return cls(
            host=env.get("HOST", "127.0.0.1").strip() or "127.0.0.1",
            port=port,
            environment=environment,
            tier=_tier(env, environment),
            deployment=env.get("TRISTAGE_DEPLOYMENT", "").strip() or "local",
            branch=env.get("TRISTAGE_GIT_BRANCH", "").strip() or "-",
            commit=env.get("TRISTAGE_GIT_COMMIT", "").strip() or "-",
            database=database,
            session_secret=_secret(env, "SESSION_SECRET", environment),
            csrf_secret=_secret(env, "CSRF_SECRET", environment),
            webhook_key=webhook_key,
            clerk_publishable_key=env.get("CLERK_PUBLISHABLE_KEY", "").strip() or None,
        )
