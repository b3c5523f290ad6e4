"""The OpenAPI document matches what the server does: schemathesis, over real HTTP.

Every check runs but one: `positive_data_acceptance` (a request valid by the schema gets a
2xx) does not hold for rules OpenAPI parameters cannot state: one of `environment` or `all`,
a typed confirmation for a production restore, ids that must exist. Those answer 400/404
with a message that says what to send instead, as tests elsewhere check.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_http_api import ApiServer
from tristage.api import Role, Tristage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


@pytest.fixture
def served(api: Tristage, repo: Path, home: Path) -> Iterator[tuple[ApiServer, str]]:
    api.init_project(repo, name="shop")
    token = api.tokens.create("schema-admin", Role.admin).token
    server = ApiServer(home).start()
    yield server, token
    server.stop()


def test_the_server_does_what_its_openapi_document_says(served: tuple[ApiServer, str]) -> None:
    server, token = served
    st = Path(sys.executable).with_name("schemathesis")
    r = subprocess.run(
        [str(st), "run", f"{server.url}/api/v1/openapi.json",
         "-H", f"Authorization: Bearer {token}",
         "--checks", "all", "--exclude-checks", "positive_data_acceptance",
         "--max-examples", "10", "--seed", "7", "--no-color"],
        capture_output=True, text=True, timeout=360,
    )  # fmt: skip
    summary = r.stdout[r.stdout.find("FAILURES") :][:6000]
    assert r.returncode == 0, summary or r.stdout[-3000:] + r.stderr[-2000:]
    assert "Tested: " in r.stdout, r.stdout[-2000:]


def test_another_method_on_a_known_path_is_405_with_every_method_in_allow(
    served: tuple[ApiServer, str],
) -> None:
    import httpx

    server, token = served
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {token}"},
                      trust_env=False) as c:  # fmt: skip
        r = c.request("OPTIONS", "/api/v1/projects/shop/variables/A")
        assert r.status_code == 405 and r.headers["allow"] == "DELETE, PUT"
        assert r.json()["error"] == "method_not_allowed"
        r = c.put("/api/v1/health")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
        assert c.get("/api/v1/nothing-here").status_code == 404
        # a Unicode digit is not a number; an empty value is not a valid one
        for query in ("limit=²", "limit=", "environment="):
            r = c.get(f"/api/v1/projects/shop/deployments?{query}")
            assert r.status_code == 400 and r.json()["error"] == "bad_request", (query, r.text)
        r = c.post("/api/v1/projects/shop/rollback", json=[None])
        assert r.status_code == 422 and r.json()["problems"][0]["at"] == ""
