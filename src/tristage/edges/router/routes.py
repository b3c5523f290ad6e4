"""The routing table: which host goes to which deployment, swapped atomically."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

Address = tuple[str, int]


@dataclass(frozen=True)
class Route:
    """Where a host's requests go.

    `upstream` is the loopback address of the running release; None means the
    environment has nothing running (the router answers 503). `request_timeout` is how
    long the release may take to start answering a request (seconds, from the request's
    arrival to the response headers) before the router answers 504; None means the
    router's default. `replicas` are further addresses of the same deployment (its
    other web processes): requests go round-robin over all of them (`Balancer`).
    """

    project: str
    environment: str
    deployment: str | None
    upstream: tuple[str, int] | None
    request_timeout: float | None = None
    replicas: tuple[Address, ...] = ()

    @property
    def upstreams(self) -> tuple[Address, ...]:
        return (self.upstream, *self.replicas) if self.upstream is not None else ()


class Balancer:
    """Round-robin over a route's addresses; one that just failed (refused a connection,
    closed it without answering) goes last for `penalty` seconds."""

    def __init__(self, penalty: float = 2.0) -> None:
        self.penalty = penalty
        self._turn = itertools.count()
        self._failed: dict[Address, float] = {}

    def order(self, route: Route) -> list[Address]:
        """The addresses to try for one request, best first."""
        ups = route.upstreams
        if len(ups) <= 1:
            return list(ups)
        start = next(self._turn) % len(ups)
        turn = [*ups[start:], *ups[:start]]
        if not self._failed:
            return turn
        now = time.monotonic()
        for addr, until in list(self._failed.items()):
            if until <= now:
                del self._failed[addr]
        return sorted(turn, key=lambda a: a in self._failed)  # stable: the turn otherwise

    def failed(self, addr: Address) -> None:
        self._failed[addr] = time.monotonic() + self.penalty


def normalize_host(host: str) -> str:
    """`MyApp.localhost:8080` -> `myapp.localhost`; IPv6 literals keep their brackets."""
    h = host.strip().lower()
    if h.startswith("["):
        end = h.find("]")
        return h[: end + 1] if end != -1 else h
    colon = h.rfind(":")
    if colon != -1:
        h = h[:colon]
    return h.rstrip(".")


class RouteTable:
    """Host -> Route. `replace` swaps the whole table in one reference assignment,
    so a request sees either the old table or the new one, never a mix."""

    def __init__(self, routes: Mapping[str, Route] | None = None) -> None:
        self._routes: Mapping[str, Route] = MappingProxyType({})
        self._listeners: list[Callable[[Mapping[str, Route]], None]] = []
        if routes:
            self.replace(routes)

    def replace(self, routes: Mapping[str, Route]) -> None:
        table = {normalize_host(host): route for host, route in routes.items()}
        self._routes = MappingProxyType(table)
        for listener in self._listeners:
            listener(self._routes)

    def on_replace(self, listener: Callable[[Mapping[str, Route]], None]) -> None:
        """Call `listener(table)` after every `replace` (a router in another process
        is sent the new table this way)."""
        self._listeners.append(listener)

    def lookup(self, host: str) -> Route | None:
        return self._routes.get(normalize_host(host))

    def snapshot(self) -> Mapping[str, Route]:
        """The current table (read-only)."""
        return self._routes

    def __len__(self) -> int:
        return len(self._routes)
