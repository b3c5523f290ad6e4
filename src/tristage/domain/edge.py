"""The platform's front door settings (`tristage up --edge caddy ...`). Pure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
EDGES = ("router", "caddy", "haproxy")


@dataclass(frozen=True)
class EdgeOptions:
    """`kind`: `router` (the embedded router alone, plain HTTP), `caddy` (Caddy in front
    of it: TLS with certificates through ACME on `https_port`, redirects on `http_port`)
    or `haproxy` (HAProxy terminating TLS and sending each routed host straight to its
    release, the router keeping the hosts that need it; certificates through ACME).
    `acme_ca`: the ACME directory URL; `acme_ca_roots`: PEM files trusted for the CA's own
    TLS (a private or test CA); `bind`: the address Caddy listens on ("" = all)."""

    kind: str = "router"
    http_port: int = 80
    https_port: int = 443
    bind: str = ""
    acme_ca: str = LETS_ENCRYPT
    acme_email: str | None = None
    acme_ca_roots: tuple[Path, ...] = ()
    caddy: str = "caddy"
    haproxy: str = "haproxy"

    @property
    def tls(self) -> bool:
        return self.kind in ("caddy", "haproxy")


def edge_options(
    kind: str,
    http_port: int,
    https_port: int,
    router_port: int,
    bind: str = "",
    acme_ca: str = LETS_ENCRYPT,
    acme_email: str | None = None,
    acme_ca_roots: tuple[Path, ...] = (),
    caddy: str = "caddy",
    haproxy: str = "haproxy",
) -> EdgeOptions:
    """The options of `tristage up`, checked: one UsageError saying what and how to fix."""
    from ..errors import UsageError

    if kind not in EDGES:
        raise UsageError(
            f"--edge {kind!r} is not an edge", f"use one of: {', '.join(EDGES)} (docs/server.md)"
        )
    for flag, port in (("--http-port", http_port), ("--https-port", https_port)):
        if not 0 < port < 65536:
            raise UsageError(f"{flag} {port} is not a port number", "use 1-65535 (80, 443)")
    if kind in ("caddy", "haproxy"):
        used = {router_port: "the router's --port"}
        for flag, port in (("--http-port", http_port), ("--https-port", https_port)):
            if port in used:
                raise UsageError(
                    f"{flag} {port} is also {used[port]}",
                    "give the router, HTTP and HTTPS each their own port",
                )
            used[port] = flag
        if not acme_ca.startswith("https://"):
            raise UsageError(
                f"--acme-ca {acme_ca!r} is not an https:// ACME directory URL",
                f"leave it unset for Let's Encrypt ({LETS_ENCRYPT})",
            )
        if acme_email is not None and "@" not in acme_email:
            raise UsageError(f"--acme-email {acme_email!r} is not an email address", None)
        for root in acme_ca_roots:
            if not root.is_file():
                raise UsageError(
                    f"--acme-ca-root {root}: no such file", "give a PEM file of the CA's root"
                )
    return EdgeOptions(
        kind,
        http_port,
        https_port,
        bind,
        acme_ca,
        acme_email,
        tuple(acme_ca_roots),
        caddy,
        haproxy,
    )
