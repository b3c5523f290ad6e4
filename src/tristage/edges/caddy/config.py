"""Caddy's JSON configuration for the production edge. Pure: settings and a plan in, a dict out.

Caddy terminates TLS and forwards every request to the embedded router, which keeps
routing hosts to deployments and switching aliases without dropping a request. Caddy's
configuration therefore depends only on the public names in `tristage.toml` (which names
redirect, which get HSTS) and on the platform's edge settings; never on deployments, so
a deploy, promote or rollback never reloads Caddy.

- HTTPS: certificates on demand (at the first TLS handshake naming a host) from an ACME
  CA, only for hosts the `ask` endpoint approves (the hosts the router serves); HTTP/1.1
  and HTTP/2; WebSocket upgrades pass through to the router.
- HTTP: `*.localhost` hosts are proxied as they are (local use), every other host is
  redirected to HTTPS with a 308 (ACME HTTP-01 challenges are answered before that).
- A domain that is not its environment's first redirects to the first; production's
  names answer with `Strict-Transport-Security`.
- Forwarding headers: Caddy replaces the client's `X-Forwarded-For/Proto/Host` with its
  own (no trusted proxies in front of it), drops `Forwarded` and `X-Real-IP`, and adds
  `X-Tristage-Edge` with a per-run token, the one thing that makes the router trust the
  forwarding headers of a request (`edges/router/headers.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...domain.edge import LETS_ENCRYPT

EDGE_HEADER = "X-Tristage-Edge"

LOCAL_HOSTS = ["localhost", "*.localhost", "*.*.localhost", "*.*.*.localhost"]
HSTS = "max-age=31536000"
# below the router's idle timeout (30 s), so Caddy never reuses a connection the router
# is closing
UPSTREAM_IDLE = "20s"
UPSTREAM_IDLE_CONNS = 512


@dataclass(frozen=True)
class EdgeSettings:
    """Where Caddy listens, where it forwards, and how it gets certificates."""

    router: tuple[str, int]
    ask_url: str
    token: str
    admin_socket: Path
    storage: Path
    log_file: Path
    http_port: int = 80
    https_port: int = 443
    bind: str = ""  # all addresses
    acme_ca: str = LETS_ENCRYPT
    acme_email: str | None = None
    acme_ca_roots: tuple[Path, ...] = ()  # extra roots to trust the CA's own TLS (tests)


@dataclass(frozen=True)
class EdgePlan:
    """What of the public names the edge itself answers: redirects and HSTS hosts."""

    redirects: Mapping[str, str] = field(default_factory=dict)  # alias -> canonical host
    hsts: frozenset[str] = frozenset()

    @staticmethod
    def of(names: Mapping[str, tuple[tuple[str, ...], bool]]) -> EdgePlan:
        """From each environment's (domains, is production)."""
        redirects: dict[str, str] = {}
        hsts: set[str] = set()
        for domains, production in names.values():
            for alias in domains[1:]:
                redirects[alias] = domains[0]
            if production:
                hsts.update(domains)
        return EdgePlan(redirects, frozenset(hsts))


def _port_suffix(port: int, default: int) -> str:
    return "" if port == default else f":{port}"


def _listen(s: EdgeSettings, port: int) -> list[str]:
    host = f"[{s.bind}]" if ":" in s.bind else s.bind
    return [f"{host}:{port}"]


def _proxy(s: EdgeSettings) -> dict[str, Any]:
    return {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": f"{s.router[0]}:{s.router[1]}"}],
        "headers": {
            "request": {
                "set": {EDGE_HEADER: [s.token]},
                "delete": ["Forwarded", "X-Real-IP", "X-Client-IP", "True-Client-IP"],
            }
        },
        # every keep-alive field: one given resets the others to Go's defaults (2 idle
        # connections per host, which made most proxied requests open a new connection)
        "transport": {
            "protocol": "http",
            "keep_alive": {
                "enabled": True,
                "probe_interval": "30s",
                "idle_timeout": UPSTREAM_IDLE,
                "max_idle_conns_per_host": UPSTREAM_IDLE_CONNS,
            },
        },
        "flush_interval": -1,  # stream responses (server-sent events) as they come
    }


def caddy_config(s: EdgeSettings, plan: EdgePlan) -> dict[str, Any]:
    """The whole configuration, loaded at start and through the admin API."""
    https = _port_suffix(s.https_port, 443)
    routes: list[dict[str, Any]] = []
    if plan.hsts:
        routes.append(
            {
                "match": [{"host": sorted(plan.hsts)}],
                "handle": [
                    {
                        "handler": "headers",
                        "response": {"set": {"Strict-Transport-Security": [HSTS]}},
                    }
                ],
            }
        )
    by_canonical: dict[str, list[str]] = {}
    for alias, canonical in plan.redirects.items():
        by_canonical.setdefault(canonical, []).append(alias)
    for canonical, aliases in sorted(by_canonical.items()):
        routes.append(
            {
                "match": [{"host": sorted(aliases)}],
                "handle": [
                    {
                        "handler": "static_response",
                        "status_code": 308,
                        "headers": {
                            "Location": [f"https://{canonical}{https}{{http.request.uri}}"]
                        },
                    }
                ],
                "terminal": True,
            }
        )
    routes.append({"handle": [_proxy(s)]})
    issuer: dict[str, Any] = {"module": "acme", "ca": s.acme_ca}
    if s.acme_email:
        issuer["email"] = s.acme_email
    if s.acme_ca_roots:
        issuer["trusted_roots_pem_files"] = [str(p) for p in s.acme_ca_roots]
    return {
        "admin": {
            "listen": f"unix/{s.admin_socket}",
            "origins": ["localhost"],
            "config": {"persist": False},
        },
        "logging": {
            "logs": {
                "default": {
                    "level": "WARN",
                    "writer": {"output": "file", "filename": str(s.log_file), "roll": True},
                }
            }
        },
        "storage": {"module": "file_system", "root": str(s.storage)},
        "apps": {
            "http": {
                "http_port": s.http_port,
                "https_port": s.https_port,
                "servers": {
                    "https": {
                        "listen": _listen(s, s.https_port),
                        "routes": routes,
                        "tls_connection_policies": [{}],
                        "automatic_https": {"disable": True},
                        "protocols": ["h1", "h2"],
                    },
                    "http": {
                        "listen": _listen(s, s.http_port),
                        "routes": [
                            {
                                "match": [{"host": LOCAL_HOSTS}],
                                "handle": [_proxy(s)],
                                "terminal": True,
                            },
                            {
                                "handle": [
                                    {
                                        "handler": "static_response",
                                        "status_code": 308,
                                        "headers": {
                                            "Location": [
                                                f"https://{{http.request.host}}{https}"
                                                "{http.request.uri}"
                                            ]
                                        },
                                    }
                                ]
                            },
                        ],
                        "automatic_https": {"disable": True},
                        "protocols": ["h1"],
                    },
                },
            },
            "tls": {
                "automation": {
                    "on_demand": {"ask": s.ask_url},
                    "policies": [{"issuers": [issuer], "on_demand": True}],
                }
            },
        },
    }
