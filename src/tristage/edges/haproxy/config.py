"""HAProxy's configuration for the production edge, and the runtime API commands that
move it from the state it is in to the route table. Pure: settings and tables in, text
and command lists out.

HAProxy terminates TLS and sends each host's requests straight to the web processes of
the deployment it serves, so the configuration written at start never names a
deployment. What changes with the route table changes through the runtime API only:

- a **host map** (`hosts.map`, host -> backend): a host served directly has a backend
  of its own, one of `slots` empty backends declared at start (`be_h0`...); a host
  missing from the map goes to the embedded router (unknown hosts, protected and
  sleeping previews, a route without a running process, `/.tristage/*` on any host);
- **dynamic servers** in those backends (`add server`, `set server ... state
  ready|drain|maint`, `del server`), one per web process, named `DEPLOYMENT_PORT`. A
  switch adds the new deployment's servers, makes them ready, then drains the old ones
  (new requests go to the ready servers, requests in flight finish): never a reload;
- a **redirect map** (alias -> canonical name) and an **HSTS map** (production's names),
  replaced whole (`prepare map` / `commit map`) when the public names change;
- certificates in a crt-list, added with `new ssl cert` / `set ssl cert` / `commit ssl
  cert` / `add ssl crt-list`; `strict-sni` makes a name without one fail the handshake.

Hardening: HAProxy's HTTP parser refuses ambiguous framing (Content-Length with
Transfer-Encoding, bad chunk sizes); on top of it a request must have exactly one Host
and a `Connection` header may not name Host, Content-Length or Transfer-Encoding (400).
The client's `Forwarded`, `X-Real-IP` and every `X-Forwarded-*` are dropped and set
again from what HAProxy saw. Timeouts bound a slow client (http-request, client,
client-fin), a slow app (server), idle keep-alive and tunnels; `maxconn` caps
connections.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ...paths import socket_path
from ..router.routes import Route

HSTS = "max-age=31536000"
SLOTS = 256
MAXCONN = 4096
ROUTER_BACKEND = "be_router"
ACME_BACKEND = "be_acme"
SLOT_PREFIX = "be_h"
CHALLENGE_PATH = "/.well-known/acme-challenge/"
EDGE_HEADER = "X-Tristage-Edge"
# a dynamic server takes none of `default-server`: without a pool of idle connections
# every request would open a new connection to the release
SERVER_OPTIONS = "pool-max-conn -1 pool-purge-delay 5s"


@dataclass(frozen=True)
class HAProxySettings:
    """Where HAProxy listens and where its files are (all in one private directory)."""

    directory: Path
    router: tuple[str, int]
    acme: tuple[str, int]  # the HTTP-01 challenge server
    token: str  # the router trusts forwarding headers that carry it
    http_port: int = 80
    https_port: int = 443
    bind: str = ""  # all addresses
    slots: int = SLOTS
    maxconn: int = MAXCONN
    threads: int = field(default_factory=lambda: edge_threads(os.cpu_count() or 1))

    @property
    def admin_socket(self) -> Path:
        return socket_path(self.directory / "admin.sock")

    @property
    def master_socket(self) -> Path:
        return socket_path(self.directory / "master.sock")

    @property
    def config_file(self) -> Path:
        return self.directory / "haproxy.cfg"

    @property
    def hosts_map(self) -> Path:
        return self.directory / "hosts.map"

    @property
    def redirects_map(self) -> Path:
        return self.directory / "redirects.map"

    @property
    def hsts_map(self) -> Path:
        return self.directory / "hsts.map"

    @property
    def crt_list(self) -> Path:
        return self.directory / "crt-list.txt"

    @property
    def certs(self) -> Path:
        return self.directory / "certs"


def edge_threads(cpus: int) -> int:
    """HAProxy's threads on a machine of `cpus` cores that it shares with the apps it
    serves: half of them. On 2 cores one thread serves more requests than two (measured
    with `bench/frontdoor.py`): two threads contend with the app and each other for
    the same cores and hand connections across threads."""
    return max(1, cpus // 2)


def _addr(bind: str, port: int) -> str:
    host = f"[{bind}]" if ":" in bind else bind
    return f"{host}:{port}"


def _suffix(port: int, default: int) -> str:
    return "" if port == default else f":{port}"


def _request_rules(proto: str) -> list[str]:
    # Each rule runs on every request, so they are the cheap kinds: string and prefix
    # matches (no regular expression) and one pass over the headers per deletion.
    return [
        # one Host, and a Connection header that names no framing header (RFC 9112 3.2;
        # `req.hdr` yields each comma-separated value of every Connection line)
        "http-request deny deny_status 400 unless { req.hdr_cnt(host) eq 1 }",
        "http-request deny deny_status 400 if { req.hdr(connection) -m str -i "
        "host content-length transfer-encoding }",
        "http-request set-var(txn.host) req.hdr(host),host_only,lower",
        # what describes the client comes from HAProxy, never from the client
        # (`set-header` below replaces X-Real-IP and the X-Forwarded-* it sets)
        "http-request del-header forwarded",
        "http-request del-header x-client-ip",
        "http-request del-header true-client-ip",
        "http-request del-header x-forwarded- -m beg",
        f"http-request del-header {EDGE_HEADER}",
        "http-request set-header X-Forwarded-For %[src]",
        "http-request set-header X-Real-IP %[src]",
        f"http-request set-header X-Forwarded-Proto {proto}",
        "http-request set-header X-Forwarded-Host %[req.hdr(host)]",
    ]


def _routing(s: HAProxySettings) -> list[str]:
    return [
        f"use_backend {ROUTER_BACKEND} if {{ path_beg /.tristage/ }}",
        f"use_backend %[var(txn.host),map({s.hosts_map},{ROUTER_BACKEND})]",
    ]


def haproxy_config(s: HAProxySettings) -> str:
    """The whole configuration, written once at start (never reloaded for a switch)."""
    https = _suffix(s.https_port, 443)
    not_local = "!{ var(txn.host) -m str localhost } !{ var(txn.host) -m end .localhost }"
    lines = [
        "global",
        "    master-worker",
        f"    nbthread {s.threads}",
        f"    stats socket {s.admin_socket} mode 600 level admin",
        "    stats timeout 30s",
        f"    maxconn {s.maxconn}",
        "    hard-stop-after 30s",
        "    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets",
        "    tune.ssl.default-dh-param 2048",
        "",
        "defaults",
        "    mode http",
        "    timeout connect 5s",
        "    timeout http-request 10s",
        "    timeout client 30s",
        "    timeout client-fin 10s",
        "    timeout server 60s",
        "    timeout http-keep-alive 30s",
        "    timeout queue 10s",
        "    timeout tunnel 1h",
        "    retries 2",
        "    option redispatch 1",
        "    http-reuse safe",
        "",
        "frontend fe_http",
        f"    bind {_addr(s.bind, s.http_port)}",
        f"    maxconn {s.maxconn}",
        *(f"    {r}" for r in _request_rules("http")),
        # every public name moves to HTTPS; *.localhost stays plain (local use)
        "    http-request redirect code 308 location "
        f"https://%[var(txn.host)]{https}%[capture.req.uri] "
        f"if !{{ path_beg {CHALLENGE_PATH} }} {not_local}",
        f"    use_backend {ACME_BACKEND} if {{ path_beg {CHALLENGE_PATH} }}",
        *(f"    {r}" for r in _routing(s)),
        "",
        "frontend fe_https",
        f"    bind {_addr(s.bind, s.https_port)} ssl crt-list {s.crt_list} strict-sni "
        "alpn h2,http/1.1",
        f"    maxconn {s.maxconn}",
        *(f"    {r}" for r in _request_rules("https")),
        f"    http-request set-var(txn.canonical) var(txn.host),map({s.redirects_map})",
        f"    http-request set-var(txn.hsts) var(txn.host),map({s.hsts_map})",
        "    http-request redirect code 308 location "
        f"https://%[var(txn.canonical)]{https}%[capture.req.uri] "
        "if { var(txn.canonical) -m found }",
        f"    http-after-response set-header Strict-Transport-Security {HSTS} "
        "if { var(txn.hsts) -m found }",
        *(f"    {r}" for r in _routing(s)),
        "",
        f"backend {ROUTER_BACKEND}",
        f"    http-request set-header {EDGE_HEADER} {s.token}",
        f"    server router {s.router[0]}:{s.router[1]}",
        "",
        f"backend {ACME_BACKEND}",
        f"    server acme {s.acme[0]}:{s.acme[1]}",
        "",
    ]
    for i in range(s.slots):
        lines += [
            f"backend {SLOT_PREFIX}{i}",
            "    balance roundrobin",
            # a release that refused the connection: HAProxy's 503 is the router's 502
            "    http-after-response set-status 502 if { status 503 } { srv_name -m found }",
            "",
        ]
    return "\n".join(lines)


# -- the route table in HAProxy's terms --------------------------------------------------


@dataclass(frozen=True)
class Server:
    name: str  # DEPLOYMENT_PORT
    addr: tuple[str, int]


def server_name(deployment: str, addr: tuple[str, int]) -> str:
    return f"{deployment}_{addr[1]}"


def deployment_of(server: str) -> str:
    return server.rsplit("_", 1)[0]


def direct(route: Route) -> bool:
    """Whether HAProxy sends a host's requests straight to its release: a public host
    with running web processes; the router keeps what needs its own features."""
    return (
        route.deployment is not None
        and bool(route.upstreams)
        and route.access is None
        and not route.asleep
    )


def wanted_servers(routes: Mapping[str, Route]) -> dict[str, tuple[Server, ...]]:
    """host -> the servers its backend should have ready (hosts the router keeps are
    absent). Raises on a table that is not host -> Route, before anything is sent."""
    from ..router.routes import normalize_host

    out: dict[str, tuple[Server, ...]] = {}
    for host, route in routes.items():
        h = normalize_host(host)
        if direct(route):
            assert route.deployment is not None
            out[h] = tuple(Server(server_name(route.deployment, a), a) for a in route.upstreams)
    return out


@dataclass
class ServerState:
    addr: tuple[str, int]
    admin: str  # ready | drain | maint
    inflight: int = 0


@dataclass
class Actual:
    """What HAProxy has now (read through the runtime API)."""

    hosts: dict[str, str] = field(default_factory=dict)  # host -> backend
    servers: dict[str, dict[str, ServerState]] = field(default_factory=dict)  # backend ->


@dataclass(frozen=True)
class Step:
    """One runtime API command; `payload` for the ones that take one."""

    command: str
    payload: str | None = None


def switch_steps(
    actual: Actual, wanted: Mapping[str, tuple[Server, ...]], hosts_map: Path, slots: int
) -> tuple[list[list[Step]], list[str]]:
    """The commands that make HAProxy serve `wanted`, one group per host, in an order that
    never leaves a mapped host without a ready server (a group stops at its first
    failure, so a host is mapped only once its servers are ready); and the hosts left to
    the router for want of a free backend."""
    groups: list[list[Step]] = []
    taken = set(actual.hosts.values())
    free = [
        f"{SLOT_PREFIX}{i}"
        for i in range(slots)
        if f"{SLOT_PREFIX}{i}" not in taken and not actual.servers.get(f"{SLOT_PREFIX}{i}")
    ]
    left: list[str] = []
    for host in sorted(wanted):
        steps: list[Step] = []
        backend = actual.hosts.get(host)
        if backend is None:
            if not free:
                left.append(host)
                continue
            backend = free.pop(0)
        have = actual.servers.get(backend, {})
        names = {s.name for s in wanted[host]}
        for s in wanted[host]:
            state = have.get(s.name)
            if state is None:
                steps.append(
                    Step(f"add server {backend}/{s.name} {s.addr[0]}:{s.addr[1]} {SERVER_OPTIONS}")
                )
                steps.append(Step(f"set server {backend}/{s.name} state ready"))
            elif state.admin != "ready":
                steps.append(Step(f"set server {backend}/{s.name} state ready"))
        for name, state in sorted(have.items()):
            if name not in names and state.admin == "ready":
                steps.append(Step(f"set server {backend}/{name} state drain"))
        if host not in actual.hosts:
            steps.append(Step(f"add map {hosts_map} {host} {backend}"))
        if steps:
            groups.append(steps)
    for host, backend in sorted(actual.hosts.items()):
        if host in wanted:
            continue
        steps = [Step(f"del map {hosts_map} {host}")]
        for name, state in sorted(actual.servers.get(backend, {}).items()):
            if state.admin == "ready":
                steps.append(Step(f"set server {backend}/{name} state drain"))
        groups.append(steps)
    return groups, left


def retire_steps(actual: Actual) -> list[tuple[str, str, list[Step]]]:
    """Drained servers with no request in flight: to maintenance, then deleted (a delete
    HAProxy refuses while idle connections remain is tried again later). Backends no
    host maps to count as drained whatever their servers' state."""
    mapped = set(actual.hosts.values())
    out: list[tuple[str, str, list[Step]]] = []
    for backend, servers in sorted(actual.servers.items()):
        for name, state in sorted(servers.items()):
            if state.inflight or (state.admin == "ready" and backend in mapped):
                continue
            steps = (
                [] if state.admin == "maint" else [Step(f"set server {backend}/{name} state maint")]
            )
            steps.append(Step(f"del server {backend}/{name}"))
            out.append((backend, name, steps))
    return out


def map_payload(entries: Iterable[tuple[str, str]]) -> str:
    return "".join(f"{k} {v}\n" for k, v in entries)


def names_maps(redirects: Mapping[str, str], hsts: Iterable[str]) -> tuple[str, str]:
    """The redirect and HSTS maps' contents (files written at start)."""
    return (
        map_payload(sorted(redirects.items())),
        map_payload((h, "1") for h in sorted(set(hsts))),
    )
