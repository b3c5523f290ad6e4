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
    destination: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DestinationState:
    """One destination's forwarding state for one delivery."""

    destination: str
    status: str
    tries: int
    attempts: int
    next_attempt_at: float | None
    last_attempt_at: float | None
    last_status: int | None
    last_error: str | None
    delivered_at: float | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DeliveryDetail:
    delivery: Delivery
    attempts: list[Attempt]
    headers: dict[str, str]
    body: bytes
    destinations: list[DestinationState] = field(default_factory=list)

    def as_json(self, with_body: bool = False) -> dict[str, Any]:
        out = {**self.delivery.as_json(), "attempts": [a.as_json() for a in self.attempts]}
        out["destinations"] = [d.as_json() for d in self.destinations]
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
class Target:
    """A destination of a claimed delivery: where it goes and how it stands."""

    name: str
    url: str
    state: dom.Transition  # as stored (a fresh destination: pending, 0 tries, due)
    due: bool  # to be posted in this round
    paused: bool = False  # keeps failing: waits for a resume (or a probe)


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
    targets: list[Target]
    schedule: list[float]
    pause_after: float | None = None
    probe: bool = False

    @property
    def url(self) -> str:
        return self.targets[0].url if self.targets else ""


@dataclass
class Posted:
    """One attempt at one destination, and where it leaves that destination."""

    target: Target
    started: float
    duration_ms: float
    outcome: dom.Outcome
    transition: dom.Transition


@dataclass(frozen=True)
class EndpointKey:
    project: str
    environment: str
    source: str
    destination: str

    @property
    def label(self) -> str:
        return f"webhook:{self.source}/{self.destination}"


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


def insert_delivery(
    store: Store, row: tuple[Any, ...], box: SecretBox, filtered: str | None = None
) -> tuple[str, bool]:
    """Store a verified delivery, its body sealed; a message id seen before is counted.
    `filtered`: why it is kept but not forwarded (status `filtered`)."""
    sealed_row = (*row[:9], seal(box, str(row[0]), row[9]), *row[10:])
    if filtered is None:
        status, due = "pending", row[7]
    else:
        status, due = "filtered", None
    changed = store.execute(
        "INSERT INTO webhook_deliveries (id, project, environment, source, kind,"
        " message_id, event_type, received_at, headers, body, size, path, status,"
        " next_attempt_at, last_error, sealed) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,1)"
        " ON CONFLICT (project, environment, source, message_id) DO NOTHING",
        (*sealed_row, status, due, filtered),
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


DESTINATION_COLUMNS = (
    "destination, status, tries, attempts, next_attempt_at, last_attempt_at, last_status,"
    " last_error, delivered_at"
)


def destination_states(store: Store, ids: list[str]) -> dict[str, dict[str, Row]]:
    """delivery id -> destination -> its stored state row."""
    out: dict[str, dict[str, Row]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for r in store.query(
            f"SELECT delivery_id, {DESTINATION_COLUMNS} FROM webhook_destinations"
            f" WHERE delivery_id IN ({marks})",
            chunk,
        ):
            out.setdefault(r["delivery_id"], {})[r["destination"]] = r
    return out


def record_attempts(
    store: Store, item: Claimed, posted: list[Posted], overall: dom.Transition
) -> None:
    """Write the attempts of one round of a delivery, each destination's state, and the
    delivery's own summary (its status is every destination's together). A delivery
    with one destination keeps that destination's state in its own row only."""
    last: Posted | None = None
    several = len(item.targets) > 1
    for p in posted:
        o, tr = p.outcome, p.transition
        store.execute(
            "INSERT INTO webhook_attempts (delivery_id, at, url, status_code, duration_ms,"
            " error, destination) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (item.id, p.started, p.target.url, o.status_code, p.duration_ms, o.error,
             p.target.name),
        )  # fmt: skip
        delivered_at = p.started if tr.status == dom.DeliveryStatus.delivered else None
        if several:
            _record_destination(store, item.id, p, delivered_at)
        if last is None or not o.ok or last.outcome.ok:
            last = p  # the delivery shows a failure over a success
    _record_summary(store, item, posted, overall, last)


def _record_destination(
    store: Store, delivery_id: str, p: Posted, delivered_at: float | None
) -> None:
    o, tr = p.outcome, p.transition
    store.execute(
        "INSERT INTO webhook_destinations (delivery_id, destination, status, tries,"
        " attempts, next_attempt_at, last_attempt_at, last_status, last_error,"
        " delivered_at) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?, ?)"
        " ON CONFLICT (delivery_id, destination) DO UPDATE SET status=excluded.status,"
        " tries=excluded.tries, attempts=webhook_destinations.attempts + 1,"
        " next_attempt_at=excluded.next_attempt_at,"
        " last_attempt_at=excluded.last_attempt_at, last_status=excluded.last_status,"
        " last_error=excluded.last_error,"
        " delivered_at=COALESCE(excluded.delivered_at, webhook_destinations.delivered_at)",
        (delivery_id, p.target.name, tr.status.value, tr.tries, tr.next_attempt_at,
         p.started, o.status_code, o.error, delivered_at),
    )  # fmt: skip


def _record_summary(
    store: Store, item: Claimed, posted: list[Posted], overall: dom.Transition, last: Posted | None
) -> None:
    if last is None:  # nothing was due (a paused destination): just the next look
        store.execute(
            "UPDATE webhook_deliveries SET status=?, next_attempt_at=? WHERE id=?",
            (overall.status.value, overall.next_attempt_at, item.id),
        )
        return
    delivered_at = last.started if overall.status == dom.DeliveryStatus.delivered else None
    store.execute(
        "UPDATE webhook_deliveries SET status=?, tries=?, attempts = attempts + ?,"
        " next_attempt_at=?, last_attempt_at=?, last_status=?, last_error=?,"
        " delivered_at=COALESCE(?, delivered_at), probe=0 WHERE id=?",
        (
            overall.status.value,
            overall.tries,
            len(posted),
            overall.next_attempt_at,
            last.started,
            last.outcome.status_code,
            last.outcome.error,
            delivered_at,
            item.id,
        ),
    )


def endpoint_failing(
    store: Store, key: EndpointKey, since: float, reason: str, pause_at: float | None
) -> bool:
    """Record that a destination failed (failing since `since`); with `pause_at`, pause it.
    True when this call paused it (the caller alerts once)."""
    store.execute(
        "INSERT INTO webhook_endpoint_state (project, environment, source, destination,"
        " failing_since, reason) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (project, environment, source, destination) DO UPDATE"
        " SET reason=excluded.reason",
        (key.project, key.environment, key.source, key.destination, since, reason),
    )
    if pause_at is None:
        return False
    return (
        store.execute(
            "UPDATE webhook_endpoint_state SET paused_at=? WHERE project=? AND environment=?"
            " AND source=? AND destination=? AND paused_at IS NULL",
            (pause_at, key.project, key.environment, key.source, key.destination),
        )
        > 0
    )


def endpoint_recovered(store: Store, key: EndpointKey, now: float) -> bool:
    """A destination answered 2xx: healthy again. True when it was paused (its waiting
    deliveries are due now)."""
    row = store.query_one(
        "SELECT paused_at FROM webhook_endpoint_state WHERE project=? AND environment=?"
        " AND source=? AND destination=?",
        (key.project, key.environment, key.source, key.destination),
    )
    if row is None:
        return False
    store.execute(
        "DELETE FROM webhook_endpoint_state WHERE project=? AND environment=? AND source=?"
        " AND destination=?",
        (key.project, key.environment, key.source, key.destination),
    )
    if row["paused_at"] is None:
        return False
    due_now(store, key.project, key.environment, key.source, now)
    return True


def due_now(store: Store, project: str, environment: str, source: str, now: float) -> None:
    store.execute(
        "UPDATE webhook_deliveries SET next_attempt_at=? WHERE project=? AND environment=?"
        " AND source=? AND status IN ('pending', 'failed')",
        (now, project, environment, source),
    )


def endpoint_states(store: Store) -> dict[EndpointKey, tuple[float, float | None]]:
    """Every failing or paused destination: key -> (failing since, paused at)."""
    return {
        EndpointKey(r["project"], r["environment"], r["source"], r["destination"]): (
            float(r["failing_since"]),
            r["paused_at"],
        )
        for r in store.query(
            "SELECT project, environment, source, destination, failing_since, paused_at"
            " FROM webhook_endpoint_state"
        )
    }


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
        "UPDATE webhook_deliveries SET body=x'', headers='{}', sealed=0, pruned_at=?"
        " WHERE project=? AND environment=? AND source=? AND received_at < ?"
        " AND pruned_at IS NULL AND status IN ('delivered', 'dead', 'filtered')",
        (now, project, environment, source, before),
    )


def prunable_sources(store: Store) -> list[tuple[str, str, str, float]]:
    """(project, environment, source, oldest receipt) with finished bodies still kept."""
    rows = store.query(
        "SELECT project, environment, source, MIN(received_at) AS oldest"
        " FROM webhook_deliveries WHERE pruned_at IS NULL"
        " AND status IN ('delivered', 'dead', 'filtered')"
        " GROUP BY project, environment, source"
    )
    return [(r["project"], r["environment"], r["source"], float(r["oldest"])) for r in rows]
