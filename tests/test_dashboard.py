"""The dashboard over real HTTP: sign-in with a token, pages, CSRF-protected forms, and a
rollback from the deployments page carried out by a real control plane."""

from __future__ import annotations

import hashlib
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
from tristage.errors import TristageError

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
        # pipeline order, not the file's (development, production, preview)
        assert rows == ["development", "preview", "production"]
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
            # promote goes through its preflight, which posts the promotion
            assert f'href="/projects/shop/promote?deployment={preview}"' in page.text
            preflight = c.get(f"/projects/shop/promote?deployment={preview}").text
            assert f'action="/projects/shop/deployments/{preview}/promote"' in preflight
            assert "Variables that differ" in preflight
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


# -- the one-time sign-in link ('tristage open') --------------------------------------


def test_a_sign_in_link_opens_one_session_once_and_is_stored_hashed(
    server: ApiServer, api: Tristage, tokens: dict[str, str]
) -> None:
    code = api.tokens.sign_in_link()
    stored = api.store.query("SELECT * FROM api_signin_links")
    assert len(stored) == 1
    assert code not in json.dumps(stored)  # only its sha256
    assert stored[0]["code_sha256"] == hashlib.sha256(code.encode()).hexdigest()
    with browser(server.url) as c:
        sign_in(c, tokens["viewer"])
        earlier = c.cookies["tristage_session"]
        r = c.get("/login/link", params={"code": code})
        assert r.status_code == 303 and r.headers["location"] == "/"
        with pytest.raises(TristageError):
            api.tokens.session(earlier)  # the viewer session this browser had is over
        cookie = next(h for h in r.headers.get_list("set-cookie") if "tristage_session=" in h)
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        page = c.get("/")
        assert page.status_code == 200 and "local-owner (admin)" in page.text
        assert c.get("/tokens").status_code == 200  # the owner is an admin
    with browser(server.url) as again:  # the same link a second time: refused
        r = again.get("/login/link", params={"code": code})
        assert r.status_code == 401 and "used, expired or unknown" in r.text
        assert "tristage open" in r.text and "tristage_session=" not in r.headers.get(
            "set-cookie", ""
        )
        assert again.get("/").status_code == 303
    expired = api.tokens.sign_in_link(ttl=-1.0)
    with browser(server.url) as late:
        assert late.get("/login/link", params={"code": expired}).status_code == 401
        assert late.get("/login/link", params={"code": "x" * 500}).status_code == 401
        assert late.get("/login/link").status_code == 401
    actions = [e.action for e in api.audit.events(action="token.*")]
    assert actions.count("token.sign_in") == 1 and actions.count("token.sign_in_link") == 2


def test_a_sign_in_link_for_an_owner_token_that_is_not_admin_is_refused(api: Tristage) -> None:
    api.tokens.create("local-owner", Role.viewer)
    with pytest.raises(TristageError) as exc:
        api.tokens.sign_in_link()
    assert "not admin" in exc.value.message and "token revoke local-owner" in (exc.value.hint or "")
    api.tokens.revoke("local-owner")
    assert api.tokens.sign_in_link() and api.tokens.get("local-owner").role == Role.admin


def test_open_without_a_control_plane_says_how_to_start_it(home: Path) -> None:
    r = run_cli("open", "--print")
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "control plane is not running" in out and "tristage up" in out


# -- pages that change things ---------------------------------------------------------


def test_variables_set_change_remove_with_rule_findings_next_to_them(
    server: ApiServer, tokens: dict[str, str], api: Tristage
) -> None:
    with browser(server.url) as v:
        sign_in(v, tokens["viewer"])
        page = v.get("/projects/shop/variables?environment=preview")
        assert page.status_code == 200 and "Set a variable" not in page.text
        r = v.post("/projects/shop/variables", data={"csrf": csrf_of(page.text),
                   "environment": "preview", "name": "A", "value": "1"})  # fmt: skip
        assert r.status_code == 403 and "this needs admin" in r.text
    with browser(server.url) as c:
        sign_in(c, tokens["admin"])
        page = c.get("/projects/shop/variables?environment=preview")
        csrf = csrf_of(page.text)
        no_csrf = c.post("/projects/shop/variables", data={"environment": "preview"})
        assert no_csrf.status_code == 403
        r = c.post("/projects/shop/variables", data={
            "csrf": csrf, "environment": "preview", "scope": "environment",
            "name": "STRIPE_SECRET_KEY", "value": "sk_live_abcdef123456",
            "secret": "yes"})  # fmt: skip
        assert r.status_code == 303, r.text
        assert r.headers["location"] == (
            "/projects/shop/variables?environment=preview&notice=var-set&id=STRIPE_SECRET_KEY"
        )
        page = c.get(r.headers["location"])
        row = page.text.split('<tr data-variable="STRIPE_SECRET_KEY"')[1].split("</tr>")[0]
        assert "sk_live_abcdef123456" not in page.text  # masked
        assert "finding-error" in row and "live" in row and "preview" in row
        # a plain value with markup in it is escaped, and changing it keeps the rule running
        r = c.post("/projects/shop/variables", data={
            "csrf": csrf, "environment": "preview", "name": "GREETING",
            "value": "<script>alert(1)</script>", "secret": "no"})  # fmt: skip
        assert r.status_code == 303
        page = c.get(r.headers["location"]).text
        assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)" in page
        r = c.post("/projects/shop/variables", data={
            "csrf": csrf, "environment": "preview", "name": "STRIPE_SECRET_KEY",
            "value": "sk_test_abcdef123456"})  # fmt: skip
        page = c.get(r.headers["location"]).text
        row = page.split('<tr data-variable="STRIPE_SECRET_KEY"')[1].split("</tr>")[0]
        assert "finding-error" not in row
        assert api.variables.get("shop", "STRIPE_SECRET_KEY", "preview").secret
        # a bad name: one clear error on the page, nothing stored
        r = c.post("/projects/shop/variables", data={
            "csrf": csrf, "environment": "preview", "name": "1 BAD", "value": "x"})  # fmt: skip
        assert r.status_code == 400 and "is not a variable name" in r.text
        r = c.post("/projects/shop/variables/GREETING/remove",
                   data={"csrf": csrf, "environment": "preview"})  # fmt: skip
        assert r.status_code == 303 and "notice=var-removed" in r.headers["location"]
        assert "GREETING" not in {e.name for e in api.variables.entries("shop", "preview")}
    events = api.audit.events(project="shop", action="env.*")
    assert {e.actor for e in events} == {"token:admin-1"}


def test_tokens_are_shown_once_and_revoked_by_admins_only(
    server: ApiServer, tokens: dict[str, str], api: Tristage
) -> None:
    with browser(server.url) as d:
        sign_in(d, tokens["deployer"])
        assert d.get("/tokens").status_code == 403
        assert "/tokens" not in d.get("/").text.split("<main>")[0]
    with browser(server.url) as c:
        sign_in(c, tokens["admin"])
        page = c.get("/tokens")
        assert page.status_code == 200 and 'data-token="viewer-1"' in page.text
        csrf = csrf_of(page.text)
        r = c.post("/tokens", data={"csrf": csrf, "name": "ci", "role": "deployer"})
        assert r.status_code == 201
        shown = re.search(r'id="new-token">(tst_[^<]+)<', r.text)
        assert shown and api.tokens.authenticate(shown.group(1)).name == "ci"
        again = c.get("/tokens").text
        assert shown.group(1) not in again and 'data-token="ci"' in again  # once
        r = c.post("/tokens", data={"csrf": csrf, "name": "ci", "role": "viewer"})
        assert r.status_code == 409 and "already exists" in r.text
        r = c.post("/tokens/ci/revoke", data={"csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/tokens?notice=revoked&id=ci"
        assert "ci" not in {t.name for t in api.tokens.list()}


def test_audit_filters_and_pages(server: ApiServer, tokens: dict[str, str], api: Tristage) -> None:
    for i in range(120):
        api.audit.record(f"note.n{i % 3}", project="shop", environment="preview", target=str(i))
    api.audit.record("deploy.promote", project="shop", environment="production", target="p",
                     actor="token:ci")  # fmt: skip
    with browser(server.url) as c:
        sign_in(c, tokens["viewer"])
        first = c.get("/audit").text
        ids = [int(x) for x in re.findall(r'<tr data-event="(\d+)">', first)]
        assert len(ids) == 50 and ids == sorted(ids, reverse=True)
        older = re.search(r'<a href="([^"]+)" rel="next">Older', first)
        assert older
        second = c.get(older.group(1).replace("&amp;", "&")).text
        ids2 = [int(x) for x in re.findall(r'<tr data-event="(\d+)">', second)]
        assert len(ids2) == 50 and max(ids2) < min(ids) and "Newest" in second
        by_actor = c.get("/audit", params={"actor": "token:ci"}).text
        assert by_actor.count("<tr data-event=") == 1 and "deploy.promote" in by_actor
        by_action = c.get("/audit", params={"action": "deploy"}).text  # deploy = deploy.*
        assert by_action.count("<tr data-event=") == 1
        by_env = c.get("/audit", params={"environment": "production", "project": "shop"}).text
        assert by_env.count("<tr data-event=") == 1
        n1 = c.get("/audit", params={"action": "note.n1"}).text
        assert n1.count("<tr data-event=") == 40 and "Older" not in n1
        assert c.get("/audit", params={"environment": "Bad Env"}).status_code == 400
        assert c.get("/audit", params={"before": "²"}).status_code == 400
        weird = c.get("/audit", params={"actor": '"><b>x'}).text
        assert '"><b>x' not in weird and "&#34;&gt;&lt;b&gt;x" in weird


def test_navigation_is_one_line_with_a_project_switcher(
    server: ApiServer, tokens: dict[str, str], api: Tristage, tmp_path: Path
) -> None:
    for i in range(8):
        other = tmp_path / f"app{i}"
        other.mkdir()
        git(other, "init", "-q", "-b", "main")
        api.init_project(other, name=f"app{i}")
    with browser(server.url) as c:
        sign_in(c, tokens["viewer"])
        page = c.get("/projects/shop/deployments").text
        header = page.split("<header>")[1].split("</header>")[0]
        assert header.count("/deployments") == 1  # one project's links, not nine
        assert header.count("<option") == 9 and '<option value="shop" selected>' in header
        r = c.get("/go", params={"project": "app3"})
        assert r.status_code == 303 and r.headers["location"] == "/projects/app3"
        assert c.get("/go", params={"project": "../x"}).status_code == 400
        one = c.get("/projects/app3").text
        assert one.count("<section data-project=") == 1
        assert "flex-wrap: nowrap" in c.get("/static/style.css").text


def test_log_lines_follow_from_a_line_and_lose_terminal_escapes() -> None:
    from tristage.http.dashboard_data import strip_ansi

    assert strip_ansi("\x1b[31mred\x1b[0m \x1b]0;title\x07ok\x1b[2K\r") == "red ok"
    assert strip_ansi("tab\tkept") == "tab\tkept"


def test_a_failed_deployment_shows_its_reason_inline_and_its_log_as_text(
    server: ApiServer, tokens: dict[str, str], api: Tristage, repo: Path
) -> None:
    (repo / "app.py").write_text("print('hi')\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "an app")
    sha = git(repo, "rev-parse", "HEAD")
    git(api.deploys.bare_repo("shop"), "fetch", "-q", str(repo), "main:refs/heads/test")
    api.variables.set("shop", "STRIPE_SECRET_KEY", "sk_live_abcdef123456",
                      environments=["preview"], secret=True)  # fmt: skip
    dep, _ = api.deploys.create("shop", "test", sha, "push", "preview")
    assert dep.status.value == "error" and dep.reason
    log = api.deploys.log_path("shop", dep.id, build=False)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("\x1b[31mfirst\x1b[0m <b>line</b>\nsecond\x1b]0;title\x07\nthird\n")
    with browser(server.url) as c:
        sign_in(c, tokens["viewer"])
        page = c.get("/projects/shop/deployments").text
        row = page.split(f'<tr data-deployment="{dep.id}">')[1].split("</tr>")[0]
        assert '<span class="status status-error">error</span>' in row
        reason = row.split('<div class="reason">')[1].split("</div>")[0]
        assert "live Stripe key" in reason and "sk_live_abcdef123456" not in page
        shown = c.get(f"/projects/shop/deployments/{dep.id}/log?kind=runtime")
        assert shown.status_code == 200
        assert "first &lt;b&gt;line&lt;/b&gt;\nsecond\nthird" in shown.text
        assert "\x1b" not in shown.text and "data-follow=" in shown.text
        follow_from = re.search(r'data-next="(\d+)"', shown.text)
        assert follow_from
        offset = int(follow_from.group(1))
        assert offset == log.stat().st_size
        lines = c.get(f"/projects/shop/deployments/{dep.id}/log/lines?kind=runtime&from=0")
        assert lines.json()["lines"] == ["first <b>line</b>", "second", "third"]
        assert lines.json()["next"] == offset and lines.json()["status"] == "error"
        with log.open("a") as f:
            f.write("\x1b[1mfourth\x1b[0m\nfif")  # a line being written waits for its end
        base = f"/projects/shop/deployments/{dep.id}/log/lines?kind=runtime"
        more = c.get(f"{base}&from={offset}").json()
        assert more["lines"] == ["fourth"]
        with log.open("a") as f:
            f.write("th\n")
        assert c.get(f"{base}&from={more['next']}").json()["lines"] == ["fifth"]
        for bad in ("from=-1", "from=²", "from=1e3", "kind=other&from=0"):
            r = c.get(f"/projects/shop/deployments/{dep.id}/log/lines?kind=runtime&{bad}")
            assert r.status_code == 400


def test_backups_need_their_roles_and_a_restore_the_typed_name(
    server: ApiServer, tokens: dict[str, str], api: Tristage
) -> None:
    url = "/projects/shop/environments/production"
    with browser(server.url) as v:
        sign_in(v, tokens["viewer"])
        page = v.get("/projects/shop/backups").text
        assert "Back up now" not in page
        r = v.post(f"{url}/backup", data={"csrf": csrf_of(page)})
        assert r.status_code == 403 and "this needs deployer" in r.text
    with browser(server.url) as d:
        sign_in(d, tokens["deployer"])
        page = d.get("/projects/shop/backups").text
        csrf = csrf_of(page)
        assert "Back up now" in page and 'name="confirm"' not in page  # no restore form
        r = d.post(f"{url}/backup", data={"csrf": csrf})
        assert r.status_code == 303 and "notice=backed-up" in r.headers["location"]
        backup = r.headers["location"].split("id=")[1]
        assert "taken and verified" in d.get(r.headers["location"]).text
        r = d.post(f"{url}/drill", data={"csrf": csrf})
        assert r.status_code == 200 and "Drill passed" in r.text
        r = d.post(f"{url}/restore", data={"csrf": csrf, "backup": backup, "confirm": "production"})
        assert r.status_code == 403 and "this needs admin" in r.text
    with browser(server.url) as a:
        sign_in(a, tokens["admin"])
        csrf = csrf_of(a.get("/projects/shop/backups").text)
        before = len(api.data.backups("shop", "production"))
        for typed in ("", "preview", "Production"):
            r = a.post(f"{url}/restore", data={"csrf": csrf, "backup": backup, "confirm": typed})
            assert r.status_code == 400 and "not confirmed" in r.text
        assert len(api.data.backups("shop", "production")) == before  # nothing happened
        assert not api.audit.events(project="shop", action="db.restore")
        r = a.post(f"{url}/restore", data={"csrf": csrf, "backup": backup, "confirm": "production"})
        assert r.status_code == 303 and r.headers["location"].endswith(
            f"notice=restored&id={backup}"
        )
        assert api.audit.events(project="shop", action="db.restore")[0].actor == "token:admin-1"


def test_the_preflight_says_what_stops_a_promotion(
    server: ApiServer, tokens: dict[str, str], api: Tristage
) -> None:
    with browser(server.url) as v:
        sign_in(v, tokens["viewer"])
        assert "/promote?from=preview" not in v.get("/projects/shop").text  # viewers: no link
    with browser(server.url) as c:
        sign_in(c, tokens["deployer"])
        assert "/projects/shop/promote?from=preview" in c.get("/projects/shop").text
        page = c.get("/projects/shop/promote?from=preview")
        assert page.status_code == 200
        assert "preview has no live deployment to promote" in page.text
        assert (
            '/promote" class="confirm"' not in page.text
            and "<button" not in page.text.split("<main>")[1]
        )
        assert c.get("/projects/shop/promote?from=production").status_code == 404
        assert c.get("/projects/shop/promote?from=../x").status_code == 400


def test_a_deployment_stays_marked_rolled_back_until_it_is_live_again(
    api: Tristage, repo: Path
) -> None:
    from tristage.http.dashboard_data import rollback_marks

    api.init_project(repo, name="shop")

    def rollback(to: str, left: str, actor: str = "token:oncall") -> None:
        api.audit.record("deploy.rollback", project="shop", environment="production",
                         target=to, details={"from": left}, actor=actor)  # fmt: skip

    rollback("1aaaaaaa", "2bbbbbbb")
    marks = rollback_marks(api, "shop")
    assert set(marks) == {"2bbbbbbb"} and marks["2bbbbbbb"].actor == "token:oncall"
    assert marks["2bbbbbbb"].to == "1aaaaaaa" and not marks["2bbbbbbb"].automatic
    rollback("2bbbbbbb", "1aaaaaaa")  # put back: live again, so no longer marked
    assert set(rollback_marks(api, "shop")) == {"1aaaaaaa"}
    api.audit.record("deploy.promote", project="shop", environment="production",
                     target="1aaaaaaa", details={"from": "3ccccccc"})  # fmt: skip
    rollback("2bbbbbbb", "1aaaaaaa", actor="tristage-monitor")
    marks = rollback_marks(api, "shop")
    assert set(marks) == {"1aaaaaaa"} and marks["1aaaaaaa"].automatic


def test_a_sharing_environment_edits_its_owners_variables(
    server: ApiServer, tokens: dict[str, str], api: Tristage, tmp_path: Path
) -> None:
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    git(tiny, "init", "-q", "-b", "main")
    api.init_project(tiny, preset="simple", name="tiny")
    api.variables.set("tiny", "GREETING", "hi", environments=["development"])
    with browser(server.url) as c:
        sign_in(c, tokens["admin"])
        page = c.get("/projects/tiny/variables?environment=preview").text
        assert "preview shares development's variables" in page
        assert 'id="set-variable"' not in page  # set them on development
        row = page.split('<tr data-variable="GREETING"')[1].split("</tr>")[0]
        assert '<input type="hidden" name="environment" value="development">' in row
        r = c.post("/projects/tiny/variables", data={"csrf": csrf_of(page),
                   "environment": "development", "name": "GREETING", "value": "hello"})  # fmt: skip
        assert r.status_code == 303
        assert api.variables.get("tiny", "GREETING", "preview").value == "hello"
