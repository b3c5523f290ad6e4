"""Web replicas behind the embedded router: round-robin over a route's addresses, a
request an address refused (or closed before answering a GET) goes to the next one, a
body that was already sent is never sent twice."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from test_router import run, stack, teardown
from tristage.edges.router import Route
from tristage.edges.router.routes import Balancer
from tristage.edges.runtime import free_port

pytestmark = pytest.mark.timeout(60)


def replicas(*addrs: tuple[str, int]) -> Route:
    return Route("myapp", "production", "dep-a", addrs[0], replicas=addrs[1:])


def test_the_balancer_turns_round_and_puts_a_failed_address_last() -> None:
    a, b, c = ("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)
    bal = Balancer(penalty=60)
    route = replicas(a, b, c)
    firsts = [bal.order(route)[0] for _ in range(6)]
    assert firsts == [a, b, c, a, b, c]
    bal.failed(b)
    assert all(bal.order(route)[-1] == b for _ in range(6))
    assert Balancer().order(Route("p", "e", None, None)) == []


def test_requests_spread_over_replicas_and_survive_one_going_away() -> None:
    async def main() -> None:
        router, table, ups, base = await stack(2)
        a, b = ups
        table.replace({"myapp.localhost": replicas(a.addr, b.addr)})
        try:
            async with httpx.AsyncClient(base_url=base, headers={"Host": "myapp.localhost"},
                                         trust_env=False) as c:  # fmt: skip
                seen = [(await c.get("/")).text for _ in range(10)]
                assert seen.count("A") == 5 and seen.count("B") == 5
                await b.stop()  # its keep-alive connections close, its port refuses
                answers = await asyncio.gather(*(c.get("/") for _ in range(40)))
                assert {r.status_code for r in answers} == {200}
                assert {r.text for r in answers} == {"A"}
                # a body is never sent twice: a POST refused by one address goes to the
                # next (nothing was sent), and the route with only a dead address is a 502
                r = await c.post("/count", content=b"x" * 1000)
                assert r.status_code == 200 and r.json()["bytes"] == 1000
                dead = ("127.0.0.1", free_port())
                table.replace({"myapp.localhost": replicas(dead, ("127.0.0.1", free_port()))})
                assert (await c.get("/")).status_code == 502
            stats: Any = router.stats()["dep-a"]
            assert stats.upstream_errors == 1
        finally:
            await teardown(router, ups)

    run(main())


def test_replicas_travel_to_the_router_process_and_back() -> None:
    from tristage.edges.router.wire import routes_from_json, routes_to_json

    routes = {
        "myapp.localhost": replicas(("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)),
        "preview.myapp.localhost": Route("myapp", "preview", None, None),
    }
    data = routes_to_json(routes)
    assert "replicas" not in data["preview.myapp.localhost"]
    assert routes_from_json(data) == routes
