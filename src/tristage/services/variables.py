"""Variables and secrets per environment (contract; the variables area fills it in)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..api import Tristage


class VariableService:
    def __init__(self, api: Tristage) -> None:
        self.api = api

    def runtime_env(self, project: str, environment: str, branch: str | None) -> dict[str, str]:
        """Every variable a running release of `environment` receives (build ones included)."""
        return {}

    def build_env(self, project: str, environment: str, branch: str | None) -> dict[str, str]:
        """The build-time variables (flagged `--build`) the build step receives."""
        return {}

    def build_hash(self, project: str, environment: str, branch: str | None) -> str:
        """A stable hash of the build-time variables: promote rebuilds when it differs."""
        import hashlib
        import json

        data = json.dumps(self.build_env(project, environment, branch), sort_keys=True)
        return hashlib.sha256(data.encode()).hexdigest()[:16]

    def enforce(self, project: str, environment: str) -> list[str]:
        """Run the isolation rules before a deploy: raise on errors, return warning lines."""
        return []

    def redactor(self, project: str) -> Callable[[str], str]:
        """A function that replaces every secret value of the project with ****."""
        return lambda text: text
