"""The HTTP API over real HTTP: the ASGI app served by uvicorn on a free loopback port
against a real platform home; promote and rollback through a real control plane."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import git, run_cli
from test_deploy_helpers import (
    ControlPlane,
    commit,
    deployment_id,
    make_project,
    push,
    wait_for,
)
from tristage.api import Role, Tristage
from tristage.http.app import build_app
from tristage.http.ops import OPS
from tristage.up import HttpServer

pytestmark = pytest.mark.timeout(60)

SECRET = "sk_test_51Hq9zXbY7cVtFiVeSeCrEt0000"


class ApiServer:
    """`build_app(home)` served by uvicorn on its own event loop thread."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.loop = asyncio.new_event_loop()
        self.server = HttpServer(build_app(home))
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.port = self.loop.run_until_complete(self.server.start("127.0.0.1", 0))
        self._ready.set()
        self.loop.run_forever()

    def start(self) -> ApiServer:
        self._thread.start()
        assert self._ready.wait(10), "the HTTP server did not start"
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def client(base: str, token: str | None = None) -> httpx.Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=base, headers=headers, timeout=30, trust_env=False)


@pytest.fixture
def shop(api: Tristage, repo: Path) -> str:
    api.init_project(repo, name="shop")
    return "shop"


@pytest.fixture
def server(home: Path, shop: str) -> Iterator[ApiServer]:
    s = ApiServer(home).start()
    yield s
    s.stop()


@pytest.fixture
def tokens(api: Tristage) -> dict[str, str]:
    t = api.tokens
    return {role.value: t.create(f"{role.value}-1", role).token for role in Role}


def _example_path(path: str) -> str:
    values = {
        "project": "shop",
        "environment": "production",
        "deployment": "0abcdefg",
        "delivery": "whd_0123456789abcdef",
        "name": "API_KEY",
        "token": "viewer-1",
    }
    return "/api/v1" + re.sub(r"{(\w+)}", lambda m: values[m.group(1)], path)


def test_health_is_the_only_endpoint_without_a_token(
    server: ApiServer, tokens: dict[str, str]
) -> None:
    with client(server.url) as c:
        r = c.get("/api/v1/health")
        assert r.status_code == 200 and r.json()["ok"] is True
        for op in OPS:
            r = c.request(op.method, _example_path(op.path), json={})
            assert r.status_code == 401, (op.method, op.path, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.json()["error"] == "unauthorized"
        assert c.get("/api/v1/openapi.json").status_code == 401
        # not a token, a wrong secret for a real id, another scheme
        real = tokens["admin"]
        wrong = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
        for header in ("Bearer nonsense", f"Bearer {wrong}", f"Basic {real}"):
            r = c.get("/api/v1/projects", headers={"authorization": header})
            assert r.status_code == 401, header
    with client(server.url, tokens["viewer"]) as c:
        assert c.get("/api/v1/projects").json()[0]["name"] == "shop"
        assert c.get("/api/v1/nothing/here").status_code == 404


def test_a_viewer_cannot_change_anything(server: ApiServer, tokens: dict[str, str]) -> None:
    with client(server.url, tokens["viewer"]) as c:
        for op in OPS:
            if op.role == Role.viewer:
                continue
            r = c.request(op.method, _example_path(op.path), json={})
            assert r.status_code == 403, (op.method, op.path, r.text)
            assert "has role viewer" in r.json()["message"]
        r = c.post("/api/v1/projects/shop/deployments/0abcdefg/promote", json={})
        assert r.status_code == 403
    with client(server.url, tokens["deployer"]) as c:
        # a deployer gets past the role check (and learns the deployment does not exist)
        r = c.post("/api/v1/projects/shop/deployments/0abcdefg/promote", json={})
        assert r.status_code == 404 and "no deployment" in r.json()["message"]
        r = c.put("/api/v1/projects/shop/variables/API_KEY", json={"value": "x", "all": True})
        assert r.status_code == 403  # variables are admin's


def test_user_provided_ids_and_bodies_are_validated(
    server: ApiServer, tokens: dict[str, str]
) -> None:
    with client(server.url, tokens["admin"]) as c:
        for path in (
            "/api/v1/projects/Shop/deployments",
            "/api/v1/projects/shop/deployments/..%2F..%2Fetc",
            "/api/v1/projects/shop/deployments/abcdefgh",  # ids start with a digit
            "/api/v1/projects/shop/deployments?limit=0",
            "/api/v1/projects/shop/deployments?environment=..",
        ):
            r = c.get(path)
            assert r.status_code in (400, 404), path
            assert r.json()["error"] in ("bad_request", "not_found"), path
        assert c.get("/api/v1/projects/nope/deployments").status_code == 404
        r = c.post("/api/v1/projects/shop/rollback", json={"wait": "soon", "extra": 1})
        assert r.status_code == 422
        problems = {p["at"] for p in r.json()["problems"]}
        assert problems == {"wait", "extra"}
        r = c.post("/api/v1/projects/shop/rollback", json={"to": "../x"})
        assert r.status_code == 422 and [p["at"] for p in r.json()["problems"]] == ["to"]
        r = c.put("/api/v1/projects/shop/variables/API_KEY", json={"value": "v"})
        assert r.status_code == 400 and "hint" in r.json()
        big = c.put("/api/v1/projects/shop/variables/API_KEY", content=b"x" * 1_100_000)
        assert big.status_code == 400 and "too large" in big.json()["message"]


def test_variables_are_listed_masked_and_changes_name_the_token(
    server: ApiServer, tokens: dict[str, str], api: Tristage, home: Path
) -> None:
    api.variables.set("shop", "STRIPE_SECRET_KEY", SECRET, environments=["development"])
    api.variables.set("shop", "PUBLIC_URL", "https://dev.example", environments=["development"])
    with client(server.url, tokens["viewer"]) as c:
        r = c.get("/api/v1/projects/shop/variables")
        assert r.status_code == 200
        assert SECRET not in r.text
        rows = {v["name"]: v for v in r.json()}
        assert rows["STRIPE_SECRET_KEY"]["value"] == "****"
        assert rows["STRIPE_SECRET_KEY"]["secret"] is True
        assert rows["PUBLIC_URL"]["value"] == "https://dev.example"
    with client(server.url, tokens["admin"]) as c:
        new_secret = "sk_test_" + "Q" * 30
        r = c.put(
            "/api/v1/projects/shop/variables/WEBHOOK_SECRET",
            json={"value": new_secret, "environments": ["preview"], "secret": True},
        )
        assert r.status_code == 200, r.text
        assert r.json() == [
            {"name": "WEBHOOK_SECRET", "where": "preview", "change": "added", "secret": True,
             "build": False, "findings": [], "redeploys": []}
        ]  # fmt: skip
        assert new_secret not in r.text
        # the rules run on the new value: a finding comes back; strict refuses it (422)
        live = {"value": "sk_live_" + "Q" * 30, "environments": ["preview"], "secret": True}
        r = c.put("/api/v1/projects/shop/variables/STRIPE_SECRET_KEY", json=live)
        assert r.status_code == 200, r.text
        assert [f["rule"] for f in r.json()[0]["findings"]] == ["stripe.live-outside-production"]
        r = c.put("/api/v1/projects/shop/variables/STRIPE_SECRET_KEY",
                  json={**live, "value": "sk_live_" + "R" * 30, "strict": True})  # fmt: skip
        assert r.status_code == 422 and r.json()["error"] == "refused", r.text
        assert "R" * 30 not in r.text
        listed = c.get("/api/v1/projects/shop/variables", params={"environment": "preview"})
        assert listed.json()[0]["value"] == "****"
        r = c.delete(
            "/api/v1/projects/shop/variables/WEBHOOK_SECRET", params={"environment": "preview"}
        )
        assert r.status_code == 200 and r.json()["removed_from"] == ["preview"]
        audit = c.get("/api/v1/audit", params={"project": "shop", "action": "env.*"}).json()
    by_action = {(e["action"], e["target"]): e for e in audit}
    assert by_action[("env.set", "WEBHOOK_SECRET")]["actor"] == "token:admin-1"
    assert by_action[("env.rm", "WEBHOOK_SECRET")]["actor"] == "token:admin-1"
    assert new_secret not in json.dumps(audit)


def test_tokens_are_stored_hashed_shown_once_and_revocable(
    server: ApiServer, tokens: dict[str, str], home: Path
) -> None:
    with client(server.url, tokens["admin"]) as c:
        r = c.post("/api/v1/tokens", json={"name": "ci", "role": "deployer"})
        assert r.status_code == 201, r.text
        ci = r.json()["token"]
        assert re.fullmatch(r"tst_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", ci)
        listed = c.get("/api/v1/tokens")
        assert {t["name"]: t["role"] for t in listed.json()}["ci"] == "deployer"
        assert ci not in listed.text and "sha256" not in listed.text
        assert c.post("/api/v1/tokens", json={"name": "ci", "role": "viewer"}).status_code == 409
        bad = c.post("/api/v1/tokens", json={"name": "Bad Name", "role": "root"})
        assert bad.status_code == 422
    with client(server.url, ci) as c:
        me = c.get("/api/v1/whoami").json()
        assert (
            me["name"] == "ci"
            and me["role"] == "deployer"
            and me["created_by"] == ("token:admin-1")
        )
    # the state store holds only hashes: no token secret anywhere in its files
    db = sqlite3.connect(home / "state.db")
    db.execute("PRAGMA wal_checkpoint(FULL)")
    db.close()
    raw = b"".join(p.read_bytes() for p in home.glob("state.db*"))
    for token in [ci, *tokens.values()]:
        assert token.split("_", 2)[2].encode() not in raw
    with client(server.url, tokens["admin"]) as c:
        assert c.delete("/api/v1/tokens/ci").status_code == 200
        assert c.delete("/api/v1/tokens/ci").status_code == 404
        actions = [e["action"] for e in c.get("/api/v1/audit", params={"action": "token.*"}).json()]
        assert actions[:2] == ["token.revoke", "token.create"]
    with client(server.url, ci) as c:
        assert c.get("/api/v1/whoami").status_code == 401


def test_openapi_document_describes_every_operation(
    server: ApiServer, tokens: dict[str, str]
) -> None:
    with client(server.url, tokens["viewer"]) as c:
        r = c.get("/api/v1/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for op in OPS:
        entry = doc["paths"]["/api/v1" + op.path][op.method.lower()]
        assert entry["operationId"] == op.name
        assert entry["x-tristage-role"] == op.role.value
        assert str(op.status) in entry["responses"] and "401" in entry["responses"]
        if op.body is not None:
            assert "requestBody" in entry
    assert doc["paths"]["/api/v1/health"]["get"]["security"] == []
    refs = set(re.findall(r'"\$ref": "#/components/schemas/(\w+)"', json.dumps(doc)))
    assert refs and refs <= set(doc["components"]["schemas"])
    promote = doc["paths"]["/api/v1/projects/{project}/deployments/{deployment}/promote"]["post"]
    dep_param = next(p for p in promote["parameters"] if p["name"] == "deployment")
    assert dep_param["in"] == "path" and dep_param["schema"]["pattern"].startswith("^")


def test_token_commands(home: Path) -> None:
    r = run_cli("token", "create", "ops", "--role", "admin", "--json")
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)
    assert created["role"] == "admin" and created["token"].startswith("tst_")
    r = run_cli("token", "create", "ops")
    assert r.returncode == 1 and "already exists" in r.stderr
    r = run_cli("token", "create", "x", "--role", "root")
    assert r.returncode == 2
    r = run_cli("token", "create", "Not Valid")
    assert r.returncode == 2 and "not a token name" in r.stderr
    r = run_cli("token", "create", "reader")
    assert r.returncode == 0 and r.stdout.strip().startswith("tst_")
    assert "not shown again" in r.stderr
    listed = json.loads(run_cli("token", "ls", "--json").stdout)
    assert [(t["name"], t["role"]) for t in listed] == [("ops", "admin"), ("reader", "viewer")]
    assert created["token"] not in run_cli("token", "ls").stdout
    assert run_cli("token", "revoke", "reader").returncode == 0
    assert run_cli("token", "revoke", "reader").returncode == 1
    r = run_cli("open")
    assert r.returncode == 1 and "tristage up" in r.stderr


# ---------------------------------------------------------------------------
# Promote and rollback through the API, carried out by a real control plane.


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_deployer_promotes_and_rolls_back_through_the_api(repo: Path, home: Path) -> None:
    project = make_project(repo)
    cp = ControlPlane(home).start()
    try:
        info = json.loads((home / "controlplane.json").read_text())
        base = f"http://127.0.0.1:{info['dashboard_port']}"
        r = run_cli("open", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["url"] == base + "/"
        deployer = json.loads(run_cli("token", "create", "release-bot", "--role", "deployer",
                                      "--json").stdout)["token"]  # fmt: skip
        viewer = json.loads(run_cli("token", "create", "watcher", "--json").stdout)["token"]

        first = deployment_id(push(project, "main").stderr)
        git(project, "checkout", "-qb", "test")
        commit(project, {"note.txt": "v2\n"}, "v2")
        preview = deployment_id(push(project, "test").stderr)
        for _ in range(5):
            assert cp.get("shop.localhost").status_code == 200

        with client(base, viewer) as c:
            assert c.post(f"/api/v1/projects/shop/deployments/{preview}/promote").status_code == 403
            envs = {e["environment"]: e for e in c.get("/api/v1/projects/shop/environments").json()}
        assert envs["production"]["deployment"] == first
        assert envs["production"]["health"] == "healthy"
        assert envs["production"]["traffic"]["requests"] >= 5
        assert envs["preview"]["deployment"] == preview
        assert envs["development"]["traffic"] is None

        with client(base, deployer) as c:
            r = c.post(f"/api/v1/projects/shop/deployments/{preview}/promote", json={"wait": 30})
            assert r.status_code == 200, r.text
            body = r.json()
            promoted = body["deployment"]["id"]
            assert body["routed"] is True and body["environment"] == "production"
            assert body["deployment"]["live"] is True
            assert cp.serves("shop.localhost") == promoted

            r = c.post("/api/v1/projects/shop/rollback", json={})
            assert r.status_code == 200, r.text
            assert r.json()["deployment"]["id"] == first and r.json()["routed"] is True
            assert cp.serves("shop.localhost") == first

            log = c.get(f"/api/v1/projects/shop/deployments/{first}/log").json()
            assert any("healthy in" in line for line in log["lines"])
            listed = c.get("/api/v1/projects/shop/deployments",
                           params={"environment": "production"}).json()  # fmt: skip
            assert {d["id"]: d["live"] for d in listed}[first] is True
            audit = c.get("/api/v1/audit", params={"project": "shop"}).json()
        actors = {(e["action"], e["target"]): e["actor"] for e in audit}
        assert actors[("deploy.promote", promoted)] == "token:release-bot"
        assert actors[("deploy.rollback", first)] == "token:release-bot"
        wait_for(lambda: "dashboard and HTTP API on" in cp.output(), 5, "the log line")
    finally:
        cp.stop()
    assert not (home / "controlplane.json").exists()
