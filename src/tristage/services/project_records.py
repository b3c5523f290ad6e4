"""The projects table as the other areas read it."""

from __future__ import annotations

from ..edges.store import Store


def project_names(store: Store) -> list[str]:
    """Every registered project, by name."""
    return [r["name"] for r in store.query("SELECT name FROM projects ORDER BY name")]
