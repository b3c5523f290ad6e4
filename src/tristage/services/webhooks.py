"""The webhook gateway per environment: verify, store durably, forward with retries,
dead-letter, replay.

Ingest verifies a request with the provider's scheme and writes it to the state store
before the provider gets its 2xx. Writes go through one writer thread that commits
concurrent requests together (group commit), so the event loop never blocks on the
database and requests never contend for SQLite's write lock inside the process.

The forwarder claims due deliveries of environments that have a live release, posts
them with the original body and signature headers plus `X-Tristage-Delivery`, and
records every attempt. A failed attempt is retried on the source's schedule (with
jitter) and the delivery is dead-lettered after the last one. A claim is a lease
(`next_attempt_at` moved past the request timeout), so a crash mid-send only delays
the delivery.

Beside this module: `webhook_records.py` (the records and their store operations),
`batch_writer.py` (the group-commit writer), `webhook_poster.py` (the pooled HTTP
client that posts to the app).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets as pysecrets
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from ..domain import webhooks as dom
from ..domain.config import WebhookSource
from ..edges import webhook_providers as providers
from ..edges import webhook_verify as wv
from ..edges.store import Store
from ..errors import NotFound, TristageError, UsageError
from .batch_writer import BatchWriter
from .webhook_poster import Poster
from .webhook_records import (
    DELIVERY_COLUMNS,
    Attempt,
    Claimed,
    Delivery,
    DeliveryDetail,
    Endpoint,
    IngestResult,
    SendTestResult,
    SourceInfo,
    count_rejection,
    delivery_from_row,
    insert_delivery,
    prunable_sources,
    prune_bodies,
    record_attempt,
    release_claims,
    seal_plain_rows,
    unseal,
)

if TYPE_CHECKING:
    from ..api import Tristage

log = logging.getLogger("tristage.webhooks")

# (project, environment) -> base URL of the live release, e.g. "http://127.0.0.1:41234"
UpstreamLookup = Callable[[str, str], str | None]

ENDPOINT_TTL = 2.0  # seconds a source's config and secret are cached by ingest
RESIGN_AFTER = 240.0  # re-sign a retry whose original signature is older than this
ROUND_INTERVAL = 0.01  # the forwarder claims at most this often (wake-ups coalesce)
UPSTREAM_TTL = 0.25  # seconds a live-release lookup is reused by the forwarder
HOUSEKEEPING_INTERVAL = 300.0  # seconds between the forwarder's seal-and-prune passes
DEFAULT_SOURCE = WebhookSource(kind="standard", secret_var="UNSET")
DEFAULT_SCHEDULE = DEFAULT_SOURCE.retry_schedule
DAY = 86400.0

__all__ = [
    "Attempt",
    "BatchWriter",
    "Delivery",
    "DeliveryDetail",
    "Endpoint",
    "IngestResult",
    "SecretMissing",
    "SendTestResult",
    "SourceInfo",
    "WebhookService",
]


class SecretMissing(TristageError):
    """The environment has no value for the source's secret variable."""


class WebhookService:
    def __init__(self, api: Tristage) -> None:
        self.api = api
        self.writer = BatchWriter(api.store)
        self._endpoints: dict[tuple[str, str, str], tuple[float, Endpoint]] = {}
        self._wake: asyncio.Event | None = None
        self._wake_loop: asyncio.AbstractEventLoop | None = None
        self._rng = random.Random()
        self._upstreams: dict[tuple[str, str], tuple[float, str | None]] = {}

    def close(self) -> None:
        self.writer.stop()

    # -- configuration -----------------------------------------------------
    def source_config(self, project: str, environment: str, source: str) -> WebhookSource:
        cfg = self.api.config_for(project)
        env = cfg.env(environment)
        try:
            return env.webhooks[source]
        except KeyError:
            declared = ", ".join(env.webhooks) or "none"
            raise NotFound(
                f"no webhook source {source!r} in environment {environment!r} of {project}",
                f"declared sources: {declared}; add [environments.{environment}.webhooks."
                f"{source}] to tristage.toml",
            ) from None

    def secret_value(self, project: str, environment: str, var: str) -> str | None:
        """The signing secret from the environment's variables (never logged)."""
        value = self.api.variables.runtime_env(project, environment, None).get(var)
        return value or None

    def endpoint(self, project: str, environment: str, source: str) -> Endpoint:
        """A source's configuration and secrets (cached for ENDPOINT_TTL seconds)."""
        key = (project, environment, source)
        now = time.monotonic()
        hit = self._endpoints.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        config = self.source_config(project, environment, source)
        value = self.secret_value(project, environment, config.secret_var)
        ep = Endpoint(project, environment, source, config, tuple(wv.split_secrets(value or "")))
        self._endpoints[key] = (now + ENDPOINT_TTL, ep)
        return ep

    async def endpoint_async(self, project: str, environment: str, source: str) -> Endpoint:
        hit = self._endpoints.get((project, environment, source))
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return await asyncio.to_thread(self.endpoint, project, environment, source)

    # -- ingest ------------------------------------------------------------
    async def ingest(
        self,
        ep: Endpoint,
        headers: Mapping[str, str],
        body: bytes,
        *,
        remote: str | None = None,
    ) -> IngestResult:
        """Verify and durably store one delivery; the result is the HTTP answer."""
        if not ep.secrets:
            var = ep.config.secret_var
            return self.reject(
                ep,
                503,
                "no_secret",
                f"the secret variable {var} is not set in environment {ep.environment}; "
                f"set it with 'tristage env set {var} --env {ep.environment} --secret'",
                remote,
                len(body),
            )
        if len(body) > ep.config.max_body_bytes:
            return self.too_large(ep, remote, len(body))
        kind: dom.Kind = ep.config.kind
        try:
            # off the event loop: the signature over a large body would stall the router
            verified = await asyncio.to_thread(wv.verify, kind, ep.secrets, headers, body)
        except wv.VerificationError as exc:
            return self.reject(ep, exc.status, exc.reason, exc.message, remote, len(body))
        except wv.SecretFormatError as exc:
            return self.reject(
                ep,
                503,
                "bad_secret",
                f"{exc}: check {ep.config.secret_var} in environment {ep.environment}",
                remote,
                len(body),
            )
        except wv.UnknownProvider as exc:
            return self.reject(ep, 503, "unknown_kind", str(exc), remote, len(body))
        lower = {k.lower(): v for k, v in headers.items()}
        keep = {h: lower[h] for h in dom.PASSTHROUGH_HEADERS if h in lower}
        keep.update(verified.forward)  # what verified, under the app library's names
        row = (
            "whd_" + pysecrets.token_hex(8),
            ep.project,
            ep.environment,
            ep.source,
            kind,
            verified.message_id,
            verified.event_type,
            time.time(),
            json.dumps(keep, separators=(",", ":")),
            body,
            len(body),
            ep.config.path,
        )
        box = self.api.secret_box
        delivery_id, duplicate = await self.writer.run(lambda s: insert_delivery(s, row, box))
        if not duplicate:
            self.notify()
        return IngestResult(
            200,
            {"ok": True, "delivery": delivery_id, "duplicate": duplicate},
            delivery_id,
            duplicate,
        )

    def too_large(self, ep: Endpoint, remote: str | None, size: int) -> IngestResult:
        return self.reject(
            ep,
            413,
            "too_large",
            f"the body is larger than {ep.config.max_body_bytes} bytes "
            f"(max_body_bytes of webhook source {ep.source})",
            remote,
            size,
        )

    def reject(
        self,
        ep: Endpoint,
        status: int,
        reason: str,
        message: str,
        remote: str | None,
        size: int,
    ) -> IngestResult:
        """Count and log a refused request (never its body) and build the answer.

        The log carries the details for the operator; the answer goes to whoever sent
        the request, unauthenticated, so it never names the configuration (sources,
        project, environment, variables): a 5xx says only that the source is not ready."""
        level = logging.ERROR if status >= 500 else logging.WARNING
        log.log(
            level,
            "webhook refused: project=%s env=%s source=%s status=%d reason=%s bytes=%d "
            "remote=%s: %s",
            ep.project,
            ep.environment,
            ep.source,
            status,
            reason,
            size,
            remote or "-",
            message,
        )
        key = (ep.project, ep.environment, ep.source, reason, time.time())
        self.writer.submit(lambda s: count_rejection(s, key))
        return IngestResult(
            status, {"ok": False, "error": reason, "message": public(status, message)}
        )

    def unavailable(
        self, project: str, environment: str, source: str, exc: TristageError
    ) -> IngestResult:
        """The answer for a source that cannot be loaded: 404 when the configuration does
        not declare it, the platform's own 5xx otherwise (the provider retries later)."""
        status, code = (
            (exc.http_status, exc.code) if exc.http_status >= 500 else (404, "unknown_source")
        )
        log.log(
            logging.ERROR if status >= 500 else logging.WARNING,
            "webhook refused: project=%s env=%s source=%s status=%d reason=%s: %s",
            project,
            environment,
            source,
            status,
            code,
            exc,
        )
        return IngestResult(status, {"ok": False, "error": code, "message": public(status, "")})

    def notify(self) -> None:
        """Wake the forwarder now (a fresh delivery) instead of at its next poll."""
        loop, ev = self._wake_loop, self._wake
        if loop is None or ev is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            ev.set()
        else:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:
                pass

    def rejections(self, project: str) -> dict[tuple[str, str], dict[str, int]]:
        out: dict[tuple[str, str], dict[str, int]] = {}
        for r in self.api.store.query(
            "SELECT environment, source, reason, count FROM webhook_rejections WHERE project=?",
            (project,),
        ):
            out.setdefault((r["environment"], r["source"]), {})[r["reason"]] = r["count"]
        return out

    # -- forwarding --------------------------------------------------------
    async def run_forwarder(
        self,
        stop: asyncio.Event,
        upstream: UpstreamLookup,
        *,
        poll_interval: float = 1.0,
        concurrency: int = 16,
        timeout: float = 15.0,
    ) -> None:
        """Forward stored deliveries to live releases until `stop` is set.

        `concurrency` workers post deliveries; up to twice as many are claimed ahead
        (leased in the store) so the store is read once per batch, not per delivery.
        """
        loop = asyncio.get_running_loop()
        self._wake = wake = asyncio.Event()
        self._wake_loop = loop
        prefetch = concurrency * 2
        lease = timeout * 3 + 5.0  # covers the wait in the local queue and the request
        queue: asyncio.Queue[Claimed | None] = asyncio.Queue()
        outstanding = 0  # claimed and not finished
        stopper = asyncio.ensure_future(stop.wait())

        async def worker(client: Poster) -> None:
            nonlocal outstanding
            while True:
                item = await queue.get()
                if item is None:
                    return
                try:
                    await self._send(client, item)
                finally:
                    outstanding -= 1
                    if outstanding <= concurrency:
                        wake.set()

        try:
            async with Poster(timeout, concurrency) as client:
                workers = [asyncio.create_task(worker(client)) for _ in range(concurrency)]
                last_round = 0.0
                housekept = -HOUSEKEEPING_INTERVAL
                while not stop.is_set():
                    if time.monotonic() - housekept >= HOUSEKEEPING_INTERVAL:
                        housekept = time.monotonic()
                        try:
                            await self.housekeeping()
                        except Exception as exc:  # the store is busy or gone: next pass
                            log.error("webhook forwarder: sealing or pruning failed: %s", exc)
                    # coalesce wake-ups: at most one claim round per ROUND_INTERVAL
                    gap = last_round + ROUND_INTERVAL - time.monotonic()
                    if gap > 0:
                        await asyncio.sleep(gap)
                    wake.clear()
                    delay = poll_interval
                    if outstanding <= concurrency:
                        last_round = time.monotonic()
                        room = prefetch - outstanding
                        claimed: list[Claimed] = []
                        next_due: float | None = None
                        try:
                            claimed, next_due = await self._claim_round(upstream, room, lease)
                        except Exception as exc:  # the store is busy or gone: retry later
                            log.error("webhook forwarder: claiming failed: %s", exc)
                        for item in claimed:
                            queue.put_nowait(item)
                        outstanding += len(claimed)
                        if claimed and len(claimed) == room:
                            continue  # more may be due: claim again once the queue drains
                        if next_due is not None:
                            delay = min(delay, max(0.01, next_due - time.time()))
                    waiter = asyncio.ensure_future(wake.wait())
                    await asyncio.wait(
                        {waiter, stopper}, timeout=delay, return_when=asyncio.FIRST_COMPLETED
                    )
                    waiter.cancel()
                # stopping: hand back what was claimed but not started, finish the rest
                unsent: list[str] = []
                while not queue.empty():
                    left = queue.get_nowait()
                    if left is not None:
                        unsent.append(left.id)
                if unsent:
                    await self.writer.run(lambda s: release_claims(s, unsent))
                for _ in workers:
                    queue.put_nowait(None)
                _, pending = await asyncio.wait(workers, timeout=timeout + 1)
                for task in pending:
                    task.cancel()
        finally:
            stopper.cancel()
            if self._wake is wake:
                self._wake = None
                self._wake_loop = None

    async def housekeeping(self, now: float | None = None) -> tuple[int, int]:
        """Seal bodies stored in plain text, and remove the bodies of finished deliveries
        older than their source's `retain_days` (the rows stay). (sealed, pruned)"""
        box = self.api.secret_box
        sealed = 0
        while True:
            n = await self.writer.run(lambda s: seal_plain_rows(s, box))
            sealed += n
            if n == 0:
                break
        now = time.time() if now is None else now
        cuts: list[tuple[str, str, str, float]] = []
        for project, environment, source, oldest in await asyncio.to_thread(
            prunable_sources, self.api.store
        ):
            days = await asyncio.to_thread(self._retain_days, project, environment, source)
            before = now - days * DAY
            if oldest < before:
                cuts.append((project, environment, source, before))

        def prune(store: Store) -> int:
            return sum(prune_bodies(store, *cut, now) for cut in cuts)

        pruned = await self.writer.run(prune) if cuts else 0
        if pruned:
            log.info("webhooks: removed %d delivery bodies past their retention", pruned)
        return sealed, pruned

    def _retain_days(self, project: str, environment: str, source: str) -> float:
        try:
            return self.source_config(project, environment, source).retain_days
        except TristageError:  # the source or project is gone: the default retention
            return DEFAULT_SOURCE.retain_days

    async def _claim_round(
        self, upstream: UpstreamLookup, room: int, lease: float
    ) -> tuple[list[Claimed], float | None]:
        now = time.time()
        pairs = await asyncio.to_thread(self._waiting_pairs)
        live: dict[tuple[str, str], str] = {}
        next_due: float | None = None
        for project, environment, due in pairs:
            base = await self._upstream(upstream, project, environment)
            if not base:
                continue  # no live release: wait without spending attempts
            live[(project, environment)] = base
            if due > now and (next_due is None or due < next_due):
                next_due = due
        due_pairs = {(p, e): live[(p, e)] for p, e, d in pairs if (p, e) in live and d <= now}
        if not due_pairs:
            return [], next_due
        claimed = await self.writer.run(lambda s: self._claim(s, due_pairs, now, room, lease))
        return claimed, next_due

    async def _upstream(self, lookup: UpstreamLookup, project: str, environment: str) -> str | None:
        key = (project, environment)
        hit = self._upstreams.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        base = await asyncio.to_thread(lookup, project, environment)
        self._upstreams[key] = (now + UPSTREAM_TTL, base)
        return base

    def _waiting_pairs(self) -> list[tuple[str, str, float]]:
        """(project, environment, earliest due time) of every environment with waiting
        deliveries. A skip-scan of the `webhook_deliveries_due` index: a few seeks per
        environment and status, so a wake-up costs the same whatever the backlog."""
        head = (
            "SELECT project, environment, next_attempt_at FROM webhook_deliveries"
            " INDEXED BY webhook_deliveries_due WHERE status=? AND "
        )
        order = " ORDER BY status, project, environment, next_attempt_at LIMIT 1"
        due: dict[tuple[str, str], float] = {}
        for status in (dom.DeliveryStatus.pending.value, dom.DeliveryStatus.failed.value):
            r = self.api.store.query_one(head + "1" + order, (status,))
            while r is not None:
                key = (r["project"], r["environment"])
                at = float(r["next_attempt_at"] or 0)
                due[key] = min(at, due.get(key, at))
                # the next environment of this project, else the next project
                r = self.api.store.query_one(
                    head + "project=? AND environment>?" + order, (status, *key)
                ) or self.api.store.query_one(head + "project>?" + order, (status, key[0]))
        return [(p, e, at) for (p, e), at in sorted(due.items())]

    def _claim(
        self,
        store: Store,
        pairs: dict[tuple[str, str], str],
        now: float,
        room: int,
        lease: float,
    ) -> list[Claimed]:
        out: list[Claimed] = []
        box = self.api.secret_box
        for (project, environment), base in pairs.items():
            if len(out) >= room:
                break
            rows = store.query(
                "SELECT id, source, kind, message_id, received_at, headers, body, sealed,"
                " tries, path"
                " FROM webhook_deliveries WHERE status IN ('pending', 'failed')"
                " AND project=? AND environment=? AND next_attempt_at <= ?"
                " ORDER BY next_attempt_at LIMIT ?",
                (project, environment, now, room - len(out)),
            )
            for r in rows:
                store.execute(
                    "UPDATE webhook_deliveries SET next_attempt_at=? WHERE id=?",
                    (now + lease, r["id"]),
                )
                path, schedule = r["path"], None
                try:
                    cfg = self.source_config(project, environment, r["source"])
                    path, schedule = cfg.path, cfg.retry_schedule
                except TristageError:
                    pass  # the source was removed from tristage.toml: keep its last path
                if schedule is None:
                    schedule = DEFAULT_SCHEDULE
                out.append(
                    Claimed(
                        id=r["id"],
                        project=project,
                        environment=environment,
                        source=r["source"],
                        kind=r["kind"],
                        message_id=r["message_id"],
                        received_at=r["received_at"],
                        headers=json.loads(r["headers"]),
                        body=unseal(box, r["id"], bytes(r["body"]), r["sealed"]),
                        tries=r["tries"],
                        url=dom.forward_url(base, path),
                        schedule=list(schedule),
                    )
                )
        return out

    async def _send(self, client: Poster, item: Claimed) -> None:
        try:
            headers = dict(item.headers)
            if time.time() - item.received_at > RESIGN_AFTER:
                headers.update(await self._fresh_signature(item))
            headers["x-tristage-delivery"] = item.id
            headers["x-tristage-attempt"] = str(item.tries + 1)
            started = time.time()
            t0 = time.perf_counter()
            outcome = await client.post(item.url, headers, item.body)
            duration = (time.perf_counter() - t0) * 1000
            now = time.time()
            tr = dom.after_attempt(item.tries, outcome, item.schedule, now, self._rng.random())
            await self.writer.run(lambda s: record_attempt(s, item, started, duration, outcome, tr))
            if tr.status == dom.DeliveryStatus.dead:
                log.warning(
                    "webhook dead-lettered: %s (%s/%s/%s) after %d attempts: %s",
                    item.id,
                    item.project,
                    item.environment,
                    item.source,
                    tr.tries,
                    outcome.error,
                )
        except Exception as exc:  # never lose the forwarder to one delivery
            log.error("webhook forwarder: delivery %s: %s", item.id, exc)

    async def _fresh_signature(self, item: Claimed) -> dict[str, str]:
        """A late retry carries a fresh signature (same id, same body) made with the
        environment's secret, so the app's own 5-minute check accepts it."""
        try:
            ep = await self.endpoint_async(item.project, item.environment, item.source)
        except TristageError:
            return {}
        if not ep.secrets or ep.config.kind != item.kind:
            return {}
        return wv.sign(item.kind, ep.secrets[0], item.message_id, int(time.time()), item.body)

    # -- listing, show, replay ----------------------------------------------
    def deliveries(
        self,
        project: str,
        *,
        environment: str | None = None,
        status: str | None = None,
        source: str | None = None,
        limit: int = 50,
    ) -> list[Delivery]:
        clauses = ["project = ?"]
        params: list[Any] = [project]
        if environment is not None:
            self.api.config_for(project).env(environment)  # a clear error for a typo
            clauses.append("environment = ?")
            params.append(environment)
        if status is not None:
            if status not in dom.DeliveryStatus.__members__:
                raise UsageError(
                    f"unknown delivery status {status!r}",
                    f"use one of {', '.join(dom.DeliveryStatus.__members__)}",
                )
            clauses.append("status = ?")
            params.append(status)
        if source is not None:
            clauses.append("source = ?")
            params.append(source)
        rows = self.api.store.query(
            f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE {' AND '.join(clauses)}"
            " ORDER BY received_at DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [delivery_from_row(r) for r in rows]

    def counts(self, project: str, environment: str | None = None) -> dict[str, int]:
        sql = "SELECT status, COUNT(*) AS n FROM webhook_deliveries WHERE project=?"
        params: list[Any] = [project]
        if environment is not None:
            sql += " AND environment=?"
            params.append(environment)
        rows = self.api.store.query(sql + " GROUP BY status", params)
        return {r["status"]: r["n"] for r in rows}

    def show(self, delivery_id: str) -> DeliveryDetail:
        row = self.api.store.query_one(
            f"SELECT {DELIVERY_COLUMNS}, headers, body, sealed FROM webhook_deliveries WHERE id=?",
            (delivery_id,),
        )
        if row is None:
            raise NotFound(
                f"no webhook delivery {delivery_id!r}", "list them with 'tristage hooks deliveries'"
            )
        attempts = [
            Attempt(r["at"], r["url"], r["status_code"], r["duration_ms"], r["error"])
            for r in self.api.store.query(
                "SELECT at, url, status_code, duration_ms, error FROM webhook_attempts"
                " WHERE delivery_id=? ORDER BY id",
                (delivery_id,),
            )
        ]
        body = unseal(self.api.secret_box, delivery_id, bytes(row["body"]), row["sealed"])
        return DeliveryDetail(delivery_from_row(row), attempts, json.loads(row["headers"]), body)

    def replay(self, delivery_id: str) -> Delivery:
        """Queue a delivery again (any status) with a fresh retry schedule."""
        detail = self.show(delivery_id)
        d = detail.delivery
        if d.pruned_at is not None:
            raise UsageError(
                f"webhook delivery {delivery_id} cannot be replayed: its body was removed "
                "after the source's retention",
                f"raise retain_days of [environments.{d.environment}.webhooks.{d.source}] "
                "to keep bodies longer",
            )
        tr = dom.requeue(time.time())
        self.api.store.execute(
            "UPDATE webhook_deliveries SET status=?, tries=?, next_attempt_at=? WHERE id=?",
            (tr.status.value, tr.tries, tr.next_attempt_at, delivery_id),
        )
        self.api.audit.record(
            "webhook.replay",
            project=d.project,
            environment=d.environment,
            target=delivery_id,
            details={"source": d.source, "previous_status": d.status},
        )
        self.notify()
        return self.show(delivery_id).delivery

    def replay_dead(self, project: str, environment: str) -> list[str]:
        self.api.config_for(project).env(environment)
        tr = dom.requeue(time.time())
        with self.api.store.transaction():
            ids = [
                r["id"]
                for r in self.api.store.query(
                    "SELECT id FROM webhook_deliveries WHERE project=? AND environment=?"
                    " AND status='dead' AND pruned_at IS NULL ORDER BY received_at",
                    (project, environment),
                )
            ]
            self.api.store.execute(
                "UPDATE webhook_deliveries SET status=?, tries=?, next_attempt_at=?"
                " WHERE project=? AND environment=? AND status='dead' AND pruned_at IS NULL",
                (tr.status.value, tr.tries, tr.next_attempt_at, project, environment),
            )
        if ids:
            self.api.audit.record(
                "webhook.replay",
                project=project,
                environment=environment,
                target="dead",
                details={"count": len(ids)},
            )
            self.notify()
        return ids

    # -- URLs and send-test ---------------------------------------------------
    def urls(self, project: str, port: int | None = None) -> list[SourceInfo]:
        cfg = self.api.config_for(project)
        port = port or self.api.deploys.router_address()[1]
        rejected = self.rejections(project)
        out: list[SourceInfo] = []
        for env_name, env in cfg.environments.items():
            for name, src in env.webhooks.items():
                try:
                    secret_set = bool(self.secret_value(project, env_name, src.secret_var))
                except TristageError:
                    secret_set = False
                out.append(
                    SourceInfo(
                        environment=env_name,
                        source=name,
                        kind=src.kind,
                        path=src.path,
                        secret_var=src.secret_var,
                        secret_set=secret_set,
                        urls=dom.ingest_urls(
                            project, env_name, name, env_name == cfg.production, port
                        ),
                        rejected=rejected.get((env_name, name), {}),
                    )
                )
        return out

    def send_test(
        self,
        project: str,
        environment: str,
        source: str,
        event_type: str,
        *,
        base_url: str | None = None,
        timeout: float = 10.0,
    ) -> SendTestResult:
        """Build a realistic sample event, sign it with the environment's secret and
        POST it through the ingest URL (the router, or `base_url`)."""
        config = self.source_config(project, environment, source)
        value = self.secret_value(project, environment, config.secret_var)
        if not value:
            raise SecretMissing(
                f"the secret variable {config.secret_var} is not set in environment {environment}",
                f"set it with 'tristage env set {config.secret_var} --env {environment} "
                "--secret' (the value from the provider's dashboard)",
            )
        now = time.time()
        provider = providers.get(config.kind)
        msg_id, event = provider.sample_event(event_type, now, random.Random())
        body = json.dumps(event, separators=(",", ":")).encode()
        secret = wv.split_secrets(value)[-1]
        try:
            headers = provider.sign(secret, msg_id, int(now), body)
        except Exception as exc:
            raise UsageError(
                f"{config.secret_var} is not a valid {config.kind} signing secret: {exc}",
                "copy the signing secret from the provider's dashboard (whsec_...)",
            ) from None
        headers["content-type"] = "application/json"
        headers["user-agent"] = "tristage-send-test"
        path = dom.ingest_path(source)
        cfg = self.api.config_for(project)
        host = dom.ingest_hosts(project, environment, environment == cfg.production)[0]
        if base_url:
            url = base_url.rstrip("/") + path
            target = httpx.URL(url)
            if _is_address(target.host):
                # the router itself, addressed by IP: route by the environment's host
                headers["host"] = f"{host}:{target.port or 80}"
        else:
            address, port = self.api.deploys.router_address()
            headers["host"] = f"{host}:{port}"
            url = f"http://{address}:{port}{path}"
        try:
            resp = httpx.post(url, content=body, headers=headers, timeout=timeout)
        except httpx.HTTPError as exc:
            raise TristageError(
                f"could not reach the ingest URL {url}: {exc}",
                "is the control plane running? start it with 'tristage up'",
            ) from None
        try:
            answer: Any = resp.json()
        except ValueError:
            answer = {"text": resp.text[:300]}
        self.api.audit.record(
            "webhook.send_test",
            project=project,
            environment=environment,
            target=source,
            details={"event_type": event_type, "status": resp.status_code, "message_id": msg_id},
        )
        return SendTestResult(
            url, resp.status_code, msg_id, event_type, answer if isinstance(answer, dict) else {}
        )


def public(status: int, message: str) -> str:
    """What an unauthenticated answer may say: the request's own fault in full (it
    names nothing of the configuration), else only the kind of failure."""
    if status == 404:
        return "no webhook source here"
    if status >= 500:
        return "this webhook source cannot take deliveries now; retry later"
    return message


def _is_address(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
