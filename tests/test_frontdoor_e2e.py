"""The production front door end to end: `tristage up --edge caddy` with Pebble as the CA,
a real project with public domains, real pushes, promote and rollback under HTTPS load."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from acme_ca import Pebble, https_client, needs_caddy, needs_pebble, peer_certificate
from edge_fixtures import (
    assert_edge_outlives_a_kill9,
    assert_production_over_https,
    assert_start_errors,
    edge_control_plane,
    pebble_fixture,  # noqa: F401  (the fixture `pebble`)
    project_fixture,  # noqa: F401  (the fixture `project`)
    promote_and_roll_back_under_load,
    push_a_branch,
)
from test_deploy_helpers import ControlPlane, deployment_id, push

pytestmark = [pytest.mark.slow, needs_caddy, needs_pebble, pytest.mark.timeout(240)]


@pytest.fixture
def cp(home: Path, pebble: Pebble) -> Iterator[ControlPlane]:
    plane = edge_control_plane(home, pebble, "caddy")
    yield plane
    plane.stop()


def test_production_on_its_domain_over_https_and_promote_rollback_drop_nothing(
    project: Path, cp: ControlPlane, pebble: Pebble
) -> None:
    https, http = cp.https_port, cp.http_port  # type: ignore[attr-defined]
    r = push(project, "main")
    assert r.returncode == 0, r.stderr + cp.output()
    first = deployment_id(r.stderr)
    with https_client(pebble.root_pem, timeout=60) as client:
        assert_production_over_https(client, https, http, first)
        body = client.get(f"https://shop.test:{https}/").json()
        assert {"shop.test", "www.shop.test", "shop.localhost"} <= set(body["hosts"])
        alias = client.get(f"https://www.shop.test:{https}/")
        assert alias.headers["location"] == f"https://shop.test:{https}/"
    assert pebble.issued_by_pebble(peer_certificate(https, "shop.test", pebble.root_pem))
    # local hosts stay on the router as they were
    assert cp.serves("shop.localhost") == first

    # a branch host: its certificate on its first request; an unknown host: none
    preview = push_a_branch(project)
    with https_client(pebble.root_pem, timeout=60) as client:
        body = client.get(f"https://test.preview.shop.test:{https}/").json()
        assert body["deployment"] == preview and body["url"] == "https://staging.shop.test"
        assert client.get(f"https://{preview}.preview.shop.test:{https}/").status_code == 200
        assert client.get(f"https://staging.shop.test:{https}/").json()["deployment"] == preview
    with pytest.raises(ssl.SSLError):
        peer_certificate(https, "nobody.preview.shop.test", pebble.root_pem)

    # promote and rollback, several times, under load through the edge
    _, promoted = promote_and_roll_back_under_load(
        project, cp, https, pebble.root_pem, first, preview
    )
    assert "edge: configuration updated" not in cp.output()  # no Caddy reload on a switch

    # kill -9 of the control plane: Caddy and the router process keep serving production;
    # the next control plane takes both over instead of starting others
    assert_edge_outlives_a_kill9(cp, "caddy", https, pebble.root_pem, promoted)
    assert "re-adopted" in cp.output()


def test_an_edge_that_cannot_start_is_one_clear_error(home: Path) -> None:
    assert "address already in use" in assert_start_errors(home, "caddy")
