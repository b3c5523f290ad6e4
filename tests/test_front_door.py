"""The front door outlives the control plane: the router runs in a process of its own,
supervised by `tristage up`, re-adopted by the next one (real processes, real HTTP)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from test_deploy_helpers import ControlPlane, Load, deployment_id, make_project, push, wait_for

pytestmark = [pytest.mark.timeout(180), pytest.mark.xdist_group("front_door")]


def router_info(home: Path) -> dict[str, int]:
    info: dict[str, int] = json.loads((home / "router" / "router.json").read_text())
    return info


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_kill_9_of_the_control_plane_drops_no_request_and_the_next_one_adopts_the_router(
    repo: Path, cp: ControlPlane
) -> None:
    project = make_project(repo)
    prod = deployment_id(push(project, "main").stderr)
    assert cp.serves("shop.localhost") == prod
    router_pid = router_info(cp.home)["pid"]
    assert router_pid != cp.proc.pid  # type: ignore[union-attr]
    with Load(cp.port, "shop.localhost") as load:
        load.answered(20)
        cp.kill9()
        load.answered(50)  # the router answers on its own, the control plane gone
        cp.start()  # a new control plane adopts the router, it does not start another
        load.answered(50)
    assert load.failures == [], load.failures[:5]
    assert load.seen.get(prod, 0) == load.requests
    assert router_info(cp.home)["pid"] == router_pid
    assert f"router process {router_pid} re-adopted" in cp.output()
    assert cp.serves("shop.localhost") == prod


def test_a_killed_router_is_back_within_a_second_with_the_same_routes(
    repo: Path, cp: ControlPlane
) -> None:
    project = make_project(repo)
    prod = deployment_id(push(project, "main").stderr)
    assert cp.serves("shop.localhost") == prod
    old = router_info(cp.home)["pid"]
    os.kill(old, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: not alive(old) or None, 5, "the router to die")
    # the control plane holds the listening socket: a request made now waits in the
    # backlog for the new router instead of being refused
    assert cp.serves("shop.localhost") == prod
    back = time.monotonic() - killed
    print(f"router back and answering {back * 1000:.0f} ms after kill -9")
    new = wait_for(lambda: router_info(cp.home)["pid"] != old and router_info(cp.home), 5, "")
    assert alive(new["pid"]) and new["port"] == cp.port
    assert back < 1.0 or os.getloadavg()[0] > 4, f"the router took {back:.2f} s to come back"
    assert "starting another" in cp.output()


def test_a_clean_stop_stops_the_router_too(repo: Path, home: Path) -> None:
    plane = ControlPlane(home).start()
    pid = router_info(home)["pid"]
    plane.stop()
    assert not alive(pid) or wait_for(lambda: not alive(pid), 10, "the router to stop")


def test_a_reconcile_that_changes_no_route_sends_the_router_nothing(
    repo: Path, cp: ControlPlane
) -> None:
    # the control plane reconciles every second; only a table that changed is sent
    # (each one is parsed, swapped and written to disk by the router process)
    project = make_project(repo)
    prod = deployment_id(push(project, "main").stderr)
    assert cp.serves("shop.localhost") == prod
    routes = cp.home / "router" / "routes.json"
    wait_for(lambda: prod in routes.read_text() or None, 10, "the router to keep the routes")
    before = routes.stat().st_ino
    time.sleep(3.5)  # three reconciles at least
    assert routes.stat().st_ino == before, "an unchanged table was sent to the router again"
    assert cp.serves("shop.localhost") == prod


def test_a_wait_datagram_is_answered_once_the_next_reconcile_is_done(
    repo: Path, cp: ControlPlane
) -> None:
    # a promote or rollback sends "wait" instead of "wake" and is told when the reconcile
    # that read its switch is over, instead of polling the store at a fixed interval
    import socket

    port = json.loads((cp.home / "controlplane.json").read_text())["control_port"]
    # every time, not only on the control plane's first turn (nothing else answers "wait":
    # a command that is not told falls back to polling the store)
    for i in range(5):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(10)
            s.sendto(b"wait", ("127.0.0.1", port))
            try:
                answer = s.recv(64)
            except TimeoutError:
                raise AssertionError(f"wait {i + 1} was not answered") from None
            assert answer == b"reconciled"
        time.sleep(0.3)
