"""The HAProxy edge's pure half: which hosts HAProxy serves itself, and the runtime API
commands of a switch (their order keeps a ready server behind every mapped host)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tristage.domain.access import Access
from tristage.edges.haproxy.config import (
    Actual,
    HAProxySettings,
    ServerState,
    haproxy_config,
    retire_steps,
    switch_steps,
    wanted_servers,
)
from tristage.edges.router import Route

MAP = Path("/e/hosts.map")


def r(dep: str | None, *ports: int, **kw: object) -> Route:
    ups = tuple(("127.0.0.1", p) for p in ports)
    return Route("shop", "production", dep, ups[0] if ups else None, replicas=ups[1:], **kw)  # type: ignore[arg-type]


def commands(groups: list[list[object]]) -> list[str]:
    return [s.command for g in groups for s in g]  # type: ignore[attr-defined]


def test_the_router_keeps_protected_sleeping_and_idle_hosts() -> None:
    wanted = wanted_servers({
        "Shop.Test:443": r("d1", 4001, 4002),
        "idle.test": r("d2"),
        "locked.test": r("d3", 4003, access=Access("password", "h")),
        "asleep.test": r("d4", 4004, asleep=True),
    })  # fmt: skip
    assert set(wanted) == {"shop.test"}
    assert [s.name for s in wanted["shop.test"]] == ["d1_4001", "d1_4002"]
    with pytest.raises(AttributeError):
        wanted_servers({None: r("d1", 1)})  # type: ignore[dict-item]


def test_a_switch_readies_the_new_servers_before_it_drains_the_old() -> None:
    actual = Actual(
        {"shop.test": "be_h0"},
        {"be_h0": {"d1_4001": ServerState(("127.0.0.1", 4001), "ready")}},
    )
    groups, left = switch_steps(actual, wanted_servers({"shop.test": r("d2", 5001)}), MAP, 4)
    assert left == []
    assert commands(groups) == [
        "add server be_h0/d2_5001 127.0.0.1:5001 pool-max-conn -1 pool-purge-delay 5s",
        "set server be_h0/d2_5001 state ready",
        "set server be_h0/d1_4001 state drain",
    ]
    # a new host: servers first, its map entry last, on a free backend
    groups, _ = switch_steps(Actual(), wanted_servers({"new.test": r("d2", 5001)}), MAP, 4)
    assert commands(groups)[-1] == f"add map {MAP} new.test be_h0"
    # a host that leaves: the router takes it, its servers drain
    groups, _ = switch_steps(actual, {}, MAP, 4)
    assert commands(groups) == [f"del map {MAP} shop.test", "set server be_h0/d1_4001 state drain"]


def test_busy_backends_are_not_reused_and_a_full_pool_leaves_hosts_to_the_router() -> None:
    actual = Actual(
        {"a.test": "be_h0"},
        {"be_h1": {"d0_1": ServerState(("127.0.0.1", 1), "drain", inflight=2)}},
    )
    wanted = wanted_servers({"a.test": r("d1", 4001), "b.test": r("d2", 4002),
                             "c.test": r("d3", 4003)})  # fmt: skip
    groups, left = switch_steps(actual, wanted, MAP, 3)
    assert f"add map {MAP} b.test be_h2" in commands(groups)
    assert left == ["c.test"]


def test_drained_servers_go_once_nothing_is_in_flight() -> None:
    actual = Actual(
        {"a.test": "be_h0"},
        {"be_h0": {
            "d1_1": ServerState(("127.0.0.1", 1), "ready"),
            "d0_2": ServerState(("127.0.0.1", 2), "drain", inflight=1),
            "d0_3": ServerState(("127.0.0.1", 3), "drain"),
            "d0_4": ServerState(("127.0.0.1", 4), "maint"),
        }},
    )  # fmt: skip
    steps = {name: [s.command for s in st] for _, name, st in retire_steps(actual)}
    assert steps == {
        "d0_3": ["set server be_h0/d0_3 state maint", "del server be_h0/d0_3"],
        "d0_4": ["del server be_h0/d0_4"],
    }


def test_the_configuration_routes_everything_unknown_to_the_router(tmp_path: Path) -> None:
    text = haproxy_config(
        HAProxySettings(tmp_path, ("127.0.0.1", 8080), ("127.0.0.1", 9), "tok", slots=2)
    )
    assert f"map({tmp_path}/hosts.map,be_router)" in text
    assert "use_backend be_router if { path_beg /.tristage/ }" in text
    assert "backend be_h1\n" in text and "backend be_h2\n" not in text
    router = text.split("\nbackend be_router\n", 1)[1].split("\nbackend ", 1)[0]
    assert "http-request set-header X-Tristage-Edge tok" in router
    assert "strict-sni" in text and "alpn h2,http/1.1" in text


def test_up_takes_the_haproxy_edge_with_the_shared_edge_options() -> None:
    from tristage.cli.service import up_args
    from tristage.domain.edge import edge_options
    from tristage.errors import UsageError

    o = edge_options("haproxy", 8000, 8443, 8080, haproxy="/opt/haproxy")
    assert o.tls and o.kind == "haproxy"
    args = up_args("127.0.0.1", 8080, o)
    assert args[args.index("--edge") + 1] == "haproxy"
    assert args[args.index("--haproxy") + 1] == "/opt/haproxy"
    with pytest.raises(UsageError, match="--https-port 8080 is also the router's --port"):
        edge_options("haproxy", 8000, 8080, 8080)
    with pytest.raises(UsageError, match="is not an https:// ACME directory URL"):
        edge_options("haproxy", 80, 443, 8080, acme_ca="http://ca.test/dir")


def test_a_certificate_is_renewed_30_days_before_it_expires(tmp_path: Path) -> None:
    import datetime as dt

    from cryptography.x509 import load_pem_x509_certificate

    from acme_ca import self_signed
    from tristage.edges.haproxy import due, expires_at

    cert, _ = self_signed(tmp_path)  # valid 30 days from now
    pem = cert.read_bytes()
    end = load_pem_x509_certificate(pem).not_valid_after_utc
    assert expires_at(pem) == end
    assert due(pem, end - dt.timedelta(days=29))
    assert not due(pem, end - dt.timedelta(days=31))
    assert due(b"not a certificate")


def test_haproxy_takes_half_the_cores_it_shares_with_the_apps(tmp_path: Path) -> None:
    from tristage.edges.haproxy.config import edge_threads

    assert [edge_threads(n) for n in (1, 2, 3, 4, 16)] == [1, 1, 1, 2, 8]
    text = haproxy_config(
        HAProxySettings(tmp_path, ("127.0.0.1", 1), ("127.0.0.1", 2), "t", threads=3)
    )
    assert "\n    nbthread 3\n" in text
