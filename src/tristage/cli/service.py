"""`tristage up`'s front door options, `tristage up --detach`, and `tristage service install`
(a systemd unit that runs `tristage up` at boot)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from ..domain.edge import LETS_ENCRYPT, EdgeOptions, edge_options
from .common import console, get_api

service_app = typer.Typer(help="Run tristage as a service that survives reboots (systemd).")

EDGE_HELP = (
    "Front door: 'router' (the embedded router alone, plain HTTP), 'caddy' (Caddy in front "
    "of it: HTTPS with certificates through ACME, HTTP/2, redirects) or 'haproxy' (HAProxy: "
    "the same, and it sends each host straight to its release, switching through its "
    "runtime API; the fastest; docs/server.md)."
)


def edge_option() -> Any:
    return typer.Option("router", "--edge", envvar="TRISTAGE_EDGE", help=EDGE_HELP)


def http_port_option() -> Any:
    return typer.Option(
        80, "--http-port", envvar="TRISTAGE_HTTP_PORT", help="(--edge caddy|haproxy) The HTTP port."
    )


def https_port_option() -> Any:
    return typer.Option(
        443,
        "--https-port",
        envvar="TRISTAGE_HTTPS_PORT",
        help="(--edge caddy|haproxy) The HTTPS port.",
    )


def edge_bind_option() -> Any:
    return typer.Option(
        "",
        "--edge-bind",
        help="(--edge caddy|haproxy) The address the edge listens on (default: all).",
    )


def acme_ca_option() -> Any:
    return typer.Option(
        LETS_ENCRYPT, "--acme-ca", envvar="TRISTAGE_ACME_CA",
        help="(--edge caddy|haproxy) The ACME directory URL certificates come from "
        "(Let's Encrypt).",
    )  # fmt: skip


def acme_email_option() -> Any:
    return typer.Option(
        None, "--acme-email", envvar="TRISTAGE_ACME_EMAIL",
        help="(--edge caddy|haproxy) The contact address of the ACME account (expiry notices).",
    )  # fmt: skip


def acme_root_option() -> Any:
    return typer.Option(
        [], "--acme-ca-root",
        help="(--edge caddy|haproxy) A PEM file trusted for the ACME server's own TLS "
        "(a private CA).",
    )  # fmt: skip


def caddy_option() -> Any:
    return typer.Option("caddy", "--caddy", help="(--edge caddy) The caddy binary.")


def haproxy_option() -> Any:
    return typer.Option("haproxy", "--haproxy", help="(--edge haproxy) The haproxy binary.")


def build_edge(
    edge: str, port: int, http_port: int, https_port: int, edge_bind: str, acme_ca: str,
    acme_email: str | None, acme_ca_root: list[Path], caddy: str, haproxy: str = "haproxy",
) -> EdgeOptions:  # fmt: skip
    return edge_options(
        edge, http_port, https_port, port, edge_bind, acme_ca, acme_email,
        tuple(p.resolve() for p in acme_ca_root), caddy, haproxy,
    )  # fmt: skip


def up_args(host: str, port: int, options: EdgeOptions) -> list[str]:
    """The arguments of `tristage up` that give these settings (for --detach, the unit)."""
    args = ["--host", host, "--port", str(port)]
    if options.tls:
        args += ["--edge", options.kind, "--http-port", str(options.http_port),
                 "--https-port", str(options.https_port), "--acme-ca", options.acme_ca]  # fmt: skip
        if options.bind:
            args += ["--edge-bind", options.bind]
        if options.acme_email:
            args += ["--acme-email", options.acme_email]
        for root in options.acme_ca_roots:
            args += ["--acme-ca-root", str(root)]
        if options.caddy != "caddy":
            args += ["--caddy", options.caddy]
        if options.haproxy != "haproxy":
            args += ["--haproxy", options.haproxy]
    return args


def detach(host: str, port: int, options: EdgeOptions) -> None:
    pid, log = get_api().detach_control_plane(up_args(host, port, options))
    console.print(
        f"tristage up: running in the background (pid {pid}); log {log}; "
        "'tristage down' stops it",
        markup=False, soft_wrap=True,
    )  # fmt: skip


@service_app.command("install")
def install(
    user: bool = typer.Option(
        None,
        "--user/--system",
        help="A user unit (~/.config/systemd/user; default when not root) or a system one "
        "(/etc/systemd/system; default as root).",
    ),
    unit_path: Path | None = typer.Option(
        None, "--path", help="Write the unit here instead (e.g. to review it first)."
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address the router listens on (the edge is in front)."
    ),
    port: int = typer.Option(8080, "--port", "-p", help="Router port."),
    edge: str = edge_option(),
    http_port: int = http_port_option(),
    https_port: int = https_port_option(),
    edge_bind: str = edge_bind_option(),
    acme_ca: str = acme_ca_option(),
    acme_email: str | None = acme_email_option(),
    acme_ca_root: list[Path] = acme_root_option(),
    caddy: str = caddy_option(),
    haproxy: str = haproxy_option(),
) -> None:
    """Write a systemd unit that runs 'tristage up' with these options at boot and restarts
    it if it exits; prints its path and the command that enables it."""
    options = build_edge(edge, port, http_port, https_port, edge_bind, acme_ca, acme_email,
                         acme_ca_root, caddy, haproxy)  # fmt: skip
    as_user = (os.geteuid() != 0) if user is None else user
    low = options.tls and min(options.http_port, options.https_port) < 1024
    unit = get_api().install_service(
        up_args(host, port, options), user=as_user, path=unit_path, low_ports=low
    )
    console.print(f"wrote {unit.path}", markup=False, soft_wrap=True)
    console.print(f"enable and start it: {unit.enable_command}", markup=False, soft_wrap=True)
    if as_user:
        console.print(
            "keep it running without a login session: loginctl enable-linger $USER",
            markup=False,
        )


def register(app: typer.Typer) -> None:
    app.add_typer(service_app, name="service")
