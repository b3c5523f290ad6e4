"""Header rewriting between client and upstream (pure functions over raw header lists)."""

from __future__ import annotations

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

FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})


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
    headers: Iterable[tuple[bytes, bytes]], client_ip: str, proto: str
) -> RawHeaders:
    """The headers sent upstream: end-to-end ones plus `X-Forwarded-For/Proto/Host`.

    The router is the edge, so forwarded headers coming from the client are
    replaced rather than trusted. `Host` is passed through unchanged.
    """
    out: RawHeaders = []
    host = b""
    for name, value in end_to_end(headers):
        lname = name.lower()
        if lname in FORWARDED:
            continue
        if lname == b"host":
            host = value
        out.append((lname, value))
    out.append((b"x-forwarded-for", client_ip.encode()))
    out.append((b"x-forwarded-proto", proto.encode()))
    if host:
        out.append((b"x-forwarded-host", host))
    return out
