"""The front door, side by side in one run with the same client (wrk):

    .venv/bin/python bench/frontdoor.py [--seconds 5] [--connections 32] [--rounds 3]
                                        [--nginx-workers auto|N]

- direct: the app itself (uvicorn + httptools, a small response);
- router: the embedded router in front of it (plain HTTP, on uvloop as `routerd` runs it);
- caddy-tls: the production edge, Caddy with tristage's own configuration
  (`edges/caddy/config.py`) terminating TLS in front of the router;
- caddy-tls-app: the same Caddy configuration forwarding straight to the app (no router):
  what Caddy itself costs, the ceiling of caddy-tls with a router as fast as the app;
- nginx: nginx 1.22 in front of the app (plain HTTP, keep-alive upstream);
- nginx-tls: nginx terminating TLS with the same certificate, in front of the app;
- haproxy / haproxy-tls: the production edge of `--edge haproxy`, HAProxy 2.6 with
  tristage's own configuration (`edges/haproxy/config.py`), the app a dynamic server put
  there through the runtime API (`HAProxyEdge.apply`), the certificate loaded with
  `set ssl cert`: plain HTTP and TLS, straight to the app. It runs with one thread per
  two CPUs (`edge_threads`), as `tristage up --edge haproxy` runs it; nginx runs as it
  ships (`worker_processes auto`) unless `--nginx-workers` says otherwise.

Rounds are interleaved (each target once per round); the figures are medians over
rounds, with ratios to direct (and of caddy-tls and haproxy to nginx / nginx-tls). Then
the HTTPS handshake + first byte p50 (a new connection per request: TCP connect, TLS
handshake, request, first response byte) for the TLS rows, with plain connect + first
byte for the router as the baseline. The certificate is a self-made ECDSA P-256 one for
`localhost`, loaded by both (Caddy's on-demand ACME is for real hosts).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _util import free_port, percentile, spawn, wait_port

BODY = b"hello from the app\n"
HOST = "localhost"


async def small_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"19")],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


def serve_app(port: int) -> None:
    import uvicorn

    uvicorn.run(
        small_app,
        host="127.0.0.1",
        port=port,
        http="httptools",
        interface="asgi3",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )


def serve_router(port: int, upstream: int, token: str) -> None:
    from tristage.edges.router import Route, Router, RouteTable

    async def main() -> None:
        table = RouteTable({HOST: Route("bench", "production", "d1", ("127.0.0.1", upstream))})
        router = Router(table)
        router.trust_edge(token)
        await router.start(host="127.0.0.1", port=port)
        await asyncio.Event().wait()

    import uvloop  # the router's own process (routerd) runs on uvloop

    uvloop.run(main())


def serve_haproxy(directory: Path, http: int, https: int, app: int, router: int) -> None:
    """HAProxy as `tristage up --edge haproxy` runs it, serving HOST from the app."""
    import signal

    from tristage.edges.haproxy import HAProxyEdge, HAProxySettings
    from tristage.edges.router import Route

    async def main() -> None:
        s = HAProxySettings(
            directory=directory, router=("127.0.0.1", router), acme=("127.0.0.1", 9),
            token="t" * 48, http_port=http, https_port=https, bind="127.0.0.1", slots=4,
        )  # fmt: skip
        edge = HAProxyEdge(s, binary=shutil.which("haproxy") or "/usr/sbin/haproxy")
        await edge.start({}, ())
        edge.apply({HOST: Route("bench", "production", "d1", ("127.0.0.1", app))})
        pem = (directory.parent / "cert.pem").read_text() + (
            directory.parent / "key.pem"
        ).read_text()
        edge.install_certificate(HOST, pem)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await edge.stop()

    asyncio.run(main())


def make_cert(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(HOST), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            False,
        )
        .sign(key, hashes.SHA256())
    )
    c, k = directory / "cert.pem", directory / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(k, 0o600)
    return c, k


def caddy_json(
    d: Path, router: int, http: int, https: int, token: str, cert: Path, key: Path, name: str
) -> Path:
    from tristage.edges.caddy import EdgePlan, EdgeSettings, caddy_config

    s = EdgeSettings(
        router=("127.0.0.1", router),
        ask_url="http://127.0.0.1:9/ask",
        token=token,
        admin_socket=d / f"{name}-admin.sock",
        storage=d / f"{name}-data",
        log_file=d / f"{name}.log",
        http_port=http,
        https_port=https,
        bind="127.0.0.1",
    )
    config = caddy_config(s, EdgePlan.of({"production": ((HOST,), True)}))
    config["apps"]["tls"]["certificates"] = {
        "load_files": [{"certificate": str(cert), "key": str(key)}]
    }
    path = d / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


NGINX = """
worker_processes {workers};
{user}
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/nginx-body;
    proxy_temp_path {d}/nginx-proxy;
    fastcgi_temp_path {d}/nginx-fcgi;
    uwsgi_temp_path {d}/nginx-uwsgi;
    scgi_temp_path {d}/nginx-scgi;
    upstream app {{ server 127.0.0.1:{app}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{plain};
        listen 127.0.0.1:{tls} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


def wrk(url: str, seconds: float, connections: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            "-H",
            f"Host: {HOST}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out)
        if not m:
            return float("nan")
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    return {"rps": rps, "p50": ms("50%"), "p99": ms("99%"), "errors": errors}


def first_byte_ms(port: int, tls: bool, n: int) -> float:
    """p50 of a new connection per request: connect (+ handshake) + request + first byte."""
    ctx = ssl._create_unverified_context()
    ctx.set_alpn_protocols(["http/1.1"])
    request = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        # as browsers do: without it the request waits for the ACK of the client's
        # Finished (Nagle) and the server delays that ACK (~40 ms)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock: socket.socket = ctx.wrap_socket(raw, server_hostname=HOST) if tls else raw
        with sock:
            sock.sendall(request)
            sock.recv(1)
            times.append((time.perf_counter() - t0) * 1000)
    return percentile(times, 50)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--handshakes", type=int, default=300)
    ap.add_argument(
        "--nginx-workers",
        default="auto",
        help="nginx's worker_processes (default auto: one per CPU, as nginx ships)",
    )
    ap.add_argument("--role", choices=["app", "router", "haproxy"], help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--https", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--upstream", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--token", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "app":
        serve_app(args.port)
        return
    if args.role == "router":
        serve_router(args.port, args.upstream, args.token)
        return
    if args.role == "haproxy":
        serve_haproxy(Path(args.dir), args.port, args.https, args.upstream, int(args.token))
        return
    for tool in ("wrk", "caddy", "nginx", "haproxy"):
        if shutil.which(tool) is None and not (
            tool == "haproxy" and Path("/usr/sbin/haproxy").exists()
        ):
            sys.exit(f"bench/frontdoor.py needs {tool} on PATH")

    me = str(Path(__file__).resolve())
    token = os.urandom(16).hex()
    app, router, c_http, c_https, n_plain, n_tls, a_http, a_https = (free_port() for _ in range(8))
    h_http, h_https = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="tristage-frontdoor-") as tmp:
        d = Path(tmp)
        cert, key = make_cert(d)
        procs = [
            spawn(me, "--role", "app", "--port", str(app)),
            spawn(
                me,
                "--role",
                "router",
                "--port",
                str(router),
                "--upstream",
                str(app),
                "--token",
                token,
            ),
        ]
        caddy_env = {**os.environ, "HOME": tmp, "XDG_DATA_HOME": tmp, "XDG_CONFIG_HOME": tmp}
        for name, upstream, http, https in (
            ("caddy", router, c_http, c_https),
            ("caddy-app", app, a_http, a_https),
        ):
            config = caddy_json(d, upstream, http, https, token, cert, key, name)
            procs.append(
                subprocess.Popen(
                    ["caddy", "run", "--config", str(config)],
                    env=caddy_env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        nginx_conf = d / "nginx.conf"
        nginx_conf.write_text(
            NGINX.format(
                d=d,
                app=app,
                plain=n_plain,
                tls=n_tls,
                cert=cert,
                key=key,
                user="user root;" if os.geteuid() == 0 else "",
                workers=args.nginx_workers,
            )
        )
        procs.append(
            subprocess.Popen(["nginx", "-p", tmp, "-c", str(nginx_conf)], stderr=subprocess.DEVNULL)
        )
        procs.append(haproxy_role(me, d, h_http, h_https, app, router))
        try:
            for port in (app, router, c_https, a_https, n_plain, n_tls, h_http, h_https):
                wait_port("127.0.0.1", port, 20)
            targets = {
                "direct": f"http://127.0.0.1:{app}/",
                "router": f"http://127.0.0.1:{router}/",
                "caddy-tls": f"https://{HOST}:{c_https}/",
                "caddy-tls-app": f"https://{HOST}:{a_https}/",
                "nginx": f"http://127.0.0.1:{n_plain}/",
                "nginx-tls": f"https://{HOST}:{n_tls}/",
                "haproxy": f"http://127.0.0.1:{h_http}/",
                "haproxy-tls": f"https://{HOST}:{h_https}/",
            }
            for url in targets.values():  # warm up (and check each answers)
                wrk(url, 1, 4)
            runs: dict[str, list[dict[str, float]]] = {k: [] for k in targets}
            print(
                f"small response ({len(BODY)} bytes), wrk -t2 -c{args.connections} "
                f"-d{args.seconds:g}s, {args.rounds} interleaved rounds, {os.cpu_count()} CPUs"
            )
            for i in range(args.rounds):
                for name, url in targets.items():
                    r = wrk(url, args.seconds, args.connections)
                    runs[name].append(r)
                    print(
                        f"  round {i + 1} {name:<13} {r['rps']:>9.0f} req/s  p50 {r['p50']:6.2f} ms"
                        f"  p99 {r['p99']:6.2f} ms  errors {r['errors']:.0f}"
                    )
            med = {
                k: {m: statistics.median(r[m] for r in v) for m in ("rps", "p50", "p99")}
                for k, v in runs.items()
            }
            print("-- medians")
            for name, m in med.items():
                print(
                    f"{name:<13} {m['rps']:>9.0f} req/s  p50 {m['p50']:6.2f} ms  "
                    f"p99 {m['p99']:6.2f} ms  {m['rps'] / med['direct']['rps']:.2f}x direct"
                )
            c, a = med["caddy-tls"]["rps"], med["caddy-tls-app"]["rps"]
            print(
                f"caddy-tls / nginx-tls: {c / med['nginx-tls']['rps']:.2f}x;  "
                f"caddy-tls / nginx (plain): {c / med['nginx']['rps']:.2f}x;  "
                f"caddy-tls-app / nginx-tls: {a / med['nginx-tls']['rps']:.2f}x;  "
                f"router / nginx (plain): {med['router']['rps'] / med['nginx']['rps']:.2f}x"
            )
            print(haproxy_ratios(med))
            print(f"-- new connection + first byte, p50 of {args.handshakes}")
            base = first_byte_ms(router, False, args.handshakes)
            print(f"router (plain)   {base:6.2f} ms")
            for name, port in (
                ("caddy-tls", c_https),
                ("caddy-tls-app", a_https),
                ("nginx-tls", n_tls),
                ("haproxy-tls", h_https),
            ):
                v = first_byte_ms(port, True, args.handshakes)
                print(f"{name:<16} {v:6.2f} ms  ({v / base:.1f}x the plain connect)")
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()


def haproxy_role(
    me: str, d: Path, http: int, https: int, app: int, router: int
) -> subprocess.Popen[bytes]:
    directory = d / "haproxy"
    directory.mkdir(mode=0o700)
    return spawn(me, "--role", "haproxy", "--dir", str(directory), "--port", str(http),
                 "--https", str(https), "--upstream", str(app), "--token", str(router))  # fmt: skip


def haproxy_ratios(med: dict[str, dict[str, float]]) -> str:
    """The goals of the production front door: >= 1.0x nginx plain, >= 0.9x nginx TLS."""
    plain = med["haproxy"]["rps"] / med["nginx"]["rps"]
    tls = med["haproxy-tls"]["rps"] / med["nginx-tls"]["rps"]
    return (
        f"haproxy / nginx (plain): {plain:.2f}x (goal >= 1.0);  "
        f"haproxy-tls / nginx-tls: {tls:.2f}x (goal >= 0.9)"
    )


if __name__ == "__main__":
    main()
