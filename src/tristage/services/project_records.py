"""The projects table: every statement over it (the projects service and the other
areas that list projects go through these)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from ..edges.store import Row, Store


def project_names(store: Store) -> list[str]:
    """Every registered project, by name."""
    return [r["name"] for r in store.query("SELECT name FROM projects ORDER BY name")]


def project_row(store: Store, name: str) -> Row | None:
    """The project's row: root, config (the stored tristage.toml), key_salt, updated_at."""
    return store.query_one(
        "SELECT name, root, config, key_salt, updated_at FROM projects WHERE name=?", (name,)
    )


def save_project(
    store: Store, name: str, root: str, text: str, seal: Callable[[bytes], bytes]
) -> bool:
    """Register the project, or update its root and configuration; True when it changed.
    A new project gets a random key, stored as `seal` gives it (the secrets box)."""
    now = time.time()
    with store.transaction():
        row = store.query_one("SELECT root, config FROM projects WHERE name=?", (name,))
        if row is None:
            store.execute(
                "INSERT INTO projects (name, root, config, key_salt, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, root, text, seal(secrets.token_bytes(32)), now, now),
            )
            return True
        if row["config"] == text and row["root"] == root:
            return False
        store.execute(
            "UPDATE projects SET root=?, config=?, updated_at=? WHERE name=?",
            (root, text, now, name),
        )
        return True


def reseal_key(store: Store, name: str, plain: bytes, sealed: bytes) -> bool:
    """Replace a key stored in plain text (before keys were sealed) by its sealed form."""
    return bool(
        store.execute(
            "UPDATE projects SET key_salt=? WHERE name=? AND key_salt=?", (sealed, name, plain)
        )
    )
