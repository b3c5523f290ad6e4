"""The dashboard over real HTTP: sign-in with a token, pages, CSRF-protected forms, and a
rollback from the deployments page carried out by a real control plane."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import git, run_cli
from test_deploy_helpers import ControlPlane, commit, deployment_id, make_project, push
from test_http_api import ApiServer
from tristage.api import Role, Tristage

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server(home: Path, api: Tristage, repo: Path) -> Iterator[ApiServer]:
    api.init_project(repo, name="shop")
    s = ApiServer(home).start()
    yield s
    s.stop()


@pytest.fixture
def tokens(api: Tristage) -> dict[str, str]:
    t = api.tokens
    return {role.value: t.create(f"{role.value}-1", role).token for role in Role}


def browser(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=30, trust_env=False, follow_redirects=False)


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert m, "no CSRF field in the page"
    return m.group(1)


def sign_in(c: httpx.Client, token: str, next_path: str = "/") -> httpx.Response:
    page = c.get("/login", params={"next": next_path})
    assert page.status_code == 200
    return c.post("/login", data={"csrf": csrf_of(page.text), "token": token, "next": next_path})


def test_sign_in_with_a_token_opens_a_strict_session(
    server: ApiServer, tokens: dict[str, str]
) -> None:
    with browser(server.url) as c:
        r = c.get("/projects/shop/deployments")
        assert r.status_code == 303
        assert r.headers["location"] == "/login?next=/projects/shop/deployments"
        page = c.get("/login")
        assert 'type="password"' in page.text
        # a wrong token: 401 and no session
        r = c.post("/login", data={"csrf": csrf_of(page.text), "token": "tst_nope"})
        assert r.status_code == 401 and "not a tristage API token" in r.text
        # no CSRF on the sign-in form: refused
        assert c.post("/login", data={"token": tokens["viewer"]}).status_code == 403
        r = sign_in(c, tokens["viewer"], "//evil.example/")
        assert r.status_code == 303 and r.headers["location"] == "/"  # no open redirect
        cookie = next(h for h in r.headers.get_list("set-cookie") if "tristage_session=" in h)
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert tokens["viewer"] not in cookie
        home_page = c.get("/")
        assert home_page.status_code == 200
        csp = home_page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "viewer-1 (viewer)" in home_page.text
        # signing out ends the session on the server, not just in the browser
        session = c.cookies["tristage_session"]
        r = c.post("/logout", data={"csrf": csrf_of(home_page.text)})
        assert r.status_code == 303
    with browser(server.url) as c:
        c.cookies.set("tristage_session", session)
        assert c.get("/").status_code == 303


def test_pages_render_the_environment_table_and_the_lists(
    server: ApiServer, tokens: dict[str, str], api: Tristage
) -> None:
    api.audit.record("note.test", project="shop", environment="production", target="x")
    with browser(server.url) as c:
        assert sign_in(c, tokens["viewer"]).status_code == 303
        html = c.get("/").text
        for header in ("Environment", "Tier", "Branches", "Live deployment", "URL", "Health",
                       "Requests/min", "Errors"):  # fmt: skip
            assert f"<th>{header}</th>" in html
        rows = re.findall(r'<tr data-environment="([a-z]+)">', html)
        assert rows == ["development", "production", "preview"]
        assert "http://shop.localhost:" in html and "no deployment" in html
        assert "dev, feature/*" in html
        deps = c.get("/projects/shop/deployments")
        assert deps.status_code == 200 and "No deployments yet" in deps.text
        assert "Roll back production" not in deps.text  # a viewer gets no buttons
        assert c.get("/projects/shop/deployments?environment=preview").status_code == 200
        assert c.get("/projects/shop/webhooks").status_code == 200
        backups = c.get("/projects/shop/backups")
        assert backups.status_code == 200 and "No backups yet" in backups.text
        audit = c.get("/audit?project=shop")
        assert audit.status_code == 200 and "note.test" in audit.text
        assert c.get("/projects/shop/deployments/0abcdefg/log").status_code == 404
        assert c.get("/projects/Shop/deployments").status_code == 400
        assert c.get("/static/app.js").status_code == 200
        assert c.get("/static/style.css").headers["content-type"].startswith("text/css")


def test_forms_need_the_csrf_token_and_the_role(
    server: ApiServer, tokens: dict[str, str], api: Tristage
) -> None:
    with browser(server.url) as c:
        sign_in(c, tokens["deployer"])
        page = c.get("/projects/shop/deployments")
        assert 'action="/projects/shop/rollback"' in page.text
        csrf = csrf_of(page.text)
        # no token, a wrong one, another session's, a foreign Origin: all refused
        assert c.post("/projects/shop/rollback", data={}).status_code == 403
        assert c.post("/projects/shop/rollback", data={"csrf": "0" * 64}).status_code == 403
        r = c.post(
            "/projects/shop/rollback",
            data={"csrf": csrf},
            headers={"origin": "http://evil.example"},
        )
        assert r.status_code == 403
        # the right one reaches the rollback (which has nothing to roll back to)
        r = c.post("/projects/shop/rollback", data={"csrf": csrf})
        assert r.status_code == 404 and "no previous production deployment" in r.text
        r = c.post("/projects/shop/rollback", data={"csrf": csrf, "to": "../etc"})
        assert r.status_code == 400 and "not a deployment id" in r.text
    with browser(server.url) as v:
        sign_in(v, tokens["viewer"])
        vcsrf = csrf_of(v.get("/").text)
        assert vcsrf != csrf
        assert v.post("/projects/shop/rollback", data={"csrf": csrf}).status_code == 403
        r = v.post("/projects/shop/rollback", data={"csrf": vcsrf})
        assert r.status_code == 403 and "has role viewer" in r.text
    # unauthenticated POSTs get 401, never a redirect that could be followed
    with browser(server.url) as anon:
        assert anon.post("/projects/shop/rollback", data={"csrf": csrf}).status_code == 401
    # revoking a token ends its dashboard sessions
    with browser(server.url) as again:
        sign_in(again, tokens["admin"])
        api.tokens.revoke("admin-1")
        assert again.get("/").status_code == 303


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_rollback_from_the_dashboard(repo: Path, home: Path) -> None:
    project = make_project(repo)
    cp = ControlPlane(home).start()
    try:
        r = run_cli("open", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        base = json.loads(r.stdout)["url"].rstrip("/")
        r = run_cli("token", "create", "oncall", "--role", "deployer", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        token = json.loads(r.stdout)["token"]
        first = deployment_id(push(project, "main").stderr)
        commit(project, {"note.txt": "v2\n"}, "v2")
        second = deployment_id(push(project, "main").stderr)
        assert cp.serves("shop.localhost") == second
        git(project, "checkout", "-qb", "test")
        commit(project, {"note.txt": "v3\n"}, "v3")
        preview = deployment_id(push(project, "test").stderr)

        with browser(base) as c:
            sign_in(c, token)
            overview = c.get("/").text
            prod_row = overview.split('<tr data-environment="production">')[1].split("</tr>")[0]
            assert second in prod_row and "healthy" in prod_row
            page = c.get("/projects/shop/deployments")
            assert f'action="/projects/shop/deployments/{preview}/promote"' in page.text
            assert f'value="{first}"' in page.text  # "roll back to this" on the older one
            csrf = csrf_of(page.text)
            r = c.post("/projects/shop/rollback", data={})
            assert r.status_code == 403
            assert cp.serves("shop.localhost") == second  # nothing moved
            r = c.post("/projects/shop/rollback", data={"csrf": csrf})
            assert r.status_code == 303, r.text
            assert r.headers["location"].endswith(f"notice=rolled-back&id={first}")
            assert cp.serves("shop.localhost") == first
            shown = c.get(r.headers["location"]).text
            assert f"Rolled production back to {first}." in shown
            log = c.get(f"/projects/shop/deployments/{first}/log")
            assert log.status_code == 200 and "healthy in" in log.text
        events = Tristage(home).audit.events(project="shop", action="deploy.rollback")
        assert events[0].actor == "token:oncall" and events[0].target == first
    finally:
        cp.stop()
