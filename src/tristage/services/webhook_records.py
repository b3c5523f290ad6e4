"""Webhook deliveries as records: what ingest, the forwarder and the listings pass
around, and the store operations over them (run on the writer thread inside its
transaction)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..domain import webhooks as dom
from ..domain.config import WebhookSource
from ..edges.secrets import SecretBox
from ..edges.store import Row, Store


@dataclass(frozen=True)
class Endpoint:
    project: str
    environment: str
    source: str
    config: WebhookSource
    secrets: tuple[str, ...]  # empty: the secret variable is not set


@dataclass(frozen=True)
class IngestResult:
    status: int
    body: dict[str, Any]
    delivery_id: str | None = None
    duplicate: bool = False


@dataclass(frozen=True)
class Delivery:
    id: str
    project: str
    environment: str
    source: str
    kind: str
    message_id: str
    event_type: str | None
    received_at: float
    status: str
    tries: int
    attempts: int
    next_attempt_at: float | None
    last_attempt_at: float | None
    last_status: int | None
    last_error: str | None
    delivered_at: float | None
    duplicates: int
    size: int
    path: str
    pruned_at: float | None = None  # the body was removed after the retention

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Attempt:
    at: float
    url: str
    status_code: int | None
    duration_ms: float
    error: str | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DeliveryDetail:
    delivery: Delivery
    attempts: list[Attempt]
    headers: dict[str, str]
    body: bytes

    def as_json(self, with_body: bool = False) -> dict[str, Any]:
        out = {**self.delivery.as_json(), "attempts": [a.as_json() for a in self.attempts]}
        out["headers"] = self.headers
        if with_body:
            out["body"] = self.body.decode("utf-8", "replace")
        return out


@dataclass(frozen=True)
class SourceInfo:
    environment: str
    source: str
    kind: str
    path: str
    secret_var: str
    secret_set: bool
    urls: list[str]
    rejected: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SendTestResult:
    url: str
    status: int
    message_id: str
    event_type: str
    response: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Claimed:
    id: str
    project: str
    environment: str
    source: str
    kind: dom.Kind
    message_id: str
    received_at: float
    headers: dict[str, str]
    body: bytes
    tries: int
    url: str
    schedule: list[float]


# ---------------------------------------------------------------------------
# Store operations

DELIVERY_COLUMNS = (
    "id, project, environment, source, kind, message_id, event_type, received_at, status,"
    " tries, attempts, next_attempt_at, last_attempt_at, last_status, last_error,"
    " delivered_at, duplicates, size, path, pruned_at"
)


def delivery_from_row(r: Row) -> Delivery:
    return Delivery(
        id=r["id"],
        project=r["project"],
        environment=r["environment"],
        source=r["source"],
        kind=r["kind"],
        message_id=r["message_id"],
        event_type=r["event_type"],
        received_at=r["received_at"],
        status=r["status"],
        tries=r["tries"],
        attempts=r["attempts"],
        next_attempt_at=r["next_attempt_at"],
        last_attempt_at=r["last_attempt_at"],
        last_status=r["last_status"],
        last_error=r["last_error"],
        delivered_at=r["delivered_at"],
        duplicates=r["duplicates"],
        size=r["size"],
        path=r["path"],
        pruned_at=r["pruned_at"],
    )


def _context(delivery_id: str) -> bytes:
    return b"webhook-body:" + delivery_id.encode()


def seal(box: SecretBox, delivery_id: str, body: bytes) -> bytes:
    """A body as stored: encrypted, bound to its delivery (not movable to another row)."""
    return box.encrypt(body, _context(delivery_id))


def unseal(box: SecretBox, delivery_id: str, stored: bytes, sealed: int) -> bytes:
    """The original body of a stored row (rows from before sealing are plain)."""
    return box.decrypt(stored, _context(delivery_id)) if sealed else stored


def insert_delivery(store: Store, row: tuple[Any, ...], box: SecretBox) -> tuple[str, bool]:
    """Store a verified delivery, its body sealed; a message id seen before is counted."""
    sealed_row = (*row[:9], seal(box, str(row[0]), row[9]), *row[10:])
    changed = store.execute(
        "INSERT INTO webhook_deliveries (id, project, environment, source, kind,"
        " message_id, event_type, received_at, headers, body, size, path, status,"
        " next_attempt_at, sealed) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,'pending',?,1)"
        " ON CONFLICT (project, environment, source, message_id) DO NOTHING",
        (*sealed_row, row[7]),
    )
    if changed:
        return str(row[0]), False
    project, environment, source, message_id = row[1], row[2], row[3], row[5]
    store.execute(
        "UPDATE webhook_deliveries SET duplicates = duplicates + 1 WHERE project=?"
        " AND environment=? AND source=? AND message_id=?",
        (project, environment, source, message_id),
    )
    existing = store.query_one(
        "SELECT id FROM webhook_deliveries WHERE project=? AND environment=? AND source=?"
        " AND message_id=?",
        (project, environment, source, message_id),
    )
    assert existing is not None
    return str(existing["id"]), True


def release_claims(store: Store, ids: list[str]) -> None:
    """Claimed but never sent: due again now (for the next forwarder)."""
    now = time.time()
    for delivery_id in ids:
        store.execute(
            "UPDATE webhook_deliveries SET next_attempt_at=? WHERE id=?"
            " AND status IN ('pending', 'failed')",
            (now, delivery_id),
        )


def count_rejection(store: Store, key: tuple[str, str, str, str, float]) -> None:
    store.execute(
        "INSERT INTO webhook_rejections (project, environment, source, reason, count, last_at)"
        " VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT (project, environment, source, reason)"
        " DO UPDATE SET count = count + 1, last_at = excluded.last_at",
        key,
    )


def record_attempt(
    store: Store,
    item: Claimed,
    started: float,
    duration_ms: float,
    outcome: dom.Outcome,
    tr: dom.Transition,
) -> None:
    store.execute(
        "INSERT INTO webhook_attempts (delivery_id, at, url, status_code, duration_ms, error)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (item.id, started, item.url, outcome.status_code, duration_ms, outcome.error),
    )
    delivered_at = started if tr.status == dom.DeliveryStatus.delivered else None
    store.execute(
        "UPDATE webhook_deliveries SET status=?, tries=?, attempts = attempts + 1,"
        " next_attempt_at=?, last_attempt_at=?, last_status=?, last_error=?,"
        " delivered_at=COALESCE(?, delivered_at) WHERE id=?",
        (
            tr.status.value,
            tr.tries,
            tr.next_attempt_at,
            started,
            outcome.status_code,
            outcome.error,
            delivered_at,
            item.id,
        ),
    )


SEAL_BATCH = 200


def seal_plain_rows(store: Store, box: SecretBox, limit: int = SEAL_BATCH) -> int:
    """Encrypt up to `limit` bodies stored in plain text (before sealing existed)."""
    rows = store.query(
        "SELECT id, body FROM webhook_deliveries WHERE sealed = 0 AND pruned_at IS NULL LIMIT ?",
        (limit,),
    )
    for r in rows:
        store.execute(
            "UPDATE webhook_deliveries SET body=?, sealed=1 WHERE id=? AND sealed=0"
            " AND pruned_at IS NULL",
            (seal(box, r["id"], bytes(r["body"])), r["id"]),
        )
    return len(rows)


def prune_bodies(
    store: Store, project: str, environment: str, source: str, before: float, now: float
) -> int:
    """Remove the bodies of a source's finished deliveries received before `before`;
    the rows stay as stubs. Waiting deliveries keep theirs."""
    return store.execute(
        "UPDATE webhook_deliveries SET body=x'', sealed=0, pruned_at=? WHERE project=?"
        " AND environment=? AND source=? AND received_at < ? AND pruned_at IS NULL"
        " AND status IN ('delivered', 'dead')",
        (now, project, environment, source, before),
    )


def prunable_sources(store: Store) -> list[tuple[str, str, str, float]]:
    """(project, environment, source, oldest receipt) with finished bodies still kept."""
    rows = store.query(
        "SELECT project, environment, source, MIN(received_at) AS oldest"
        " FROM webhook_deliveries WHERE pruned_at IS NULL AND status IN ('delivered', 'dead')"
        " GROUP BY project, environment, source"
    )
    return [(r["project"], r["environment"], r["source"], float(r["oldest"])) for r in rows]
