"""Pebble, Let's Encrypt's ACME test server, on loopback as the CA of the tests; and HTTPS
clients that resolve every name to 127.0.0.1 and trust Pebble's root.

Pebble's own listener gets a self-made certificate (written here); its root and
intermediate are fresh at each start and fetched from its management endpoint.
`PEBBLE_VA_ALWAYS_VALID=1` validates every challenge without connecting anywhere, so no
request leaves the machine.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PEBBLE = shutil.which("pebble")
CADDY = shutil.which("caddy")
needs_pebble = pytest.mark.skipif(
    PEBBLE is None, reason="pebble is not installed (apt-get install pebble)"
)
needs_caddy = pytest.mark.skipif(
    CADDY is None, reason="caddy is not installed (apt-get install caddy)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def self_signed(directory: Path, names: Iterable[str] = ("localhost",)) -> tuple[Path, Path]:
    """A certificate for `names` and 127.0.0.1, signed by its own key: (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tristage tests")])
    now = dt.datetime.now(dt.UTC)
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Pebble:
    """`with Pebble(dir) as ca:` ca.directory_url (for the ACME client), ca.listener_cert
    (to trust Pebble's own TLS), ca.root_pem (the root certificates it issues under)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port, self.management = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.root_pem = ""

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def __enter__(self) -> Pebble:
        assert PEBBLE is not None
        self.listener_cert, key = self_signed(self.dir / "listener")
        config = self.dir / "pebble.json"
        config.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.management}",
            "certificate": str(self.listener_cert), "privateKey": str(key),
            "httpPort": free_port(), "tlsPort": free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
        }}))  # fmt: skip
        env = {**os.environ, "PEBBLE_VA_ALWAYS_VALID": "1", "PEBBLE_VA_NOSLEEP": "1",
               "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "100"}  # fmt: skip
        self.log = self.dir / "pebble.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [PEBBLE, "-config", str(config)], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        ctx = ssl.create_default_context(cafile=str(self.listener_cert))
        deadline = time.monotonic() + 60
        with httpx.Client(verify=ctx, timeout=5, trust_env=False) as client:
            while True:
                try:
                    r = client.get(f"https://127.0.0.1:{self.management}/roots/0")
                    if r.status_code == 200:
                        client.get(self.directory_url).raise_for_status()
                        self.root_pem = r.text
                        break
                except httpx.HTTPError:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"pebble did not start: {self.log.read_text()}")
                time.sleep(0.1)
        (self.dir / "root.pem").write_text(self.root_pem)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)

    def issued_by_pebble(self, cert_der: bytes) -> bool:
        """Whether a leaf certificate chains to this Pebble run (its issuer is Pebble's
        intermediate, named `Pebble Intermediate CA ...`)."""
        cert = x509.load_der_x509_certificate(cert_der)
        issuer = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        return str(issuer).startswith("Pebble Intermediate CA")


class Loopback(httpcore.SyncBackend):
    """Every name resolves to 127.0.0.1 (the TLS server name stays the URL's host)."""

    def connect_tcp(
        self, host: str, port: int, *args: Any, **kwargs: Any
    ) -> httpcore.NetworkStream:
        return super().connect_tcp("127.0.0.1", port, *args, **kwargs)


class AsyncLoopback(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self, host: str, port: int, *args: Any, **kwargs: Any
    ) -> httpcore.AsyncNetworkStream:
        return await self.inner.connect_tcp("127.0.0.1", port, *args, **kwargs)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def trust(root_pem: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cadata=root_pem)
    return ctx


def https_client(root_pem: str, **kwargs: Any) -> httpx.Client:
    """An httpx client resolving every host to loopback and trusting `root_pem` only."""
    ctx = trust(root_pem)
    transport = httpx.HTTPTransport(verify=ctx)
    transport._pool = httpcore.ConnectionPool(ssl_context=ctx, network_backend=Loopback())
    return httpx.Client(transport=transport, verify=ctx, trust_env=False, **kwargs)


def async_https_client(root_pem: str, **kwargs: Any) -> httpx.AsyncClient:
    ctx = trust(root_pem)
    transport = httpx.AsyncHTTPTransport(verify=ctx)
    transport._pool = httpcore.AsyncConnectionPool(ssl_context=ctx, network_backend=AsyncLoopback())
    return httpx.AsyncClient(transport=transport, verify=ctx, trust_env=False, **kwargs)


def peer_certificate(port: int, server_name: str, root_pem: str | None = None) -> bytes:
    """The DER certificate the server on 127.0.0.1:port presents for `server_name`
    (verified against `root_pem` when given); ssl.SSLError when it presents none."""
    ctx = trust(root_pem) if root_pem else ssl._create_unverified_context()
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    with raw, ctx.wrap_socket(raw, server_hostname=server_name) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


def negotiated_protocol(port: int, server_name: str, root_pem: str) -> str | None:
    """The ALPN protocol the server picks when offered h2 and http/1.1."""
    ctx = trust(root_pem)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    with raw, ctx.wrap_socket(raw, server_hostname=server_name) as tls:
        return tls.selected_alpn_protocol()
