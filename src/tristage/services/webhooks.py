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
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import httpx

from ..domain import monitor as alerts
from ..domain import webhooks as dom
from ..domain.config import WebhookDestination, WebhookSource, parse_rate
from ..edges import webhook_providers as providers
from ..edges import webhook_verify as wv
from ..edges.store import Store
from ..errors import NotFound, TristageError, UsageError
from .batch_writer import BatchWriter
from .webhook_poster import Poster
from .webhook_records import (
    DELIVERY_COLUMNS,
    DESTINATION_COLUMNS,
    Attempt,
    Claimed,
    Delivery,
    DeliveryDetail,
    DestinationState,
    Endpoint,
    EndpointKey,
    IngestResult,
    Posted,
    SendTestResult,
    SourceInfo,
    Target,
    count_rejection,
    delivery_from_row,
    destination_states,
    due_now,
    endpoint_failing,
    endpoint_recovered,
    endpoint_states,
    insert_delivery,
    prunable_sources,
    prune_bodies,
    record_attempts,
    release_claims,
    seal_plain_rows,
    unseal,
)

if TYPE_CHECKING:
    from ..api import Tristage
    from .monitor import Monitor

log = logging.getLogger("tristage.webhooks")


class DeliverySelection(TypedDict, total=False):
    """The filters of `select` and `replay_many` (each unset or None: any)."""

    environment: str | None
    status: str | None
    source: str | None
    event_type: str | None
    since: float | None
    until: float | None


# (project, environment) -> base URL of the live release, e.g. "http://127.0.0.1:41234"
UpstreamLookup = Callable[[str, str], str | None]

ENDPOINT_TTL = 2.0  # seconds a source's config and secret are cached by ingest
INLINE_VERIFY_BYTES = 16384  # bodies up to this size are verified on the event loop
SHED_AFTER = 50  # refused (forged, malformed) requests in a second at one environment ...
SHED_BODY_BYTES = 65536  # ... after which its bodies larger than this are refused unread
SHED_SECONDS = 2.0  # ... for this long (renewed while the flood lasts)
RESIGN_AFTER = 240.0  # re-sign a retry whose original signature is older than this
ROUND_INTERVAL = 0.01  # the forwarder claims at most this often (wake-ups coalesce)
UPSTREAM_TTL = 0.25  # seconds a live-release lookup is reused by the forwarder
HOUSEKEEPING_INTERVAL = 300.0  # seconds between the forwarder's seal-and-prune passes
PAUSED_RECHECK = 300.0  # a delivery waiting only on paused destinations is looked at again
DEFAULT_SOURCE = WebhookSource(kind="standard", secret_var="UNSET")
DEFAULT_SCHEDULE = DEFAULT_SOURCE.retry_schedule
DAY = 86400.0
DEFAULT_RETAIN_DAYS = 30.0

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
        # per-source limits (max_in_flight, rate), kept by the forwarder's loop
        self._inflight: dict[tuple[str, str, str], int] = {}
        self._buckets: dict[tuple[str, str, str], tuple[float, float]] = {}  # tokens, at
        # failing or paused destinations, as of the last claim round
        self._endpoint_state: dict[EndpointKey, tuple[float, float | None]] = {}
        self._monitor: Monitor | None = None
        # environments under a flood of refused requests: (window start, count), until
        self._refusals: dict[tuple[str, str], tuple[float, int]] = {}
        self._shed_until: dict[tuple[str, str], float] = {}

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
            if len(body) <= INLINE_VERIFY_BYTES:
                # a usual delivery: verified in well under 0.1 ms, less than a thread hop
                verified = wv.verify(kind, ep.secrets, headers, body)
            else:  # off the event loop: the signature over a large body would stall it
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
        filtered = None
        if not dom.event_selected(ep.config.events, verified.event_type):
            filtered = (
                f"filtered: event type {verified.event_type or '(none)'} is not in events = "
                f"{json.dumps(ep.config.events)} of source {ep.source}"
            )

        def store(s: Store) -> tuple[str, bool]:
            return insert_delivery(s, row, box, filtered)

        # committed on this loop with the deliveries that arrived with it, when nothing
        # waits; else by the writer thread's group commit
        delivery_id, duplicate = await self.writer.run_here(store)
        if not duplicate and filtered is None:
            self.notify((ep.project, ep.environment))
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
        if status in (400, 401):
            self._refused_at((ep.project, ep.environment))
        return IngestResult(
            status, {"ok": False, "error": reason, "message": public(status, message)}
        )

    def _refused_at(self, environment: tuple[str, str]) -> None:
        """Count a forged or malformed request at an environment; past SHED_AFTER in a
        second its large bodies are refused unread for SHED_SECONDS."""
        now = time.monotonic()
        start, count = self._refusals.get(environment, (now, 0))
        if now - start > 1.0:
            start, count = now, 0
        count += 1
        self._refusals[environment] = (start, count)
        if count == SHED_AFTER:
            if self._shed_until.get(environment, 0.0) <= now:
                log.warning(
                    "webhook flood: project=%s env=%s refused %d requests in a second; "
                    "bodies over %d bytes are refused unread for %g s",
                    *environment,
                    count,
                    SHED_BODY_BYTES,
                    SHED_SECONDS,
                )
            self._shed_until[environment] = now + SHED_SECONDS
            self._refusals[environment] = (now, 0)

    def shedding(self, ep: Endpoint, size: int) -> IngestResult | None:
        """The answer for a large body at an environment under a flood of refused
        requests (503 with Retry-After, read no further), else None. Small bodies are
        still verified: a genuine delivery is rarely large, and cheap to check."""
        if size <= SHED_BODY_BYTES:
            return None
        until = self._shed_until.get((ep.project, ep.environment))
        if until is None or until <= time.monotonic():
            return None
        self._refused_at((ep.project, ep.environment))  # the flood goes on: keep shedding
        return IngestResult(
            503,
            {
                "ok": False,
                "error": "busy",
                "message": "too many refused deliveries at this environment; retry later",
            },
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

    def notify(self, environment: tuple[str, str] | None = None) -> None:
        """Wake the forwarder now (a fresh delivery) instead of at its next poll. A
        delivery to an `environment` (project, name) the forwarder just saw without a
        live release wakes nothing: it goes out at the poll after a release is live."""
        loop, ev = self._wake_loop, self._wake
        if loop is None or ev is None:
            return
        if environment is not None:
            hit = self._upstreams.get(environment)
            if hit is not None and hit[1] is None and hit[0] > time.monotonic():
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
        monitor: Monitor | None = None,
    ) -> None:
        """Forward stored deliveries to live releases until `stop` is set.

        `concurrency` workers post deliveries; up to twice as many are claimed ahead
        (leased in the store) so the store is read once per batch, not per delivery.
        A source's `max_in_flight` and `rate` bound what is claimed of it. Alerts (an
        endpoint gone or paused) go through `monitor` (the control plane's), else
        straight to the store.
        """
        loop = asyncio.get_running_loop()
        self._monitor = monitor
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
                key = (item.project, item.environment, item.source)
                try:
                    await self._send(client, item)
                finally:
                    outstanding -= 1
                    held = self._inflight.get(key)
                    if held is not None:
                        self._inflight[key] = held - 1
                    if outstanding <= concurrency or held is not None:
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
        """The source's `retain_days`, else its environment's `webhook_retain_days`."""
        try:
            env = self.api.config_for(project).env(environment)
        except TristageError:  # the project or environment is gone: the default retention
            return DEFAULT_RETAIN_DAYS
        src = env.webhooks.get(source)
        if src is not None and src.retain_days is not None:
            return src.retain_days
        return env.webhook_retain_days

    async def _claim_round(
        self, upstream: UpstreamLookup, room: int, lease: float
    ) -> tuple[list[Claimed], float | None]:
        now = time.time()
        pairs, self._endpoint_state = await asyncio.to_thread(self._round_reads)
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
        configs = await asyncio.to_thread(self._source_configs, list(due_pairs))
        budgets = self._budgets(configs, now)
        claimed = await self.writer.run(
            lambda s: self._claim(s, due_pairs, now, room, lease, budgets, configs)
        )
        taken: dict[tuple[str, str, str], int] = {}
        for item in claimed:
            key = (item.project, item.environment, item.source)
            taken[key] = taken.get(key, 0) + 1
        for key, (limit, _probe_only) in budgets.items():
            n = taken.get(key, 0)
            cfg = configs[key[:2]][key[2]]
            if cfg.max_in_flight is not None:
                self._inflight[key] = self._inflight.get(key, 0) + n
            if cfg.rate is not None:
                tokens, at = self._buckets[key]
                tokens -= n
                self._buckets[key] = (tokens, at)
                if n >= limit:  # held back by the rate: look again when a token is due
                    wait = (1.0 - tokens) / parse_rate(cfg.rate)
                    next_due = min(next_due or now + wait, now + max(wait, 0.001))
        return claimed, next_due

    def _round_reads(
        self,
    ) -> tuple[list[tuple[str, str, float]], dict[EndpointKey, tuple[float, float | None]]]:
        return self._waiting_pairs(), endpoint_states(self.api.store)

    def _source_configs(
        self, pairs: list[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, WebhookSource]]:
        out: dict[tuple[str, str], dict[str, WebhookSource]] = {}
        for project, environment in pairs:
            try:
                out[(project, environment)] = dict(
                    self.api.config_for(project).env(environment).webhooks
                )
            except TristageError:  # removed: its deliveries go where they were bound
                out[(project, environment)] = {}
        return out

    def _budgets(
        self, configs: dict[tuple[str, str], dict[str, WebhookSource]], now: float
    ) -> dict[tuple[str, str, str], tuple[int, bool]]:
        """(project, environment, source) -> (most to claim now, only send-test probes)
        for the sources with a limit or with every destination paused."""
        out: dict[tuple[str, str, str], tuple[int, bool]] = {}
        paused = {k for k, (_, at) in self._endpoint_state.items() if at is not None}
        for (project, environment), sources in configs.items():
            for name, cfg in sources.items():
                key = (project, environment, name)
                limit = 1 << 30
                if cfg.max_in_flight is not None:
                    limit = max(0, cfg.max_in_flight - self._inflight.get(key, 0))
                else:
                    self._inflight.pop(key, None)
                if cfg.rate is not None:
                    per_second = parse_rate(cfg.rate)
                    burst = max(1.0, per_second)
                    tokens, at = self._buckets.get(key, (burst, now))
                    tokens = min(burst, tokens + (now - at) * per_second)
                    self._buckets[key] = (tokens, now)
                    limit = min(limit, max(0, int(tokens)))
                probe_only = all(
                    EndpointKey(project, environment, name, r.label) in paused for r in cfg.routes()
                )
                if limit < 1 << 30 or probe_only:
                    out[key] = (limit, probe_only)
        return out

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
        budgets: dict[tuple[str, str, str], tuple[int, bool]] | None = None,
        configs: dict[tuple[str, str], dict[str, WebhookSource]] | None = None,
    ) -> list[Claimed]:
        out: list[Claimed] = []
        budgets = budgets or {}
        if configs is None:
            configs = self._source_configs(list(pairs))
        head = (
            "SELECT id, source, kind, message_id, received_at, headers, body, sealed,"
            " tries, path, probe"
            " FROM webhook_deliveries WHERE status IN ('pending', 'failed')"
            " AND project=? AND environment=? AND next_attempt_at <= ?"
        )
        for (project, environment), base in pairs.items():
            if len(out) >= room:
                break
            sources = configs.get((project, environment), {})
            limited = {
                name: b for name in sources if (b := budgets.get((project, environment, name)))
            }
            selects: list[tuple[str, list[Any], int]] = []
            for name, (limit, probe_only) in limited.items():
                clause = " AND source=?" + (" AND probe=1" if probe_only else "")
                selects.append((clause, [name], limit))
            rest = ""
            if limited:
                rest = f" AND source NOT IN ({','.join('?' * len(limited))})"
            selects.append((rest, list(limited), room))
            rows: list[Any] = []
            for clause, params, limit in selects:
                take = min(limit, room - len(out) - len(rows))
                if take <= 0:
                    continue
                rows += store.query(
                    head + clause + " ORDER BY next_attempt_at LIMIT ?",
                    (project, environment, now, *params, take),
                )
            if not rows:
                continue
            ids = [r["id"] for r in rows]
            store.execute(
                "UPDATE webhook_deliveries SET next_attempt_at=?"
                f" WHERE id IN ({','.join('?' * len(ids))})",
                (now + lease, *ids),
            )
            states = destination_states(store, ids)
            for r in rows:
                out.append(self._claimed(r, project, environment, base, sources, states, now))
        return out

    def _claimed(
        self,
        r: Any,
        project: str,
        environment: str,
        base: str,
        sources: dict[str, WebhookSource],
        states: dict[str, dict[str, Any]],
        now: float,
    ) -> Claimed:
        cfg = sources.get(r["source"])
        if cfg is None:  # the source was removed from tristage.toml: keep its last path
            routes = [WebhookDestination(path=r["path"])]
            schedule, pause_after = list(DEFAULT_SCHEDULE), None
        else:
            routes = cfg.routes()
            schedule, pause_after = list(cfg.retry_schedule), cfg.pause_after
        known = states.get(r["id"], {})
        targets: list[Target] = []
        for route in routes:
            name = route.label
            url = route.url if route.url is not None else dom.forward_url(base, route.path or "/")
            st = known.get(name)
            if st is None:  # not tried yet (a delivery from before destinations: its tries)
                state = dom.Transition(dom.DeliveryStatus.pending, 0 if known else r["tries"], now)
            else:
                state = dom.Transition(
                    dom.DeliveryStatus(st["status"]), st["tries"], st["next_attempt_at"]
                )
            waiting = state.status.waiting
            due = waiting and (state.next_attempt_at or 0) <= now
            key = EndpointKey(project, environment, r["source"], name)
            held = self._endpoint_state.get(key)
            paused = waiting and held is not None and held[1] is not None and not r["probe"]
            targets.append(Target(name, url, state, due and not paused, paused))
        return Claimed(
            id=r["id"],
            project=project,
            environment=environment,
            source=r["source"],
            kind=r["kind"],
            message_id=r["message_id"],
            received_at=r["received_at"],
            headers=json.loads(r["headers"]),
            body=unseal(self.api.secret_box, r["id"], bytes(r["body"]), r["sealed"]),
            tries=r["tries"],
            targets=targets,
            schedule=schedule,
            pause_after=pause_after,
            probe=bool(r["probe"]),
        )

    async def _send(self, client: Poster, item: Claimed) -> None:
        try:
            headers = dict(item.headers)
            if time.time() - item.received_at > RESIGN_AFTER:
                headers.update(await self._fresh_signature(item))
            headers["x-tristage-delivery"] = item.id
            due = [t for t in item.targets if t.due]
            if len(due) == 1:
                posted = [await self._post(client, item, due[0], headers)]
            else:
                posted = list(
                    await asyncio.gather(*(self._post(client, item, t, headers) for t in due))
                )
            now = time.time()
            sent = {p.target.name: p.transition for p in posted}
            states = []
            for t in item.targets:
                if t.name in sent:
                    states.append(sent[t.name])
                elif t.paused:
                    states.append(
                        dom.Transition(t.state.status, t.state.tries, now + PAUSED_RECHECK)
                    )
                else:
                    states.append(t.state)
            overall = dom.combine(states)
            events = await self.writer.run(lambda s: self._settle(s, item, posted, overall, now))
            for p in posted:
                if p.transition.status == dom.DeliveryStatus.dead:
                    log.warning(
                        "webhook dead-lettered: %s (%s/%s/%s -> %s) after %d attempts: %s",
                        item.id,
                        item.project,
                        item.environment,
                        item.source,
                        p.target.name,
                        p.transition.tries,
                        p.outcome.error,
                    )
            for kind, key, detail in events:
                await asyncio.to_thread(self._endpoint_event, kind, key, detail)
        except Exception as exc:  # never lose the forwarder to one delivery
            log.error("webhook forwarder: delivery %s: %s", item.id, exc)

    async def _post(
        self, client: Poster, item: Claimed, target: Target, headers: dict[str, str]
    ) -> Posted:
        sent = {**headers, "x-tristage-attempt": str(target.state.tries + 1)}
        started = time.time()
        t0 = time.perf_counter()
        outcome = await client.post(target.url, sent, item.body)
        duration = (time.perf_counter() - t0) * 1000
        tr = dom.after_attempt(
            target.state.tries, outcome, item.schedule, time.time(), self._rng.random()
        )
        return Posted(target, started, duration, outcome, tr)

    def _settle(
        self,
        store: Store,
        item: Claimed,
        posted: list[Posted],
        overall: dom.Transition,
        now: float,
    ) -> list[tuple[str, EndpointKey, str]]:
        """Record a round's attempts and each destination's health (on the writer thread):
        a 2xx clears a failing destination (resumes a paused one), a 410 pauses it at
        once, failing past `pause_after` pauses it. The events to alert on."""
        record_attempts(store, item, posted, overall)
        events: list[tuple[str, EndpointKey, str]] = []
        for p in posted:
            key = EndpointKey(item.project, item.environment, item.source, p.target.name)
            held = self._endpoint_state.get(key)
            if p.outcome.ok:
                if held is not None:
                    self._endpoint_state.pop(key, None)
                    if endpoint_recovered(store, key, now):
                        events.append(("resumed", key, f"{p.target.url} answered 2xx"))
                continue
            since = held[0] if held is not None else now
            reason = p.outcome.error or f"HTTP {p.outcome.status_code}"
            overdue = item.pause_after is not None and now - since >= item.pause_after
            pause_at = now if p.outcome.gone or overdue else None
            if endpoint_failing(store, key, since, reason, pause_at):
                kind = "gone" if p.outcome.gone else "paused"
                events.append((kind, key, f"{p.target.url}: {reason}"))
            self._endpoint_state[key] = (since, pause_at if pause_at else held and held[1])
        return events

    def _endpoint_event(self, kind: str, key: EndpointKey, detail: str) -> None:
        """Alert that a destination is gone or paused, or resolve it once resumed."""
        try:
            cfg = self.api.config_for(key.project)
        except TristageError:
            return
        monitor = self._alerting()
        where = f"{key.project}/{key.environment} webhook source {key.source} -> {key.destination}"
        resume = f"tristage hooks resume {key.environment} {key.source}"
        if kind == "resumed":
            for alert_kind in alerts.WEBHOOK_KINDS:
                open_alert = monitor._open_alert(
                    key.project, key.environment, key.label, alert_kind
                )
                if open_alert is not None:
                    monitor.resolve_alert(cfg, open_alert, f"resumed: {detail}")
            log.info("webhook destination resumed: %s (%s)", where, detail)
            self.notify()
            return
        if kind == "gone":
            alert_kind, message = (
                alerts.Kind.webhook_gone,
                f"{where}: the endpoint answered 410 Gone; the delivery is dead-lettered and "
                f"the destination paused (fix the endpoint, then '{resume}')",
            )
        else:
            alert_kind, message = (
                alerts.Kind.webhook_paused,
                f"{where}: failing for longer than pause_after, paused; deliveries wait "
                f"(fix the endpoint, then '{resume}' or a successful 'hooks send-test')",
            )
        log.warning("webhook destination paused: %s: %s", where, detail)
        if monitor._open_alert(key.project, key.environment, key.label, alert_kind) is None:
            monitor.raise_alert(
                cfg, key.project, key.environment, key.label, alert_kind, "critical", message,
                {"source": key.source, "destination": key.destination, "last_error": detail},
            )  # fmt: skip

    def _alerting(self) -> Monitor:
        if self._monitor is None:
            from .monitor import Monitor

            self._monitor = Monitor(self.api, dict, lambda line: log.warning("%s", line))
        return self._monitor

    def paused(self, project: str, environment: str | None = None) -> list[dict[str, Any]]:
        """Destinations that are failing or paused, with since when and why."""
        sql = (
            "SELECT environment, source, destination, failing_since, paused_at, reason"
            " FROM webhook_endpoint_state WHERE project=?"
        )
        params: list[Any] = [project]
        if environment is not None:
            sql += " AND environment=?"
            params.append(environment)
        return self.api.store.query(sql + " ORDER BY environment, source, destination", params)

    def resume(
        self, project: str, environment: str, source: str, destination: str | None = None
    ) -> list[str]:
        """Resume a source's paused (or failing) destinations: their waiting deliveries
        go out now and their alerts close. The destinations resumed."""
        config = self.source_config(project, environment, source)
        names = [r.label for r in config.routes()]
        if destination is not None and destination not in names:
            raise NotFound(
                f"webhook source {source} has no destination {destination!r}",
                f"its destinations: {', '.join(names)}",
            )
        now = time.time()
        resumed: list[str] = []
        with self.api.store.transaction():
            for r in self.paused(project, environment):
                if r["source"] != source or destination not in (None, r["destination"]):
                    continue
                self.api.store.execute(
                    "DELETE FROM webhook_endpoint_state WHERE project=? AND environment=?"
                    " AND source=? AND destination=?",
                    (project, environment, source, r["destination"]),
                )
                if r["paused_at"] is not None:
                    resumed.append(r["destination"])
            due_now(self.api.store, project, environment, source, now)
            self.api.audit.record(
                "webhook.resume",
                project=project,
                environment=environment,
                target=source,
                details={"destinations": resumed},
            )
        for name in resumed:
            self._endpoint_event(
                "resumed", EndpointKey(project, environment, source, name), "tristage hooks resume"
            )
        self.notify()
        return resumed

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
    def _delivery_filter(
        self, project: str, environment: str | None, status: str | None, source: str | None
    ) -> tuple[list[str], list[Any]]:
        """The WHERE clauses and parameters that select a project's deliveries (listing and
        replay share them); an unknown environment or status is a clear error."""
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
        return clauses, params

    def deliveries(
        self,
        project: str,
        *,
        environment: str | None = None,
        status: str | None = None,
        source: str | None = None,
        limit: int = 50,
    ) -> list[Delivery]:
        clauses, params = self._delivery_filter(project, environment, status, source)
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
            Attempt(
                r["at"], r["url"], r["status_code"], r["duration_ms"], r["error"], r["destination"]
            )
            for r in self.api.store.query(
                "SELECT at, url, status_code, duration_ms, error, destination"
                " FROM webhook_attempts WHERE delivery_id=? ORDER BY id",
                (delivery_id,),
            )
        ]
        destinations = [
            DestinationState(**r)
            for r in self.api.store.query(
                f"SELECT {DESTINATION_COLUMNS} FROM webhook_destinations WHERE delivery_id=?"
                " ORDER BY destination",
                (delivery_id,),
            )
        ]
        body = unseal(self.api.secret_box, delivery_id, bytes(row["body"]), row["sealed"])
        return DeliveryDetail(
            delivery_from_row(row), attempts, json.loads(row["headers"]), body, destinations
        )

    def replay(self, delivery_id: str) -> Delivery:
        """Queue a delivery again (any status, a filtered one too) with a fresh retry
        schedule, to every destination."""
        detail = self.show(delivery_id)
        d = detail.delivery
        if d.pruned_at is not None:
            raise UsageError(
                f"webhook delivery {delivery_id} cannot be replayed: its body was removed "
                "after the retention",
                f"raise retain_days of [environments.{d.environment}.webhooks.{d.source}] "
                f"(or webhook_retain_days of [environments.{d.environment}]) to keep bodies "
                "longer",
            )
        self._requeue([delivery_id])
        self.api.audit.record(
            "webhook.replay",
            project=d.project,
            environment=d.environment,
            target=delivery_id,
            details={"source": d.source, "previous_status": d.status},
        )
        self.notify()
        return self.show(delivery_id).delivery

    def _requeue(self, ids: list[str]) -> None:
        tr = dom.requeue(time.time())
        with self.api.store.transaction():
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                self.api.store.execute(
                    "UPDATE webhook_deliveries SET status=?, tries=?, next_attempt_at=?,"
                    f" last_error=NULL WHERE id IN ({marks}) AND pruned_at IS NULL",
                    (tr.status.value, tr.tries, tr.next_attempt_at, *chunk),
                )
                self.api.store.execute(
                    f"DELETE FROM webhook_destinations WHERE delivery_id IN ({marks})", chunk
                )

    def select(
        self,
        project: str,
        *,
        environment: str | None = None,
        status: str | None = None,
        source: str | None = None,
        event_type: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> list[Delivery]:
        """Deliveries by environment, status, source, event type (a name or a glob such
        as `user.*`) and receipt time (`since` <= received_at < `until`), oldest first."""
        clauses, params = self._delivery_filter(project, environment, status, source)
        if event_type is not None and not any(c in event_type for c in "*?["):
            clauses.append("event_type = ?")
            params.append(event_type)
        if since is not None:
            clauses.append("received_at >= ?")
            params.append(since)
        if until is not None:
            clauses.append("received_at < ?")
            params.append(until)
        rows = self.api.store.query(
            f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE {' AND '.join(clauses)}"
            " ORDER BY received_at, id",
            params,
        )
        out = [delivery_from_row(r) for r in rows]
        if event_type is not None:
            out = [d for d in out if dom.event_selected([event_type], d.event_type)]
        return out[:limit] if limit is not None else out

    def replay_many(
        self, project: str, *, dry_run: bool = False, **filters: Unpack[DeliverySelection]
    ) -> list[Delivery]:
        """Queue again every delivery the filters select (stubs past the retention are
        left out); `dry_run` only lists them. Deliveries still waiting are not touched."""
        if all(v is None for v in filters.values()):
            raise UsageError(
                "replaying every delivery of the project needs a filter",
                "add --env, --status, --source, --event, --since or --until",
            )
        chosen = [
            d
            for d in self.select(project, **filters)
            if d.pruned_at is None and not dom.DeliveryStatus(d.status).waiting
        ]
        if dry_run or not chosen:
            return chosen
        self._requeue([d.id for d in chosen])
        self.api.audit.record(
            "webhook.replay",
            project=project,
            environment=filters.get("environment"),
            target="selection",
            details={
                "count": len(chosen),
                **{k: filters.get(k) for k in ("status", "source", "event_type", "since", "until")},
            },
        )
        self.notify()
        return chosen

    def replay_dead(self, project: str, environment: str) -> list[str]:
        return [d.id for d in self.replay_many(project, environment=environment, status="dead")]

    def _probe_if_paused(
        self, project: str, environment: str, source: str, delivery_id: str
    ) -> None:
        """A test delivery to a source with a paused destination goes out anyway: its 2xx
        resumes the destination."""
        if not any(
            r["source"] == source and r["paused_at"] for r in self.paused(project, environment)
        ):
            return
        self.api.store.execute(
            "UPDATE webhook_deliveries SET probe=1, next_attempt_at=? WHERE id=?"
            " AND status IN ('pending', 'failed')",
            (time.time(), delivery_id),
        )

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
        delivery = answer.get("delivery") if isinstance(answer, dict) else None
        if 200 <= resp.status_code < 300 and isinstance(delivery, str):
            self._probe_if_paused(project, environment, source, delivery)
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
