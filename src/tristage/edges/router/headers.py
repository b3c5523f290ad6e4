"""Header rewriting between client and upstream (pure functions over raw header lists)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

RawHeaders = list[tuple[bytes, bytes]]

# RFC 9110 section 7.6.1 plus the legacy ones proxies are expected to drop.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Headers that describe the client or the way it reached the edge: a client could forge any
# of them, so the router drops every one it receives and sets its own.
FORWARDED = frozenset({b"forwarded", b"x-real-ip", b"x-client-ip", b"true-client-ip"})
FORWARDED_PREFIX = b"x-forwarded-"

# The header the production edge (Caddy, `edges/caddy`) adds with its per-run token: only
# a request that carries it keeps the edge's X-Forwarded-For/Proto/Host. Never forwarded.
EDGE_HEADER = b"x-tristage-edge"
TRUSTED_FORWARDING = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host")

# What a `Connection` header may never name: removing these as hop-by-hop would change
# how the request is framed or routed once it reaches the app.
PROTECTED = frozenset({b"content-length", b"transfer-encoding", b"host"})


def is_forwarding(lname: bytes) -> bool:
    """`Forwarded`, `X-Real-IP` and friends, `X-Forwarded-*` (lowercase names)."""
    return lname in FORWARDED or lname.startswith(FORWARDED_PREFIX)


def request_problem(
    headers: Iterable[tuple[bytes, bytes]], http_version: str = "1.1"
) -> str | None:
    """Why a request's headers are refused (400), or None.

    An HTTP/1.1 request must name its host exactly once (RFC 9112 3.2): without one it
    could only be routed by the listening address; with two it could be routed by one
    and read by the app by the other. A `Connection` header naming a framing header
    would make a proxy drop it while still sending the body, which the app would then
    read as a second request.
    """
    hosts = 0
    for name, value in headers:
        lname = name.lower()
        if lname == b"host":
            hosts += 1
        elif lname == b"connection":
            for token in value.split(b","):
                t = token.strip().lower()
                if t in PROTECTED:
                    return (
                        f"the Connection header names {t.decode('latin-1')}, "
                        "which is part of how a request is framed and routed"
                    )
    if hosts > 1:
        return "the request has more than one Host header"
    if hosts == 0 and http_version == "1.1":
        return "an HTTP/1.1 request must have a Host header"
    return None


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens


def end_to_end(headers: Iterable[tuple[bytes, bytes]]) -> RawHeaders:
    """Drop hop-by-hop headers, including any the Connection header names."""
    items = list(headers)
    extra = _connection_tokens(items)
    drop = HOP_BY_HOP | extra if extra else HOP_BY_HOP
    return [(n, v) for n, v in items if n.lower() not in drop]


def upstream_request_headers(
    headers: Iterable[tuple[bytes, bytes]],
    client_ip: str,
    proto: str,
    edge_token: bytes | None = None,
) -> RawHeaders:
    """The headers sent upstream: end-to-end ones plus `X-Forwarded-For/Proto/Host`
    and `X-Real-IP`.

    When the router is the edge, forwarding headers coming from the client (`Forwarded`,
    `X-Real-IP`, any `X-Forwarded-*`) are dropped and replaced rather than trusted.
    Behind the production edge (a request with `X-Tristage-Edge` equal to `edge_token`),
    the edge's `X-Forwarded-For` (its last address: the client the edge saw),
    `X-Forwarded-Proto` and `X-Forwarded-Host` are kept instead. `Host` is passed through
    unchanged.
    """
    out: RawHeaders = []
    host = b""
    items = end_to_end(headers)
    trusted: dict[bytes, bytes] = {}
    if edge_token is not None and any(
        n.lower() == EDGE_HEADER and hmac.compare_digest(v.strip(), edge_token) for n, v in items
    ):
        trusted = {n.lower(): v for n, v in items if n.lower() in TRUSTED_FORWARDING}
    for name, value in items:
        lname = name.lower()
        if is_forwarding(lname) or lname == EDGE_HEADER:
            continue
        if lname == b"host":
            host = value
        out.append((lname, value))
    ip = client_ip.encode()
    if b"x-forwarded-for" in trusted:
        ip = trusted[b"x-forwarded-for"].rsplit(b",", 1)[-1].strip() or ip
        proto = trusted.get(b"x-forwarded-proto", proto.encode()).decode("latin-1")
        host = trusted.get(b"x-forwarded-host", host)
    out.append((b"x-forwarded-for", ip))
    out.append((b"x-real-ip", ip))
    out.append((b"x-forwarded-proto", proto.encode()))
    if host:
        out.append((b"x-forwarded-host", host))
    return out
